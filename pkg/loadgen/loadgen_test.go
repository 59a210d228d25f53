package loadgen

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/model/labels"
)

// receiver is a remote-write endpoint for tests: it decodes every request with Prometheus's decoder, checks it
// (see decode), and remembers every sample of the requests it acknowledged.
type receiver struct {
	t        testing.TB
	protocol Protocol
	tenant   string
	// status answers the n-th request (from 0); nil acknowledges everything.
	status func(n int) int

	mu            sync.Mutex
	requests      int
	ackedSamples  int64
	failedByCode  map[int]int64 // requests
	failedSamples map[int]int64
	samples       map[string][]decodedSample // by series
	labelsPerSize map[int]int                // series count by number of labels
}

func newReceiver(t testing.TB, p Protocol, tenant string, status func(n int) int) *receiver {
	return &receiver{t: t, protocol: p, tenant: tenant, status: status, failedByCode: map[int]int64{}, failedSamples: map[int]int64{},
		samples: map[string][]decodedSample{}, labelsPerSize: map[int]int{}}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := rc.t
	wantType, wantVersion := contentTypeV1, versionV1
	if rc.protocol == ProtocolV2 {
		wantType, wantVersion = contentTypeV2, versionV2
	}
	for h, want := range map[string]string{"Content-Encoding": "snappy", "Content-Type": wantType,
		"X-Prometheus-Remote-Write-Version": wantVersion, "User-Agent": userAgent, "X-Scope-OrgID": rc.tenant} {
		if got := r.Header.Get(h); got != want {
			t.Errorf("header %s: got %q, want %q", h, got, want)
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Errorf("read body: %v", err)
		return
	}
	// decode checks with testutil, which calls FailNow: not allowed off the test goroutine. So check here.
	series := decode(&nonFatal{TB: t}, rc.protocol, body)

	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := rc.requests
	rc.requests++
	status := http.StatusNoContent
	if rc.status != nil {
		status = rc.status(n)
	}
	if status/100 != 2 {
		rc.failedByCode[status]++
		rc.failedSamples[status] += int64(len(series))
		http.Error(w, "test says no to request "+http.StatusText(status), status)
		return
	}
	rc.ackedSamples += int64(len(series))
	for _, s := range series {
		key := s.labels.String()
		rc.samples[key] = append(rc.samples[key], s)
		rc.labelsPerSize[s.labels.Len()]++
	}
	w.WriteHeader(status)
}

// nonFatal turns FailNow into a failure that lets the handler return, for checks on a server goroutine.
type nonFatal struct{ testing.TB }

func (n *nonFatal) FailNow() { n.Fail() }

func (n *nonFatal) Fatal(args ...any) { n.Error(args...) }

func (n *nonFatal) Fatalf(format string, args ...any) { n.Errorf(format, args...) }

func testConfig(url string, p Protocol) Config {
	cfg := DefaultConfig()
	cfg.URL = url
	cfg.Protocol = p
	cfg.Series = 1000
	cfg.LabelsPerSeries = 12
	cfg.SeriesPerRequest = 150
	cfg.Concurrency = 3
	cfg.Duration = 300 * time.Millisecond
	cfg.RequestTimeout = 10 * time.Second
	return cfg
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name     string
		protocol Protocol
		status   func(n int) int
	}{
		{name: "v1 all acknowledged", protocol: ProtocolV1},
		{name: "v2 all acknowledged", protocol: ProtocolV2},
		{name: "v1 every third request fails", protocol: ProtocolV1, status: func(n int) int {
			return []int{http.StatusOK, http.StatusServiceUnavailable, http.StatusNoContent}[n%3]
		}},
		{name: "v2 rate limited", protocol: ProtocolV2, status: func(n int) int {
			if n%4 == 0 {
				return http.StatusTooManyRequests
			}
			return http.StatusOK
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, tc.protocol, "team-a", tc.status)
			srv := httptest.NewServer(rc)
			defer srv.Close()
			cfg := testConfig(srv.URL+"/api/v1/push", tc.protocol)
			cfg.Tenant = "team-a"
			g, err := New(cfg)
			testutil.Ok(t, err)

			before := time.Now()
			res := g.Run(context.Background())
			after := time.Now()

			// Duration respected: no request starts after it, the ones in flight then end quickly here.
			testutil.Equals(t, StopDuration, res.StopReason)
			testutil.Assert(t, res.ElapsedSeconds >= cfg.Duration.Seconds(), "elapsed %vs", res.ElapsedSeconds)
			testutil.Assert(t, after.Sub(before) < cfg.Duration+5*time.Second, "ran %v", after.Sub(before))

			rc.mu.Lock()
			defer rc.mu.Unlock()
			// Counting matches what the server saw.
			wantFailed := map[string]int64{}
			var failedSamples int64
			for code, n := range rc.failedByCode {
				wantFailed[strconv.Itoa(code)] = n
				failedSamples += rc.failedSamples[code]
			}
			testutil.Equals(t, wantFailed, res.RequestsFailed)
			testutil.Equals(t, rc.ackedSamples, res.SamplesAcked)
			testutil.Equals(t, failedSamples, res.SamplesFailed)
			testutil.Equals(t, int64(rc.requests), res.RequestsOK+res.RequestsFailedTotal)
			testutil.Equals(t, res.SamplesAcked+res.SamplesFailed, int64(res.Rounds*float64(cfg.Series)+0.5))
			testutil.Assert(t, res.SamplesPerSecond > 0 && res.Latency.Max > 0, "rates: %+v", res)
			testutil.Assert(t, res.BytesSent > 0 && res.RawBytesSent > res.BytesSent, "bytes: %+v", res)
			// Back to back rounds: several in 300ms.
			testutil.Assert(t, res.Rounds >= 3, "only %v rounds", res.Rounds)
			if tc.status == nil {
				testutil.Equals(t, cfg.Series, len(rc.samples))
			} else {
				testutil.Assert(t, len(rc.failedByCode) > 0, "no request failed")
			}
			for key := range wantFailed {
				testutil.Assert(t, strings.Contains(res.FailureMessages[key], "test says no"),
					"message for %s: %q", key, res.FailureMessages[key])
			}
			testutil.Equals(t, map[int]int{cfg.LabelsPerSeries: int(rc.ackedSamples)}, rc.labelsPerSize)

			// Every series' samples: fresh timestamps, increasing from round to round, a growing counter.
			for key, samples := range rc.samples {
				for i, s := range samples {
					testutil.Assert(t, s.ts >= before.UnixMilli() && s.ts <= after.UnixMilli(),
						"%s: timestamp %d not within the run [%d, %d]", key, s.ts, before.UnixMilli(), after.UnixMilli())
					if i > 0 {
						testutil.Assert(t, s.ts > samples[i-1].ts, "%s: timestamps not increasing: %d after %d", key, s.ts, samples[i-1].ts)
						testutil.Assert(t, s.value > samples[i-1].value, "%s: value %v after %v", key, s.value, samples[i-1].value)
					}
				}
			}
		})
	}
}

func TestRun_Failures(t *testing.T) {
	// A closed port on 127.0.0.1: connections are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	refused := "http://" + l.Addr().String() + "/api/v1/push"
	testutil.Ok(t, l.Close())

	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()

	for _, tc := range []struct {
		name        string
		url         string
		maxFailures int
		wantKey     string
		wantMessage string
		wantStop    string
	}{
		{name: "404 until the duration ends", url: notFound.URL + "/api/v1/push", wantKey: "404",
			wantMessage: "404 page not found", wantStop: StopDuration},
		{name: "404 stops after max failures", url: notFound.URL + "/api/v1/push", maxFailures: 5, wantKey: "404",
			wantMessage: "404 page not found", wantStop: StopMaxFailures},
		{name: "connection refused", url: refused, maxFailures: 3, wantKey: errorKey,
			wantMessage: "connection refused", wantStop: StopMaxFailures},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(tc.url, ProtocolV1)
			cfg.MaxFailures = tc.maxFailures
			if tc.maxFailures > 0 {
				cfg.Duration = time.Minute // The failures, not the duration, must end it.
			}
			g, err := New(cfg)
			testutil.Ok(t, err)
			before := time.Now()
			res := g.Run(context.Background())

			testutil.Equals(t, tc.wantStop, res.StopReason)
			testutil.Assert(t, time.Since(before) < 30*time.Second, "ran %v", time.Since(before))
			testutil.Equals(t, int64(0), res.SamplesAcked)
			testutil.Equals(t, int64(0), res.RequestsOK)
			testutil.Equals(t, 0.0, res.SamplesPerSecond)
			testutil.Equals(t, 1, len(res.RequestsFailed), "%v", res.RequestsFailed)
			n := res.RequestsFailed[tc.wantKey]
			if tc.maxFailures > 0 {
				// Senders stop at the next request once the limit is reached; the others' in-flight ones still count.
				testutil.Assert(t, n >= int64(tc.maxFailures) && n < int64(tc.maxFailures+cfg.Concurrency),
					"%d failures, max %d", n, tc.maxFailures)
			} else {
				testutil.Assert(t, n > 0, "no failure counted")
			}
			// Every sample sent failed (the last request of a round has 100 series, the others 150).
			testutil.Equals(t, int64(res.Rounds*float64(cfg.Series)+0.5), res.SamplesFailed)
			testutil.Assert(t, res.SamplesFailed >= 100*n && res.SamplesFailed <= 150*n, "%d samples in %d requests", res.SamplesFailed, n)
			testutil.Assert(t, strings.Contains(res.FailureMessages[tc.wantKey], tc.wantMessage),
				"message: %q", res.FailureMessages[tc.wantKey])
		})
	}
}

// TestRun_Cancel cancels the run while every request hangs at the server: Run returns at once, without counting
// the aborted requests as failures.
func TestRun_Cancel(t *testing.T) {
	arrived := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		// Once the body is read, the server watches the connection, and ends r's context when the client goes.
		_, _ = io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-r.Context().Done()
	}))
	defer srv.Close()
	cfg := testConfig(srv.URL, ProtocolV2)
	cfg.Duration = time.Minute
	g, err := New(cfg)
	testutil.Ok(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Result)
	go func() { done <- g.Run(ctx) }()
	for range cfg.Concurrency {
		<-arrived
	}
	cancel()
	select {
	case res := <-done:
		testutil.Equals(t, StopCanceled, res.StopReason)
		testutil.Equals(t, int64(0), res.SamplesAcked)
		testutil.Equals(t, int64(0), res.RequestsFailedTotal)
		testutil.Equals(t, 0.0, res.Rounds)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

// TestRun_RoundInterval paces rounds: rounds start at 0, 100 and 200ms of a 250ms run, so each series gets 3
// samples, 100ms apart or more, where back-to-back rounds give it many more.
func TestRun_RoundInterval(t *testing.T) {
	rc := newReceiver(t, ProtocolV1, "loadgen", nil)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	cfg := testConfig(srv.URL, ProtocolV1)
	cfg.Duration = 250 * time.Millisecond
	cfg.RoundInterval = 100 * time.Millisecond
	g, err := New(cfg)
	testutil.Ok(t, err)
	before := time.Now()
	res := g.Run(context.Background())

	testutil.Equals(t, StopDuration, res.StopReason)
	// A round that starts late on a busy machine may squeeze out the last one.
	testutil.Assert(t, res.Rounds >= 2 && res.Rounds <= 3, "%v rounds", res.Rounds)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	testutil.Equals(t, cfg.Series, len(rc.samples))
	for key, samples := range rc.samples {
		testutil.Assert(t, len(samples) <= 3, "%s: %d samples", key, len(samples))
		for i, s := range samples {
			// Round i starts i intervals after the start, or later.
			testutil.Assert(t, s.ts >= before.Add(time.Duration(i)*cfg.RoundInterval).UnixMilli(),
				"%s: sample %d at %d, %dms after the start", key, i, s.ts, s.ts-before.UnixMilli())
		}
	}
}

func TestConfigValidate(t *testing.T) {
	valid := DefaultConfig()
	valid.URL = "http://127.0.0.1:8080/api/v1/push"
	for _, tc := range []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{name: "defaults with a URL", change: func(*Config) {}},
		{name: "v2, 10 and 20 labels", change: func(c *Config) { c.Protocol = ProtocolV2; c.LabelsPerSeries = 20 }},
		{name: "no tenant", change: func(c *Config) { c.Tenant = "" }},
		{name: "no URL", change: func(c *Config) { c.URL = "" }, wantErr: "absolute http(s) URL"},
		{name: "relative URL", change: func(c *Config) { c.URL = "/api/v1/push" }, wantErr: "absolute http(s) URL"},
		{name: "bad scheme", change: func(c *Config) { c.URL = "ftp://127.0.0.1/" }, wantErr: "absolute http(s) URL"},
		{name: "no series", change: func(c *Config) { c.Series = 0 }, wantErr: "series must be"},
		{name: "9 labels", change: func(c *Config) { c.LabelsPerSeries = 9 }, wantErr: "labels per series"},
		{name: "21 labels", change: func(c *Config) { c.LabelsPerSeries = 21 }, wantErr: "labels per series"},
		{name: "empty requests", change: func(c *Config) { c.SeriesPerRequest = 0 }, wantErr: "series per request"},
		{name: "no concurrency", change: func(c *Config) { c.Concurrency = 0 }, wantErr: "concurrency"},
		{name: "no duration", change: func(c *Config) { c.Duration = 0 }, wantErr: "duration"},
		{name: "negative interval", change: func(c *Config) { c.RoundInterval = -time.Second }, wantErr: "round interval"},
		{name: "no request timeout", change: func(c *Config) { c.RequestTimeout = 0 }, wantErr: "request timeout"},
		{name: "negative max failures", change: func(c *Config) { c.MaxFailures = -1 }, wantErr: "max failures"},
		{name: "unknown protocol", change: func(c *Config) { c.Protocol = "v3" }, wantErr: "protocol"},
		{name: "extra labels", change: func(c *Config) {
			c.ExtraLabels = []labels.Label{{Name: "cluster", Value: "c1"}, {Name: "__replica__", Value: "a"}}
		}},
		{name: "extra label bad name", change: func(c *Config) { c.ExtraLabels = []labels.Label{{Name: "a-b", Value: "c1"}} }, wantErr: "not a valid label name"},
		{name: "extra __name__", change: func(c *Config) { c.ExtraLabels = []labels.Label{{Name: "__name__", Value: "x"}} }, wantErr: "not a valid label name"},
		{name: "extra label empty", change: func(c *Config) { c.ExtraLabels = []labels.Label{{Name: "a", Value: ""}} }, wantErr: "empty value"},
		{name: "extra label twice", change: func(c *Config) { c.ExtraLabels = []labels.Label{{Name: "a", Value: "1"}, {Name: "a", Value: "2"}} }, wantErr: "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.change(&cfg)
			err := cfg.Validate()
			if tc.wantErr == "" {
				testutil.Ok(t, err)
				return
			}
			testutil.NotOk(t, err)
			testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q, want %q", err, tc.wantErr)
		})
	}
}

package loadgen

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Header values Prometheus's remote-write client sends (storage/remote/client.go).
const (
	contentTypeV1 = "application/x-protobuf"
	contentTypeV2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
	versionV1     = "0.1.0"
	versionV2     = "2.0.0"
	userAgent     = "strata-loadgen"
)

// Why a run ended (Result.StopReason).
const (
	StopDuration    = "duration"
	StopMaxFailures = "max failures"
	StopCanceled    = "canceled"
)

// errorKey counts requests that got no HTTP response (connection refused, timeout, …) in Result.RequestsFailed.
const errorKey = "error"

// maxErrorMessage is how much of a failed response's body (or of an error) Result.FailureMessages keeps.
const maxErrorMessage = 256

// maxLatencies bounds the latencies kept per sender for the percentiles (8 MiB each at most).
const maxLatencies = 1 << 20

// Result is what a run measured.
type Result struct {
	Protocol         Protocol `json:"protocol"`
	Series           int      `json:"series"`
	LabelsPerSeries  int      `json:"labels_per_series"`
	SeriesPerRequest int      `json:"series_per_request"`
	// Concurrency is the number of senders: the configured one, or the number of requests per round if smaller.
	Concurrency int `json:"concurrency"`

	// SamplesAcked is the number of samples in requests the server answered with 2xx.
	SamplesAcked int64 `json:"samples_acked"`
	// SamplesFailed is the number of samples in requests that failed.
	SamplesFailed int64 `json:"samples_failed"`
	RequestsOK    int64 `json:"requests_ok"`
	// RequestsFailed counts failed requests by HTTP status code ("429", "503", …), or "error" when no response
	// came (connection refused, timeout). Requests aborted by a cancelled context are not counted.
	RequestsFailed map[string]int64 `json:"requests_failed"`
	// RequestsFailedTotal sums RequestsFailed.
	RequestsFailedTotal int64 `json:"requests_failed_total"`
	// FailureMessages keeps the start of the first response body (or error) for each key of RequestsFailed.
	FailureMessages map[string]string `json:"failure_messages,omitempty"`
	// Rounds is the number of samples sent per series, on average.
	Rounds float64 `json:"rounds"`
	// BytesSent is the compressed request bodies' total size; RawBytesSent the same before compression.
	BytesSent    int64 `json:"bytes_sent"`
	RawBytesSent int64 `json:"raw_bytes_sent"`

	// ElapsedSeconds runs from the first request to the end of the last one.
	ElapsedSeconds   float64 `json:"elapsed_seconds"`
	SamplesPerSecond float64 `json:"acked_samples_per_second"`
	StopReason       string  `json:"stop_reason"`
	// Latency summarises every request that got a response (ok or not), in seconds.
	Latency LatencySummary `json:"latency_seconds"`
	// LoadgenCPUSeconds is the user+system CPU time this process used during the run (getrusage): the load
	// tool's own cost, to be kept out of the server's.
	LoadgenCPUSeconds float64 `json:"loadgen_cpu_seconds"`
}

// LatencySummary are request latencies in seconds.
type LatencySummary struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// Generator sends remote-write load. Build it with New, which pre-encodes every request; Run then sends.
type Generator struct {
	cfg     Config
	client  *http.Client
	batches []*batch
}

// New validates cfg and pre-encodes the series (a few seconds per million series).
func New(cfg Config) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Generator{
		cfg: cfg,
		client: &http.Client{Transport: &http.Transport{
			Proxy:               nil, // The load goes straight to the server under test.
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        2 * cfg.Concurrency,
			MaxIdleConnsPerHost: 2 * cfg.Concurrency,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}},
	}
	g.batches = newBatches(cfg.Protocol, cfg.Series, cfg.LabelsPerSeries, cfg.SeriesPerRequest, cfg.ExtraLabels...)
	return g, nil
}

// Run sends rounds of samples until the configured duration has passed, MaxFailures requests failed, or ctx is
// cancelled; then it waits for the requests in flight (bounded by the request timeout, or aborted at once if ctx
// is cancelled) and returns what it measured. A Generator runs once at a time.
//
// The requests are split over Concurrency senders, each owning a fixed share of them and sending its share
// round after round. So a series' samples are sent one after the other, each after the previous was answered,
// with strictly increasing timestamps: a series is never out of order at the server.
func (g *Generator) Run(ctx context.Context) Result {
	defer g.client.CloseIdleConnections()
	senders := make([]*sender, min(g.cfg.Concurrency, len(g.batches)))
	for i := range senders {
		senders[i] = &sender{g: g, failures: map[string]int64{}, messages: map[string]string{}}
	}
	for i, b := range g.batches {
		s := senders[i%len(senders)]
		s.batches = append(s.batches, b)
	}

	// The run's deadline counts from start, so that a run stopped by it lasts at least Duration.
	start := time.Now()
	runCtx, stopRun := context.WithDeadline(ctx, start.Add(g.cfg.Duration))
	defer stopRun()
	var failed atomic.Int64
	stopOnFailure := func() {
		if n := failed.Add(1); g.cfg.MaxFailures > 0 && n >= int64(g.cfg.MaxFailures) {
			stopRun()
		}
	}

	cpuStart := cpuSeconds()
	var wg sync.WaitGroup
	for _, s := range senders {
		wg.Go(func() { s.run(ctx, runCtx, start, stopOnFailure) })
	}
	wg.Wait()
	elapsed := time.Since(start)

	res := g.result(senders, elapsed, cpuSeconds()-cpuStart)
	switch {
	case ctx.Err() != nil:
		res.StopReason = StopCanceled
	case g.cfg.MaxFailures > 0 && failed.Load() >= int64(g.cfg.MaxFailures):
		res.StopReason = StopMaxFailures
	default:
		res.StopReason = StopDuration
	}
	return res
}

// result merges the senders' counts.
func (g *Generator) result(senders []*sender, elapsed time.Duration, cpu float64) Result {
	res := Result{
		Protocol:          g.cfg.Protocol,
		Series:            g.cfg.Series,
		LabelsPerSeries:   g.cfg.LabelsPerSeries,
		SeriesPerRequest:  g.cfg.SeriesPerRequest,
		Concurrency:       len(senders),
		RequestsFailed:    map[string]int64{},
		FailureMessages:   map[string]string{},
		ElapsedSeconds:    elapsed.Seconds(),
		LoadgenCPUSeconds: cpu,
	}
	var latencies []time.Duration
	var samplesSent int64
	for _, s := range senders {
		res.SamplesAcked += s.samplesAcked
		res.SamplesFailed += s.samplesFailed
		res.RequestsOK += s.requestsOK
		res.BytesSent += s.bytesSent
		res.RawBytesSent += s.rawBytesSent
		samplesSent += s.samplesSent
		for code, n := range s.failures {
			res.RequestsFailed[code] += n
			res.RequestsFailedTotal += n
		}
		for code, msg := range s.messages {
			if _, ok := res.FailureMessages[code]; !ok {
				res.FailureMessages[code] = msg
			}
		}
		latencies = append(latencies, s.latencies...)
	}
	res.Rounds = float64(samplesSent) / float64(g.cfg.Series)
	if elapsed > 0 {
		res.SamplesPerSecond = float64(res.SamplesAcked) / elapsed.Seconds()
	}
	res.Latency = summarize(latencies)
	return res
}

// summarize sorts latencies and returns their summary.
func summarize(latencies []time.Duration) LatencySummary {
	if len(latencies) == 0 {
		return LatencySummary{}
	}
	slices.Sort(latencies)
	var sum time.Duration
	for _, l := range latencies {
		sum += l
	}
	q := func(p float64) float64 { return latencies[int(p*float64(len(latencies)-1))].Seconds() }
	return LatencySummary{
		Mean: (sum / time.Duration(len(latencies))).Seconds(),
		P50:  q(0.50),
		P90:  q(0.90),
		P99:  q(0.99),
		Max:  latencies[len(latencies)-1].Seconds(),
	}
}

// sender sends its batches round after round, one request at a time, and counts the outcomes. Only its own
// goroutine touches it until Run merges the counts.
type sender struct {
	g       *Generator
	batches []*batch
	enc     encoder
	lastTS  []int64 // per batch, the timestamp it was last sent with

	samplesSent, samplesAcked, samplesFailed int64
	requestsOK, bytesSent, rawBytesSent      int64
	failures                                 map[string]int64
	messages                                 map[string]string
	latencies                                []time.Duration
}

// run sends until runCtx ends. Requests use ctx, so the ones in flight when the duration is over may finish.
// The loop is bounded by runCtx's deadline.
func (s *sender) run(ctx, runCtx context.Context, start time.Time, onFailure func()) {
	s.lastTS = make([]int64, len(s.batches))
	interval := s.g.cfg.RoundInterval
	for round := 0; ; round++ {
		if interval > 0 && !waitUntil(runCtx, start.Add(time.Duration(round)*interval)) {
			return
		}
		for i, b := range s.batches {
			if runCtx.Err() != nil {
				return
			}
			// A fresh timestamp, strictly after this batch's previous one: if the clock has not moved on by a
			// millisecond since (a tiny batch and a fast server), wait until it has rather than run ahead of it.
			ts := time.Now().UnixMilli()
			if ts <= s.lastTS[i] {
				if !waitUntil(runCtx, time.UnixMilli(s.lastTS[i]+1)) {
					return
				}
				ts = max(time.Now().UnixMilli(), s.lastTS[i]+1)
			}
			s.lastTS[i] = ts
			if !s.send(ctx, b, round, ts) {
				onFailure()
			}
		}
	}
}

// waitUntil waits until t, or until ctx ends (then it returns false).
func waitUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// send sends one request and counts it. It returns false if the request failed; a request aborted because ctx
// was cancelled counts as neither.
func (s *sender) send(ctx context.Context, b *batch, round int, ts int64) bool {
	payload := s.enc.encode(b, round, ts)

	body := newBody(payload)
	// The transport may close (so stop reading) the body after Do returns; the encoder's buffers are reused
	// only once it did. (Deferred first, so it runs after cancel.)
	defer body.wait()
	reqCtx, cancel := context.WithTimeout(ctx, s.g.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, s.g.cfg.URL, body)
	if err != nil {
		_ = body.Close()
		s.fail(errorKey, err.Error(), b.len())
		return false
	}
	req.ContentLength = int64(len(payload))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("User-Agent", userAgent)
	if s.g.cfg.Protocol == ProtocolV2 {
		req.Header.Set("Content-Type", contentTypeV2)
		req.Header.Set("X-Prometheus-Remote-Write-Version", versionV2)
	} else {
		req.Header.Set("Content-Type", contentTypeV1)
		req.Header.Set("X-Prometheus-Remote-Write-Version", versionV1)
	}
	if s.g.cfg.Tenant != "" {
		req.Header.Set("X-Scope-OrgID", s.g.cfg.Tenant)
	}

	sent := time.Now()
	resp, err := s.g.client.Do(req)
	if err != nil && ctx.Err() != nil {
		return true // Aborted: the run is cancelled.
	}
	s.samplesSent += int64(b.len())
	s.bytesSent += int64(len(payload))
	s.rawBytesSent += int64(len(s.enc.raw))
	if err != nil {
		s.fail(errorKey, err.Error(), b.len())
		return false
	}
	var msg []byte
	if resp.StatusCode/100 != 2 {
		msg, _ = io.ReadAll(io.LimitReader(resp.Body, maxErrorMessage))
	}
	// Read the rest so that the connection is reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if len(s.latencies) < maxLatencies {
		s.latencies = append(s.latencies, time.Since(sent))
	}
	if resp.StatusCode/100 != 2 {
		s.fail(strconv.Itoa(resp.StatusCode), string(bytes.TrimSpace(msg)), b.len())
		return false
	}
	s.requestsOK++
	s.samplesAcked += int64(b.len())
	return true
}

func (s *sender) fail(key, msg string, samples int) {
	s.failures[key]++
	s.samplesFailed += int64(samples)
	if _, ok := s.messages[key]; !ok {
		s.messages[key] = msg[:min(len(msg), maxErrorMessage)]
	}
}

// body is a request body that tells when the transport closed it.
type body struct {
	*bytes.Reader
	once   sync.Once
	closed chan struct{}
}

func newBody(b []byte) *body { return &body{Reader: bytes.NewReader(b), closed: make(chan struct{})} }

func (b *body) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// wait returns once the body is closed, which the transport does on every path ("the request Body … will be
// closed by the underlying Transport, even on errors").
func (b *body) wait() { <-b.closed }

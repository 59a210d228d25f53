package frontend

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
)

// maxResponseBytes bounds a querier's answer read by the frontend.
const maxResponseBytes = 1 << 30

// failedPause is how long a querier that could not be reached (network error) is passed over while another one
// is reachable. Without it a dead querier, with nothing in flight, would be "the one with the fewest in flight"
// for every request and every retry.
const failedPause = time.Second

// Downstream sends requests to the queriers: each to the one with the fewest requests in flight, ties broken
// round-robin; a querier that could not be reached is passed over for failedPause unless all are. A querier's HTTP answer, error statuses included, is a Response; a failure to get one is an error.
type Downstream struct {
	targets []*target
	client  *http.Client
	metrics *frontendMetrics
	now     func() time.Time

	mtx  sync.Mutex
	next int
}

type target struct {
	name     string
	base     *url.URL
	handler  http.Handler // in-process querier, instead of base
	inflight int
	failedAt time.Time // last network error; zero when the last request got an answer
}

// NewDownstream returns the round-tripper to the queriers at urls (http(s)://host:port[/prefix]).
func NewDownstream(urls []string, client *http.Client, m *Metrics) (*Downstream, error) {
	if len(urls) == 0 {
		return nil, errors.New("query-frontend: no downstream querier URL")
	}
	d := &Downstream{client: client, metrics: m.m, now: time.Now}
	for _, u := range urls {
		pu, err := url.Parse(u)
		if err != nil {
			return nil, errors.Wrapf(err, "parse downstream URL %q", u)
		}
		d.targets = append(d.targets, &target{name: u, base: pu})
	}
	return d, nil
}

// NewInProcessDownstream returns the round-tripper to a querier's handler in the same process: the same HTTP
// request as to a remote querier, served without a connection.
func NewInProcessDownstream(h http.Handler, m *Metrics) *Downstream {
	return &Downstream{metrics: m.m, now: time.Now, targets: []*target{{name: "in-process", base: &url.URL{Scheme: "http", Host: "in-process"}, handler: h}}}
}

// Do implements Handler.
func (d *Downstream) Do(ctx context.Context, r *Request) (*Response, error) {
	t := d.pick()
	failed := false
	defer func() { d.done(t, failed) }()
	hr, err := r.HTTPRequest(ctx, t.base)
	if err != nil {
		return nil, err
	}
	var (
		code   int
		header http.Header
		body   []byte
	)
	if t.handler != nil {
		rec := &recorder{header: http.Header{}}
		t.handler.ServeHTTP(rec, hr)
		code, header, body = rec.status(), rec.header, rec.body.Bytes()
	} else {
		resp, err := d.client.Do(hr)
		if err != nil {
			d.metrics.downstream.WithLabelValues(t.name, "error").Inc()
			failed = ctx.Err() == nil // the client giving up says nothing about the querier
			return nil, errors.Wrapf(err, "request to querier %s", t.name)
		}
		body, err = io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		_ = resp.Body.Close()
		if err != nil {
			d.metrics.downstream.WithLabelValues(t.name, "error").Inc()
			failed = ctx.Err() == nil
			return nil, errors.Wrapf(err, "read the answer of querier %s", t.name)
		}
		code, header = resp.StatusCode, resp.Header
	}
	d.metrics.downstream.WithLabelValues(t.name, strconv.Itoa(code)).Inc()
	return DecodeResponse(r, code, header, body)
}

func (d *Downstream) pick() *target {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	now := d.now()
	paused := func(t *target) bool { return !t.failedAt.IsZero() && now.Sub(t.failedAt) < failedPause }
	var best *target
	for i := range d.targets {
		t := d.targets[(d.next+i)%len(d.targets)]
		if best == nil || paused(best) && !paused(t) || paused(best) == paused(t) && t.inflight < best.inflight {
			best = t
		}
	}
	d.next = (d.next + 1) % len(d.targets)
	best.inflight++
	d.metrics.downstreamRunning.WithLabelValues(best.name).Set(float64(best.inflight))
	return best
}

func (d *Downstream) done(t *target, failed bool) {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	t.inflight--
	if failed {
		t.failedAt = d.now()
	} else {
		t.failedAt = time.Time{}
	}
	d.metrics.downstreamRunning.WithLabelValues(t.name).Set(float64(t.inflight))
}

// recorder is the http.ResponseWriter of an in-process request.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}

package frontend

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/efficientgo/core/errors"
)

// maxResponseBytes bounds a querier's answer read by the frontend.
const maxResponseBytes = 1 << 30

// Downstream sends requests to the queriers: each to the one with the fewest requests in flight, ties broken
// round-robin. A querier's HTTP answer, error statuses included, is a Response; a failure to get one is an error.
type Downstream struct {
	targets []*target
	client  *http.Client
	metrics *frontendMetrics

	mtx  sync.Mutex
	next int
}

type target struct {
	name     string
	base     *url.URL
	handler  http.Handler // in-process querier, instead of base
	inflight int
}

// NewDownstream returns the round-tripper to the queriers at urls (http(s)://host:port[/prefix]).
func NewDownstream(urls []string, client *http.Client, m *Metrics) (*Downstream, error) {
	if len(urls) == 0 {
		return nil, errors.New("query-frontend: no downstream querier URL")
	}
	d := &Downstream{client: client, metrics: m.m}
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
	return &Downstream{metrics: m.m, targets: []*target{{name: "in-process", base: &url.URL{Scheme: "http", Host: "in-process"}, handler: h}}}
}

// Do implements Handler.
func (d *Downstream) Do(ctx context.Context, r *Request) (*Response, error) {
	t := d.pick()
	defer d.done(t)
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
			return nil, errors.Wrapf(err, "request to querier %s", t.name)
		}
		body, err = io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		_ = resp.Body.Close()
		if err != nil {
			d.metrics.downstream.WithLabelValues(t.name, "error").Inc()
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
	var best *target
	for i := range d.targets {
		t := d.targets[(d.next+i)%len(d.targets)]
		if best == nil || t.inflight < best.inflight {
			best = t
		}
	}
	d.next = (d.next + 1) % len(d.targets)
	best.inflight++
	d.metrics.downstreamRunning.WithLabelValues(best.name).Set(float64(best.inflight))
	return best
}

func (d *Downstream) done(t *target) {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	t.inflight--
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

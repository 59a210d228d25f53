// Package frontend is the query-frontend: it sits in front of the queriers, serves the same Prometheus HTTP
// API, queues each tenant's requests fairly, splits range queries by day, runs the pieces in parallel, retries
// the queriers' failures and merges the answers exactly.
//
// The pieces are Middlewares over one Handler interface, so that the results cache (results_cache.go) slots in
// between the split and the retry. A Request is decoded once at the HTTP edge (codec.go) and a Response is
// encoded once on the way out; in between they are plain values.
package frontend

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
)

// Paths of the Prometheus API that the frontend treats specially; every other API path passes through.
const (
	PathQueryRange = "/api/v1/query_range"
	PathQuery      = "/api/v1/query"
)

// Request is one Prometheus API request as the frontend sees it.
//
// For a range query (Path == PathQueryRange and IsRange) Query, Start, End and Step hold the parsed
// parameters and Params every other parameter exactly as received (dedup, partial_response, replicaLabels[],
// max_source_resolution, lookback_delta, timeout, stats, engine options, …): nothing that can change an answer
// is dropped, so a results cache keys on Params as a whole. For every other request (instant queries, metadata,
// and range queries whose parameters the frontend does not parse, which then pass through unsplit) Params holds
// every parameter as received, query, start, end and step included, and Query is a copy kept for logs.
type Request struct {
	// Method is the HTTP method received (GET or POST); the downstream request uses the same.
	Method string
	// Prefix is the API prefix the client used: "" or "/prometheus". Path never includes it.
	Prefix string
	// Path is the API path without the prefix, e.g. "/api/v1/query_range".
	Path string
	// Tenants are the validated, sorted tenants of the request (tenancy.TenantsFromHTTP at the edge).
	Tenants []string

	// IsRange is true when Query, Start, End and Step were parsed (query_range only).
	IsRange bool
	Query   string
	// Start, End and Step are milliseconds (Unix ms for Start and End), the resolution the engine evaluates at.
	Start, End, Step int64

	// Params are the remaining parameters (see the type's comment). Never nil.
	Params url.Values

	// raw is the form as received, forwarded unchanged while the request is not rewritten (WithStartEnd).
	raw url.Values
}

// WithStartEnd returns a copy of a range request for [start, end] (ms). The copy shares Params (read-only).
func (r *Request) WithStartEnd(start, end int64) *Request {
	c := *r
	c.Start, c.End = start, end
	c.raw = nil
	return &c
}

// TenantHeader is the tenant header value sent downstream: the tenants joined by "|".
func (r *Request) TenantHeader() string {
	return joinTenants(r.Tenants)
}

// Response is a Prometheus API answer.
//
// A successful range query's answer (StatusCode 200, resultType matrix) is decoded: Matrix, Warnings, Infos and
// Stats are set and Raw is nil; Encode writes it back as Prometheus would. Every other answer (errors, instant
// queries, metadata) keeps its body in Raw with its header and status, and is written back unchanged. Status,
// ErrorType and Error are decoded for errors when the body is Prometheus's JSON envelope.
type Response struct {
	// StatusCode is the HTTP status the querier answered with (or the frontend's own, for its errors).
	StatusCode int
	// Header holds the querier's response headers for a Raw response (Content-Type, …); nil otherwise.
	Header http.Header
	// Raw is the body as received, when the answer was not decoded.
	Raw []byte

	Status     string
	ResultType string
	Matrix     []SampleStream
	// Stats is the "stats" object of data (requested with stats=…), or nil.
	Stats     json.RawMessage
	ErrorType string
	Error     string
	Warnings  []string
	Infos     []string
}

// IsSuccess reports whether the response is a successful answer (HTTP 200).
func (r *Response) IsSuccess() bool { return r.StatusCode == http.StatusOK }

// SampleStream is one series of a range query's matrix.
type SampleStream struct {
	Labels     labels.Labels
	Floats     []FPoint
	Histograms []HPoint
}

// FPoint is a float sample: T in Unix ms.
type FPoint struct {
	T int64
	F float64
}

// HPoint is a native histogram sample: T in Unix ms, H the histogram's JSON object as Prometheus wrote it
// ({"count":…,"sum":…,"buckets":…}), kept verbatim.
type HPoint struct {
	T int64
	H json.RawMessage
}

// Handler answers a Request. A querier's HTTP error is a Response with its StatusCode and no error; err is for
// failures to get any answer (network, canceled context, …).
type Handler interface {
	Do(ctx context.Context, r *Request) (*Response, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *Request) (*Response, error)

// Do calls f.
func (f HandlerFunc) Do(ctx context.Context, r *Request) (*Response, error) { return f(ctx, r) }

// Middleware wraps a Handler.
type Middleware func(Handler) Handler

// Chain returns h wrapped by ms, the first the outermost: Chain(h, a, b).Do runs a, then b, then h.
func Chain(h Handler, ms ...Middleware) Handler {
	for _, m := range slices.Backward(ms) {
		h = m(h)
	}
	return h
}

// Package sidecar is `strata sidecar`: it runs next to an existing Prometheus, reads its external labels, serves
// its live data over the StoreAPI through Prometheus's remote-read API, and uploads its finished blocks into a
// tenant's prefix of the bucket (Thanos's sidecar, made tenant-aware). DESIGN.md §8.
package sidecar

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Bounds of what the sidecar reads from Prometheus's HTTP API: a larger answer is an error, not an allocation.
const (
	maxConfigBytes  = 16 << 20  // /api/v1/status/config: the whole configuration as YAML
	maxMetricsBytes = 64 << 20  // /metrics: scanned line by line, never held whole
	maxAPIBytes     = 256 << 20 // /api/v1/labels, /api/v1/label/<n>/values, /api/v1/series
)

// lowestTimestampMetric is the gauge Prometheus's TSDB exports: the oldest timestamp it holds, in seconds.
const lowestTimestampMetric = "prometheus_tsdb_lowest_timestamp_seconds"

// Client talks to one Prometheus server: its HTTP API, its /metrics and its remote-read endpoint. It is safe for
// concurrent use.
type Client struct {
	base *url.URL
	http *http.Client
	// maxReadChunkBytes bounds the chunk bytes of one remote read (defaultMaxReadChunkBytes; tests lower it).
	maxReadChunkBytes int
}

// NewClient returns a client of the Prometheus at baseURL (e.g. http://localhost:9090, or with a path prefix
// when Prometheus runs with --web.route-prefix).
func NewClient(baseURL string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, errors.Wrapf(err, "parse Prometheus URL %q", baseURL)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, errors.Newf("Prometheus URL %q: want http(s)://host:port[/prefix]", baseURL)
	}
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{base: u, http: hc, maxReadChunkBytes: defaultMaxReadChunkBytes}, nil
}

// URL returns the URL of a path under the Prometheus base URL, with query parameters q (may be nil).
func (c *Client) URL(p string, q url.Values) string {
	u := *c.base
	u.Path = path.Join("/", u.Path, p)
	u.RawQuery = q.Encode()
	return u.String()
}

// maxGETQueryBytes is the longest query string sent in a GET to the endpoints that take POST forms as well
// (/api/v1/labels, /api/v1/series); a longer one (many matchers, a long regex) is sent as a POST form, since
// Prometheus's server refuses a request line and headers over 1 MiB, and proxies far less.
const maxGETQueryBytes = 8 << 10

// get GETs a path and returns its body (at most limit bytes) when the status is 200.
func (c *Client) get(ctx context.Context, p string, q url.Values, limit int64) ([]byte, error) {
	return c.do(ctx, http.MethodGet, p, q, limit)
}

// do sends a request to a path of the HTTP API, its parameters q in the URL (GET) or as a form (POST), and
// returns the body (at most limit bytes) when the status is 200.
func (c *Client) do(ctx context.Context, method, p string, q url.Values, limit int64) ([]byte, error) {
	var (
		req *http.Request
		err error
	)
	if method == http.MethodPost {
		req, err = http.NewRequestWithContext(ctx, method, c.URL(p, nil), strings.NewReader(q.Encode()))
		if req != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		req, err = http.NewRequestWithContext(ctx, method, c.URL(p, q), nil)
	}
	if err != nil {
		return nil, errors.Wrapf(err, "build request for %s", p)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, unreachable(ctx, errors.Wrapf(err, "GET %s", c.URL(p, nil)))
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := readLimited(resp.Body, limit)
	if err != nil {
		return nil, errors.Wrapf(err, "read the answer of GET %s", c.URL(p, nil))
	}
	if resp.StatusCode != http.StatusOK {
		err := errors.Newf("GET %s: %s: %s", c.URL(p, nil), resp.Status, truncate(string(body), 512))
		switch {
		case unavailableStatus(resp.StatusCode):
			return nil, unreachable(ctx, err)
		case resp.StatusCode == http.StatusRequestHeaderFieldsTooLarge || resp.StatusCode == http.StatusRequestURITooLong || resp.StatusCode == http.StatusRequestEntityTooLarge:
			return nil, status.Error(codes.InvalidArgument, "request too large for Prometheus's HTTP API (too many or too long matchers): "+err.Error())
		}
		return nil, err
	}
	return body, nil
}

// unreachable makes the error of a request Prometheus did not serve (down, restarting, not ready) a gRPC
// Unavailable, which the StoreAPI answers as it is: a querier then reports the sidecar unavailable, or goes on
// without it with partial responses. An error of ctx (the caller's deadline or cancellation) is kept as it is.
func unreachable(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	return status.Error(codes.Unavailable, "Prometheus unavailable: "+err.Error())
}

// unavailableStatus says whether an HTTP status means Prometheus cannot serve now: 503 while it starts (WAL
// replay) or shuts down, 502 and 504 from a proxy in front of it.
func unavailableStatus(code int) bool {
	return code == http.StatusServiceUnavailable || code == http.StatusBadGateway || code == http.StatusGatewayTimeout
}

// readLimited reads r to its end, failing when it holds more than limit bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errors.Newf("answer larger than %d bytes", limit)
	}
	return b, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// apiResponse is the envelope of every answer of Prometheus's HTTP API.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
}

// getAPI GETs an HTTP API path and decodes its data into out; it returns the API's warnings.
func (c *Client) getAPI(ctx context.Context, p string, q url.Values, out any) ([]string, error) {
	return c.callAPI(ctx, http.MethodGet, p, q, out)
}

// getOrPostAPI is getAPI for a path that takes POST forms as well: a query string longer than
// maxGETQueryBytes is sent as a form.
func (c *Client) getOrPostAPI(ctx context.Context, p string, q url.Values, out any) ([]string, error) {
	if len(q.Encode()) > maxGETQueryBytes {
		return c.callAPI(ctx, http.MethodPost, p, q, out)
	}
	return c.callAPI(ctx, http.MethodGet, p, q, out)
}

func (c *Client) callAPI(ctx context.Context, method, p string, q url.Values, out any) ([]string, error) {
	body, err := c.do(ctx, method, p, q, maxAPIBytes)
	if err != nil {
		return nil, err
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, errors.Wrapf(err, "decode the answer of %s", p)
	}
	if r.Status != "success" {
		return nil, errors.Newf("%s: %s: %s", p, r.ErrorType, r.Error)
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		return nil, errors.Wrapf(err, "decode the data of %s", p)
	}
	return r.Warnings, nil
}

// ExternalLabels reads the external labels of Prometheus's configuration (global.external_labels of the YAML
// that /api/v1/status/config returns). No external labels is an empty set, not an error.
func (c *Client) ExternalLabels(ctx context.Context) (labels.Labels, error) {
	var data struct {
		YAML string `json:"yaml"`
	}
	body, err := c.get(ctx, "/api/v1/status/config", nil, maxConfigBytes)
	if err != nil {
		return labels.EmptyLabels(), err
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return labels.EmptyLabels(), errors.Wrap(err, "decode the answer of /api/v1/status/config")
	}
	if r.Status != "success" {
		return labels.EmptyLabels(), errors.Newf("/api/v1/status/config: %s: %s", r.ErrorType, r.Error)
	}
	if err := json.Unmarshal(r.Data, &data); err != nil {
		return labels.EmptyLabels(), errors.Wrap(err, "decode the data of /api/v1/status/config")
	}
	return parseExternalLabels(data.YAML)
}

// parseExternalLabels reads global.external_labels of a Prometheus configuration file.
func parseExternalLabels(configYAML string) (labels.Labels, error) {
	var cfg struct {
		Global struct {
			ExternalLabels map[string]string `yaml:"external_labels"`
		} `yaml:"global"`
	}
	if err := yaml.Unmarshal([]byte(configYAML), &cfg); err != nil {
		return labels.EmptyLabels(), errors.Wrap(err, "parse Prometheus's configuration")
	}
	b := labels.NewScratchBuilder(len(cfg.Global.ExternalLabels))
	for n, v := range cfg.Global.ExternalLabels {
		if !model.UTF8Validation.IsValidLabelName(n) || v == "" {
			return labels.EmptyLabels(), errors.Newf("Prometheus's external label %q=%q is not a valid label", n, v)
		}
		b.Add(n, v)
	}
	b.Sort()
	return b.Labels(), nil
}

// LowestTimestamp reads the oldest timestamp Prometheus's TSDB holds (ms) from the gauge
// prometheus_tsdb_lowest_timestamp_seconds of its /metrics. An empty TSDB reports a time far in the future
// (math.MaxInt64 here).
func (c *Client) LowestTimestamp(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL("/metrics", nil), nil)
	if err != nil {
		return 0, errors.Wrap(err, "build request for /metrics")
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, errors.Wrapf(err, "GET %s", c.URL("/metrics", nil))
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return 0, errors.Newf("GET %s: %s", c.URL("/metrics", nil), resp.Status)
	}
	return parseLowestTimestamp(io.LimitReader(resp.Body, maxMetricsBytes))
}

// parseLowestTimestamp finds prometheus_tsdb_lowest_timestamp_seconds in a text exposition and returns it in ms.
func parseLowestTimestamp(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, lowestTimestampMetric)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if rest[0] == '{' { // labels: none expected, but skip them if there are
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, errors.Wrapf(err, "parse %s value %q", lowestTimestampMetric, fields[0])
		}
		return secondsToMillis(v), nil
	}
	if err := sc.Err(); err != nil {
		return 0, errors.Wrap(err, "read /metrics")
	}
	return 0, errors.Newf("%s not found in Prometheus's /metrics", lowestTimestampMetric)
}

// secondsToMillis converts seconds to ms, saturating at the int64 bounds (an empty TSDB reports MaxInt64/1000 s).
func secondsToMillis(v float64) int64 {
	ms := v * 1000
	switch {
	case math.IsNaN(ms):
		return math.MaxInt64
	case ms >= math.MaxInt64:
		return math.MaxInt64
	case ms <= math.MinInt64:
		return math.MinInt64
	}
	return int64(math.Floor(ms))
}

// The HTTP API's time range: Prometheus's own bounds would overflow its conversion to ms; years 1 and 9999 do not.
const (
	apiMinTime = -62135596800000 // 0001-01-01T00:00:00Z
	apiMaxTime = 253402300799000 // 9999-12-31T23:59:59Z
)

// rangeParams sets start and end (in seconds, as the HTTP API takes them), left out when unbounded.
func rangeParams(q url.Values, start, end int64) {
	if start > apiMinTime {
		q.Set("start", formatAPITime(start))
	}
	if end < apiMaxTime {
		q.Set("end", formatAPITime(end))
	}
}

func formatAPITime(ms int64) string {
	return strconv.FormatFloat(float64(ms)/1000, 'f', 3, 64)
}

// selector renders matchers as a PromQL series selector for match[]. Prometheus refuses a selector whose
// matchers all match the empty string; such a selector gets __name__=~".+" (every series has a name).
func selector(ms []*labels.Matcher) string {
	parts := make([]string, 0, len(ms)+1)
	nonEmpty := false
	for _, m := range ms {
		parts = append(parts, m.String())
		if !m.Matches("") {
			nonEmpty = true
		}
	}
	if !nonEmpty {
		parts = append(parts, fmt.Sprintf("%s=~%q", model.MetricNameLabel, ".+"))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// LabelNames asks /api/v1/labels for the label names of the series matching ms in [start, end] (ms).
func (c *Client) LabelNames(ctx context.Context, start, end int64, limit int, ms ...*labels.Matcher) ([]string, []string, error) {
	q := url.Values{}
	rangeParams(q, start, end)
	if len(ms) > 0 {
		q.Set("match[]", selector(ms))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var names []string
	warns, err := c.getOrPostAPI(ctx, "/api/v1/labels", q, &names)
	return names, warns, err
}

// LabelValues asks /api/v1/label/<name>/values for the values of a label of the series matching ms.
func (c *Client) LabelValues(ctx context.Context, name string, start, end int64, limit int, ms ...*labels.Matcher) ([]string, []string, error) {
	q := url.Values{}
	rangeParams(q, start, end)
	if len(ms) > 0 {
		q.Set("match[]", selector(ms))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var values []string
	// A name that is not a legacy name is written U__<hex> in the path, as Prometheus's API expects.
	warns, err := c.getAPI(ctx, "/api/v1/label/"+url.PathEscape(escapeLabelName(name))+"/values", q, &values)
	return values, warns, err
}

// escapeLabelName writes a label name for the label values path: legacy names as they are, others in
// Prometheus's U__ escaping (each character not in [A-Za-z0-9] as _<hex>_, underscores doubled).
func escapeLabelName(name string) string {
	if model.LegacyValidation.IsValidLabelName(name) {
		return name
	}
	var b strings.Builder
	b.WriteString("U__")
	for _, r := range name {
		switch {
		case r == '_':
			b.WriteString("__")
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			fmt.Fprintf(&b, "_%x_", r)
		}
	}
	return b.String()
}

// Series asks /api/v1/series for the label sets of the series matching ms in [start, end] (ms).
func (c *Client) Series(ctx context.Context, start, end int64, limit int, ms ...*labels.Matcher) ([]labels.Labels, []string, error) {
	q := url.Values{}
	rangeParams(q, start, end)
	q.Set("match[]", selector(ms))
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var sets []map[string]string
	warns, err := c.getOrPostAPI(ctx, "/api/v1/series", q, &sets)
	if err != nil {
		return nil, nil, err
	}
	out := make([]labels.Labels, 0, len(sets))
	for _, m := range sets {
		out = append(out, labels.FromMap(m))
	}
	return out, warns, nil
}

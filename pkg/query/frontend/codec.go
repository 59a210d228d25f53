package frontend

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/efficientgo/core/errors"
	jsoniter "github.com/json-iterator/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/util/jsonutil"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// maxMultipartMemory is the part of a multipart form kept in memory (the body is bounded before, by the caller).
const maxMultipartMemory = 10 << 20

// rangeParams are the parameters a range Request holds in fields rather than in Params.
var rangeParams = []string{"query", "start", "end", "step"}

// ParseRequest decodes an HTTP request of the Prometheus API (its form already bounded by the caller) for the
// validated tenants. A query_range whose query, start, end and step are each given once and parse as the querier
// parses them becomes a range Request (IsRange); anything else keeps all its parameters in Params and is
// forwarded unchanged. The error is a client error (400): the form could not be read.
func ParseRequest(r *http.Request, tenants []string) (*Request, error) {
	var err error
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		err = r.ParseMultipartForm(maxMultipartMemory) // as Prometheus's FormValue does; forwarded url-encoded
	} else {
		err = r.ParseForm()
	}
	if err != nil {
		return nil, errors.Wrap(err, "read the request's parameters")
	}
	prefix, path := "", r.URL.Path
	if strings.HasPrefix(path, "/prometheus/") {
		prefix, path = "/prometheus", strings.TrimPrefix(path, "/prometheus")
	}
	form := cloneValues(r.Form)
	req := &Request{
		Method: r.Method, Prefix: prefix, Path: path, Tenants: tenants,
		Query: form.Get("query"), Params: form, raw: form,
	}
	if path != PathQueryRange {
		return req, nil
	}
	for _, p := range rangeParams {
		if len(form[p]) != 1 {
			return req, nil
		}
	}
	start, ok1 := parseTimeMs(form.Get("start"))
	end, ok2 := parseTimeMs(form.Get("end"))
	step, ok3 := parseStepMs(form.Get("step"))
	if !ok1 || !ok2 || !ok3 || end < start {
		return req, nil // the querier answers with its own error
	}
	params := cloneValues(form)
	for _, p := range rangeParams {
		delete(params, p)
	}
	req.IsRange, req.Start, req.End, req.Step, req.Params = true, start, end, step, params
	return req, nil
}

// Form returns the parameters sent downstream: the form as received for a request not rewritten, else Params
// with query, start, end and step written so that the querier reads exactly Start, End and Step (RFC 3339 with
// milliseconds, a Prometheus duration).
func (r *Request) Form() url.Values {
	if r.raw != nil || !r.IsRange {
		if r.raw != nil {
			return r.raw
		}
		return r.Params
	}
	form := cloneValues(r.Params)
	form.Set("query", r.Query)
	form.Set("start", formatTimeMs(r.Start))
	form.Set("end", formatTimeMs(r.End))
	form.Set("step", model.Duration(time.Duration(r.Step)*time.Millisecond).String())
	return form
}

// HTTPRequest encodes r for a downstream querier at base (scheme, host and an optional path prefix): same
// method, same API path, the tenant header, and Form in the body (POST) or the URL (any other method).
func (r *Request) HTTPRequest(ctx context.Context, base *url.URL) (*http.Request, error) {
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + r.Prefix + r.Path
	u.RawPath = ""
	form := r.Form().Encode()
	var (
		hr  *http.Request
		err error
	)
	if r.Method == http.MethodPost {
		u.RawQuery = ""
		hr, err = http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form))
		if err == nil {
			hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		u.RawQuery = form
		hr, err = http.NewRequestWithContext(ctx, r.Method, u.String(), nil) // "" is GET
	}
	if err != nil {
		return nil, errors.Wrapf(err, "build the downstream request for %s", r.Path)
	}
	hr.Header.Set(tenancy.HeaderOrgID, r.TenantHeader())
	return hr, nil
}

// DecodeResponse decodes the querier's answer to req. A 200 answer to a range Request must be Prometheus's
// matrix envelope (an error otherwise); every other answer is kept Raw.
func DecodeResponse(req *Request, statusCode int, header http.Header, body []byte) (*Response, error) {
	resp := &Response{StatusCode: statusCode}
	if statusCode != http.StatusOK || !req.IsRange {
		resp.Header, resp.Raw = header.Clone(), body
		var env envelope
		if json.Unmarshal(body, &env) == nil {
			resp.Status, resp.ErrorType, resp.Error = env.Status, env.ErrorType, env.Error
		}
		return resp, nil
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, errors.Wrap(err, "decode the querier's range query answer")
	}
	if env.Status != "success" || env.Data == nil || env.Data.ResultType != "matrix" {
		return nil, errors.Newf("the querier's range query answer is not a matrix (status %q)", env.Status)
	}
	resp.Status, resp.ResultType, resp.Stats = env.Status, env.Data.ResultType, env.Data.Stats
	resp.Warnings, resp.Infos = env.Warnings, env.Infos
	resp.Matrix = make([]SampleStream, 0, len(env.Data.Result))
	for _, s := range env.Data.Result {
		resp.Matrix = append(resp.Matrix, SampleStream{Labels: labels.FromMap(s.Metric), Floats: s.Values, Histograms: s.Histograms})
	}
	return resp, nil
}

// NewErrorResponse is an error answered by the frontend itself, in Prometheus's error envelope.
func NewErrorResponse(statusCode int, errorType, msg string) *Response {
	body, _ := json.Marshal(struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}{"error", errorType, msg})
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	return &Response{StatusCode: statusCode, Header: h, Raw: body, Status: "error", ErrorType: errorType, Error: msg}
}

// Encode returns the body of r: Raw when set, else the matrix envelope exactly as Prometheus's API writes it.
func (r *Response) Encode() []byte {
	if r.Raw != nil {
		return r.Raw
	}
	stream := jsoniter.ConfigCompatibleWithStandardLibrary.BorrowStream(nil)
	defer jsoniter.ConfigCompatibleWithStandardLibrary.ReturnStream(stream)
	stream.WriteObjectStart()
	stream.WriteObjectField("status")
	stream.WriteString(r.Status)
	stream.WriteMore()
	stream.WriteObjectField("data")
	stream.WriteObjectStart()
	stream.WriteObjectField("resultType")
	stream.WriteString(r.ResultType)
	stream.WriteMore()
	stream.WriteObjectField("result")
	writeMatrix(r.Matrix, stream)
	if len(r.Stats) > 0 {
		stream.WriteMore()
		stream.WriteObjectField("stats")
		stream.WriteRaw(string(r.Stats))
	}
	stream.WriteObjectEnd()
	for _, f := range []struct {
		name string
		v    string
	}{{"errorType", r.ErrorType}, {"error", r.Error}} {
		if f.v != "" {
			stream.WriteMore()
			stream.WriteObjectField(f.name)
			stream.WriteString(f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    []string
	}{{"warnings", r.Warnings}, {"infos", r.Infos}} {
		if len(f.v) == 0 {
			continue
		}
		stream.WriteMore()
		stream.WriteObjectField(f.name)
		stream.WriteArrayStart()
		for i, s := range f.v {
			if i > 0 {
				stream.WriteMore()
			}
			stream.WriteString(s)
		}
		stream.WriteArrayEnd()
	}
	stream.WriteObjectEnd()
	return bytes.Clone(stream.Buffer())
}

// WriteTo writes r as an HTTP answer.
func (r *Response) WriteTo(w http.ResponseWriter) {
	body := r.Encode()
	if r.Raw != nil {
		for k, vs := range r.Header {
			if k == "Content-Length" {
				continue
			}
			w.Header()[k] = vs
		}
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(r.StatusCode)
	_, _ = w.Write(body)
}

func writeMatrix(m []SampleStream, stream *jsoniter.Stream) {
	stream.WriteArrayStart()
	for i, s := range m {
		if i > 0 {
			stream.WriteMore()
		}
		stream.WriteObjectStart()
		stream.WriteObjectField("metric")
		stream.WriteObjectStart()
		j := 0
		s.Labels.Range(func(l labels.Label) {
			if j > 0 {
				stream.WriteMore()
			}
			j++
			stream.WriteString(l.Name)
			stream.WriteRaw(":")
			stream.WriteString(l.Value)
		})
		stream.WriteObjectEnd()
		if len(s.Floats) > 0 {
			stream.WriteMore()
			stream.WriteObjectField("values")
			stream.WriteArrayStart()
			for k, p := range s.Floats {
				if k > 0 {
					stream.WriteMore()
				}
				stream.WriteArrayStart()
				jsonutil.MarshalTimestamp(p.T, stream)
				stream.WriteMore()
				jsonutil.MarshalFloat(p.F, stream)
				stream.WriteArrayEnd()
			}
			stream.WriteArrayEnd()
		}
		if len(s.Histograms) > 0 {
			stream.WriteMore()
			stream.WriteObjectField("histograms")
			stream.WriteArrayStart()
			for k, p := range s.Histograms {
				if k > 0 {
					stream.WriteMore()
				}
				stream.WriteArrayStart()
				jsonutil.MarshalTimestamp(p.T, stream)
				stream.WriteMore()
				stream.WriteRaw(string(p.H))
				stream.WriteArrayEnd()
			}
			stream.WriteArrayEnd()
		}
		stream.WriteObjectEnd()
	}
	stream.WriteArrayEnd()
}

type envelope struct {
	Status string `json:"status"`
	Data   *struct {
		ResultType string          `json:"resultType"`
		Result     []seriesJSON    `json:"result"`
		Stats      json.RawMessage `json:"stats"`
	} `json:"data"`
	ErrorType string   `json:"errorType"`
	Error     string   `json:"error"`
	Warnings  []string `json:"warnings"`
	Infos     []string `json:"infos"`
}

type seriesJSON struct {
	Metric     map[string]string `json:"metric"`
	Values     []FPoint          `json:"values"`
	Histograms []HPoint          `json:"histograms"`
}

// UnmarshalJSON reads Prometheus's [<seconds>, "<value>"].
func (p *FPoint) UnmarshalJSON(b []byte) error {
	ts, v, err := splitPair(b)
	if err != nil {
		return err
	}
	if p.T, err = parseJSONTimestamp(ts); err != nil {
		return err
	}
	s, err := strconv.Unquote(string(v))
	if err != nil {
		return errors.Wrapf(err, "sample value %s", v)
	}
	p.F, err = strconv.ParseFloat(s, 64)
	return errors.Wrapf(err, "sample value %s", v)
}

// UnmarshalJSON reads Prometheus's [<seconds>, {histogram}], keeping the histogram verbatim.
func (p *HPoint) UnmarshalJSON(b []byte) error {
	ts, v, err := splitPair(b)
	if err != nil {
		return err
	}
	if p.T, err = parseJSONTimestamp(ts); err != nil {
		return err
	}
	p.H = bytes.Clone(v)
	return nil
}

// splitPair splits the JSON array [a, b] (a a number) into a and b.
func splitPair(b []byte) ([]byte, []byte, error) {
	b = bytes.TrimSpace(b)
	if len(b) < 2 || b[0] != '[' || b[len(b)-1] != ']' {
		return nil, nil, errors.Newf("sample %.40q is not a [time, value] pair", b)
	}
	inner := b[1 : len(b)-1]
	i := bytes.IndexByte(inner, ',')
	if i < 0 {
		return nil, nil, errors.Newf("sample %.40q is not a [time, value] pair", b)
	}
	return bytes.TrimSpace(inner[:i]), bytes.TrimSpace(inner[i+1:]), nil
}

// parseJSONTimestamp reads a timestamp as Prometheus writes it (seconds with up to 3 decimals) into ms exactly.
func parseJSONTimestamp(b []byte) (int64, error) {
	s := string(b)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	intPart, frac, _ := strings.Cut(s, ".")
	if len(frac) > 3 || strings.ContainsAny(s, "eE") {
		f, err := strconv.ParseFloat(string(b), 64)
		if err != nil {
			return 0, errors.Wrapf(err, "sample time %q", b)
		}
		return int64(math.Round(f * 1000)), nil
	}
	sec, err := strconv.ParseInt(intPart, 10, 64)
	if err != nil {
		return 0, errors.Wrapf(err, "sample time %q", b)
	}
	var ms int64
	if frac != "" {
		ms, err = strconv.ParseInt((frac + "00")[:3], 10, 64)
		if err != nil {
			return 0, errors.Wrapf(err, "sample time %q", b)
		}
	}
	t := sec*1000 + ms
	if neg {
		t = -t
	}
	return t, nil
}

// parseTimeMs reads a time parameter exactly as Prometheus's API does (Unix seconds with a fraction rounded to
// ms, or RFC 3339) and returns the millisecond the engine evaluates at. Prometheus's min/max time strings and
// times outside years 0–9999 are not parsed (false): such requests pass through unsplit.
func parseTimeMs(s string) (int64, bool) {
	var t time.Time
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		sec, ns := math.Modf(f)
		ns = math.Round(ns*1000) / 1000
		t = time.Unix(int64(sec), int64(ns*float64(time.Second))).UTC()
	} else if t, err = time.Parse(time.RFC3339Nano, s); err != nil {
		return 0, false
	}
	if y := t.UTC().Year(); y < 1 || y > 9999 {
		return 0, false
	}
	return timestamp.FromTime(t), true
}

// parseStepMs reads step as Prometheus's API does and returns the engine's step in ms; false for a step the
// querier would refuse (≤ 0, too big) or that is not a whole number of ms.
func parseStepMs(s string) (int64, bool) {
	var d time.Duration
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		ns := f * float64(time.Second)
		if ns > float64(math.MaxInt64) || ns < float64(math.MinInt64) || math.IsNaN(ns) {
			return 0, false
		}
		d = time.Duration(ns)
	} else {
		md, err := model.ParseDuration(s)
		if err != nil {
			return 0, false
		}
		d = time.Duration(md)
	}
	if d <= 0 || d%time.Millisecond != 0 {
		return 0, false
	}
	return int64(d / time.Millisecond), true
}

// formatTimeMs writes a Unix ms time so that Prometheus's parseTime reads it back exactly.
func formatTimeMs(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

func joinTenants(ts []string) string {
	return strings.Join(ts, tenancy.TenantSeparator)
}

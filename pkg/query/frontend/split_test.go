package frontend

import (
	"encoding/json"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/model/labels"
)

func TestSplitByInterval(t *testing.T) {
	h := int64(time.Hour / time.Millisecond)
	for _, tc := range []struct {
		name             string
		start, end, step int64
		want             [][2]int64
	}{
		{name: "within a day", start: 1 * h, end: 5 * h, step: h, want: [][2]int64{{1 * h, 5 * h}}},
		{name: "start == end", start: 7 * h, end: 7 * h, step: 60_000, want: [][2]int64{{7 * h, 7 * h}}},
		{name: "start == end on midnight", start: day, end: day, step: 60_000, want: [][2]int64{{day, day}}},
		{name: "aligned days", start: 0, end: 2 * day, step: h, want: [][2]int64{{0, 23 * h}, {24 * h, 47 * h}, {48 * h, 48 * h}}},
		{name: "step not dividing the day", start: 0, end: 3 * day, step: 7 * h, want: [][2]int64{{0, 21 * h}, {28 * h, 42 * h}, {49 * h, 70 * h}}},
		{name: "start off the hour", start: 22*h + 30*60_000, end: 26 * h, step: h, want: [][2]int64{{22*h + 30*60_000, 23*h + 30*60_000}, {24*h + 30*60_000, 26 * h}}},
		{name: "end not on a step", start: 0, end: day + 5, step: day / 2, want: [][2]int64{{0, day / 2}, {day, day + 5}}},
		{name: "step longer than the day", start: 0, end: 5 * day, step: 36 * h, want: [][2]int64{{0, 0}, {36 * h, 36 * h}, {72 * h, 72 * h}, {108 * h, 108 * h}}},
		{name: "before 1970", start: -day - 2*h, end: 1 * h, step: h, want: [][2]int64{{-day - 2*h, -day - h}, {-day, -h}, {0, h}}},
		{name: "huge range is not split", start: 0, end: 3 * 365 * day, step: day, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.Equals(t, tc.want, splitByInterval(tc.start, tc.end, tc.step, day, maxSplitsPerQuery))
		})
	}
}

// TestSplitByIntervalKeepsEveryPoint checks random queries: the parts' points are exactly the query's points,
// each part lies within one UTC day, and the parts follow each other.
func TestSplitByIntervalKeepsEveryPoint(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for range 2000 {
		step := 1 + rng.Int63n(int64(30*time.Hour/time.Millisecond))
		if rng.Intn(2) == 0 {
			step = (1 + rng.Int63n(3600)) * 1000
		}
		start := rng.Int63n(10*day) - 5*day
		end := start + rng.Int63n(min(step*200, 20*day))
		parts := splitByInterval(start, end, step, day, maxSplitsPerQuery)
		var got []int64
		for i, p := range parts {
			testutil.Assert(t, p[0] <= p[1], "part %d: %v", i, p)
			testutil.Equals(t, floorDiv(p[0], day), floorDiv(p[1], day), "part %d %v of %d..%d/%d spans a midnight", i, p, start, end, step)
			if i > 0 {
				testutil.Equals(t, parts[i-1][1]+step, p[0])
			}
			for ts := p[0]; ts <= p[1]; ts += step {
				got = append(got, ts)
			}
		}
		var want []int64
		for ts := start; ts <= end; ts += step {
			want = append(want, ts)
		}
		testutil.Equals(t, want, got, "%d..%d step %d", start, end, step)
	}
}

// TestSplitAnswersEqualWholeQuery runs random range queries through the frontend (split by day, merged) and
// directly against the same querier: the answers must be byte-for-byte equal, floats and native histograms.
func TestSplitAnswersEqualWholeQuery(t *testing.T) {
	base := int64(1_767_225_600_000) // 2026-01-01T00:00:00Z
	q := newEngineQuerier(t, testSeries(base-3*day, base+3*day))
	f, _ := newTestFrontend(t, func(m *Metrics) Handler { return NewInProcessDownstream(q, m) }, nil)

	queries := []string{
		`m`, `rate(m[5m])`, `sum by (job) (m)`, `m offset 1h`, `max_over_time(m[1h:5m])`, `h`, `histogram_count(h)`,
		`timestamp(m{job="late"})`, `m @ ` + strconv.FormatInt(base/1000, 10), `count_over_time(h[10m])`, `-m`, `time()`,
	}
	steps := []string{"15", "60", "7m", "1h", "13m17s", "5h", "25h", "0.5", "86400"}
	rng := rand.New(rand.NewSource(2))
	splits := 0
	for i := range 80 {
		start := base - 3*day + rng.Int63n(5*day)
		end := start + rng.Int63n(3*day)
		form := url.Values{
			"query": {queries[rng.Intn(len(queries))]},
			"start": {formatSeconds(start, rng)}, "end": {formatSeconds(end, rng)}, "step": {steps[rng.Intn(len(steps))]},
		}
		before := q.requests()
		got := serve(t, f, http.MethodGet, "/prometheus/api/v1/query_range", form, "t1")
		if q.requests()-before > 1 {
			splits++
		}
		want := httptest.NewRecorder()
		q.ServeHTTP(want, httptest.NewRequest(http.MethodGet, "/api/v1/query_range?"+form.Encode(), nil))
		testutil.Equals(t, want.Code, got.Code, "case %d: %v", i, form)
		testutil.Equals(t, want.Body.String(), got.Body.String(), "case %d: %v", i, form)
	}
	testutil.Assert(t, splits > 25, "only %d of the queries were split", splits)
}

// formatSeconds writes a ms time as Unix seconds (with a fraction) or RFC 3339, at random.
func formatSeconds(ms int64, rng *rand.Rand) string {
	if rng.Intn(2) == 0 {
		return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
	}
	return strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64)
}

func serve(t *testing.T, f http.Handler, method, path string, form url.Values, tenant string) *httptest.ResponseRecorder {
	t.Helper()
	var r *http.Request
	if method == http.MethodGet {
		r = httptest.NewRequest(method, path+"?"+form.Encode(), nil)
	} else {
		r = httptest.NewRequest(method, path, strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if tenant != "" {
		r.Header.Set("X-Scope-OrgID", tenant)
	}
	w := httptest.NewRecorder()
	f.ServeHTTP(w, r)
	return w
}

// TestUnsplittableQueriesPassWhole: queries whose answer a split could change reach the querier as one request,
// with their parameters as received.
func TestUnsplittableQueriesPassWhole(t *testing.T) {
	base := int64(1_767_225_600_000)
	q := newEngineQuerier(t, testSeries(base-3*day, base+3*day))
	f, _ := newTestFrontend(t, func(m *Metrics) Handler { return NewInProcessDownstream(q, m) }, nil)
	startS, endS := strconv.FormatInt((base-2*day)/1000, 10), strconv.FormatInt((base+day)/1000, 10)
	for _, tc := range []struct {
		name string
		form url.Values
	}{
		{name: "@ start()", form: url.Values{"query": {"m @ start()"}, "step": {"1h"}}},
		{name: "@ end() in a subquery", form: url.Values{"query": {"max_over_time(m[1h:5m] @ end())"}, "step": {"1h"}}},
		{name: "limit", form: url.Values{"query": {"m"}, "step": {"1h"}, "limit": {"1"}}},
		{name: "over 11000 points", form: url.Values{"query": {"m"}, "step": {"10"}}},
		{name: "unparseable", form: url.Values{"query": {"m +"}, "step": {"1h"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.form.Set("start", startS)
			tc.form.Set("end", endS)
			before := q.requests()
			got := serve(t, f, http.MethodPost, "/api/v1/query_range", tc.form, "t1")
			testutil.Equals(t, before+1, q.requests())
			q.mtx.Lock()
			seen := q.seen[len(q.seen)-1]
			q.mtx.Unlock()
			testutil.Equals(t, tc.form, seen.Form)
			want := httptest.NewRecorder()
			q.ServeHTTP(want, httptest.NewRequest(http.MethodGet, "/api/v1/query_range?"+tc.form.Encode(), nil))
			testutil.Equals(t, want.Code, got.Code)
			testutil.Equals(t, want.Body.String(), got.Body.String())
		})
	}
}

// TestMergeResponses splits a matrix by time at random cut points and merges the parts back: the result must be
// the matrix (series present in some parts only included), with warnings de-duplicated and stats summed.
func TestMergeResponses(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	var whole []SampleStream
	for s := range 6 {
		ss := SampleStream{Labels: labels.FromStrings("s", strconv.Itoa(s))}
		for ts := int64(0); ts < 100; ts++ {
			if rng.Intn(3) == 0 {
				continue
			}
			if s == 5 {
				ss.Histograms = append(ss.Histograms, HPoint{T: ts, H: json.RawMessage(`{"count":"1","sum":"2"}`)})
			} else {
				ss.Floats = append(ss.Floats, FPoint{T: ts, F: rng.NormFloat64()})
			}
		}
		whole = append(whole, ss)
	}
	for range 50 {
		cuts := []int64{0}
		for c := int64(0); c < 100; c += 1 + rng.Int63n(30) {
			cuts = append(cuts, c)
		}
		cuts = append(cuts, 100)
		var parts []*Response
		for i := 1; i < len(cuts); i++ {
			part := &Response{StatusCode: 200, Status: "success", ResultType: "matrix", Warnings: []string{"w", "w" + strconv.Itoa(i%2)},
				Stats: json.RawMessage(`{"timings":{"evalTotalTime":0.5},"samples":{"totalQueryableSamples":3,"peakSamples":` + strconv.Itoa(i) + `}}`)}
			for _, s := range whole {
				p := SampleStream{Labels: s.Labels}
				for _, f := range s.Floats {
					if f.T >= cuts[i-1] && f.T < cuts[i] {
						p.Floats = append(p.Floats, f)
					}
				}
				for _, h := range s.Histograms {
					if h.T >= cuts[i-1] && h.T < cuts[i] {
						p.Histograms = append(p.Histograms, h)
					}
				}
				if len(p.Floats)+len(p.Histograms) > 0 {
					part.Matrix = append(part.Matrix, p)
				}
			}
			rng.Shuffle(len(part.Matrix), func(a, b int) { part.Matrix[a], part.Matrix[b] = part.Matrix[b], part.Matrix[a] })
			parts = append(parts, part)
		}
		got, err := MergeResponses(parts)
		testutil.Ok(t, err)
		testutil.Equals(t, whole, got.Matrix)
		wantW := []string{"w", "w1"}
		if len(parts) > 1 {
			wantW = append(wantW, "w0")
		}
		testutil.Equals(t, wantW, got.Warnings)
		n := len(parts)
		want := `{"timings":{"evalTotalTime":` + strconv.FormatFloat(0.5*float64(n), 'f', -1, 64) + `},"samples":{"totalQueryableSamples":` + strconv.Itoa(3*n) + `,"peakSamples":` + strconv.Itoa(n) + `}}`
		testutil.Equals(t, want, string(got.Stats))
	}
}

package frontend

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/teststorage"
	v1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/stratametrics/strata/pkg/tenancy"
)

const day = int64(24 * time.Hour / time.Millisecond)

// engineQuerier is a querier for the tests: query_range evaluated by Prometheus's engine over a test TSDB and
// encoded by Prometheus's API codec. It parses times on its own (not with the frontend's codec).
type engineQuerier struct {
	engine *promql.Engine
	db     storage.Queryable

	mtx  sync.Mutex
	seen []http.Request
}

func newEngineQuerier(t *testing.T, fill func(app storage.Appender)) *engineQuerier {
	st := teststorage.New(t)
	app := st.Appender(context.Background())
	fill(app)
	testutil.Ok(t, app.Commit())
	eng := promql.NewEngine(promql.EngineOpts{
		MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute,
		EnableAtModifier: true, EnableNegativeOffset: true,
		NoStepSubqueryIntervalFn: func(int64) int64 { return 60_000 },
	})
	return &engineQuerier{engine: eng, db: st}
}

// testSeries fills the TSDB: floats every minute over [from, to] ms for a few series, one of which exists only in
// the second half, and a native histogram series.
func testSeries(from, to int64) func(app storage.Appender) {
	return func(app storage.Appender) {
		h := &histogram.Histogram{Count: 5, Sum: 2.5, Schema: 1, ZeroThreshold: 0.001, ZeroCount: 1,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{2, 0}}
		for ts, i := from, 0; ts <= to; ts, i = ts+60_000, i+1 {
			for j, job := range []string{"a", "b", "c"} {
				_, _ = app.Append(0, labels.FromStrings("__name__", "m", "job", job), ts, float64(i*(j+1))+math.Sin(float64(i)))
			}
			if ts > (from+to)/2 {
				_, _ = app.Append(0, labels.FromStrings("__name__", "m", "job", "late"), ts, float64(i))
			}
			if i%4 == 0 {
				hh := h.Copy()
				hh.Count += uint64(i)
				hh.Sum += float64(i)
				hh.ZeroCount += uint64(i)
				_, _ = app.AppendHistogram(0, labels.FromStrings("__name__", "h"), ts, hh, nil)
			}
		}
	}
}

func (q *engineQuerier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q.mtx.Lock()
	q.seen = append(q.seen, *r)
	q.mtx.Unlock()
	start, err1 := refTime(r.FormValue("start"))
	end, err2 := refTime(r.FormValue("end"))
	step, err3 := refDuration(r.FormValue("step"))
	if err1 != nil || err2 != nil || err3 != nil {
		writeRaw(w, http.StatusBadRequest, `{"status":"error","errorType":"bad_data","error":"bad time"}`)
		return
	}
	qry, err := q.engine.NewRangeQuery(r.Context(), q.db, nil, r.FormValue("query"), start, end, step)
	if err != nil {
		writeRaw(w, http.StatusBadRequest, `{"status":"error","errorType":"bad_data","error":`+strconv.Quote(err.Error())+`}`)
		return
	}
	defer qry.Close()
	res := qry.Exec(r.Context())
	if res.Err != nil {
		writeRaw(w, http.StatusUnprocessableEntity, `{"status":"error","errorType":"execution","error":`+strconv.Quote(res.Err.Error())+`}`)
		return
	}
	warnings, infos := res.Warnings.AsStrings(r.FormValue("query"), 10, 10)
	b, err := v1.JSONCodec{}.Encode(&v1.Response{Status: "success", Data: &v1.QueryData{ResultType: parser.ValueTypeMatrix, Result: res.Value}, Warnings: warnings, Infos: infos})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeRaw(w, http.StatusOK, string(b))
}

func (q *engineQuerier) requests() int {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	return len(q.seen)
}

func writeRaw(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

func refTime(s string) (time.Time, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return time.UnixMilli(int64(math.Round(f * 1000))).UTC(), nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

func refDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(math.Round(f*1000)) * time.Millisecond, nil
	}
	d, err := model.ParseDuration(s)
	return time.Duration(d), err
}

// staticLimits are Limits for every tenant.
type staticLimits struct {
	parallelism int
	maxLength   time.Duration
	maxTenants  int
}

func (l staticLimits) MaxQueryParallelism(string) int      { return l.parallelism }
func (l staticLimits) MaxQueryLength(string) time.Duration { return l.maxLength }
func (l staticLimits) MaxTenants(string) int               { return l.maxTenants }

// newTestFrontend returns a frontend over downstream with cfg's defaults changed by mod.
func newTestFrontend(t *testing.T, downstream func(m *Metrics) Handler, mod func(*Config)) (*Frontend, *prometheus.Registry) {
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	f, err := New(cfg, Options{Auth: tenancy.DefaultConfig(), Limits: staticLimits{parallelism: 14}, Downstream: downstream(m), Metrics: m})
	testutil.Ok(t, err)
	return f, reg
}

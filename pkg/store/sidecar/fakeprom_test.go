package sidecar

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// fakeSeries is a series of the fake Prometheus, without external labels, with samples at t = 0, step, 2·step…
type fakeSeries struct {
	lset    labels.Labels
	samples []sample
}

type sample struct {
	t int64
	v float64
}

// fakeProm answers like Prometheus the requests a sidecar makes: /api/v1/status/config, /metrics,
// /api/v1/read (streamed XOR chunks, or samples only when samplesOnly), /api/v1/labels, /api/v1/label/<n>/values,
// /api/v1/series, /api/v1/status/flags. Like Prometheus it adds its external labels to remote-read answers.
// It records the remote-read requests it gets.
type fakeProm struct {
	t   *testing.T
	srv *httptest.Server

	mtx         sync.Mutex
	configYAML  string
	failConfig  int // the next failConfig config requests get a 503
	lowest      string
	ext         labels.Labels
	series      []fakeSeries
	samplesOnly bool
	chunkSize   int // samples per chunk in streamed answers; each chunk is sent in a frame of its own
	reads       []*prompb.Query
	flags       map[string]string
	// down, when set, is how every request fails: "503" (Prometheus starting or stopping) or "reset" (the
	// connection closed without an answer: Prometheus killed).
	down string
}

func newFakeProm(t *testing.T, ext labels.Labels, series ...fakeSeries) *fakeProm {
	f := &fakeProm{t: t, ext: ext, series: series, lowest: "1.7e+09", chunkSize: 50,
		flags: map[string]string{"storage.tsdb.min-block-duration": "2h", "storage.tsdb.max-block-duration": "2h"}}
	var b strings.Builder
	b.WriteString("global:\n  scrape_interval: 15s\n")
	if !ext.IsEmpty() {
		b.WriteString("  external_labels:\n")
		ext.Range(func(l labels.Label) { fmt.Fprintf(&b, "    %s: %s\n", l.Name, l.Value) })
	}
	b.WriteString("scrape_configs: []\n")
	f.configYAML = b.String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/status/config", f.config)
	mux.HandleFunc("GET /api/v1/status/flags", func(w http.ResponseWriter, _ *http.Request) { f.reply(w, f.flags) })
	mux.HandleFunc("GET /metrics", f.metrics)
	mux.HandleFunc("POST /api/v1/read", f.read)
	mux.HandleFunc("GET /api/v1/labels", f.labelNames)
	mux.HandleFunc("POST /api/v1/labels", f.labelNames)
	mux.HandleFunc("POST /api/v1/series", f.seriesAPI)
	mux.HandleFunc("GET /api/v1/label/{name}/values", f.labelValues)
	mux.HandleFunc("GET /api/v1/series", f.seriesAPI)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mtx.Lock()
		down := f.down
		f.mtx.Unlock()
		switch down {
		case "503":
			http.Error(w, "Service Unavailable", http.StatusServiceUnavailable)
		case "reset":
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		default:
			mux.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeProm) readRequests() []*prompb.Query {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	return slices.Clone(f.reads)
}

func (f *fakeProm) reply(w http.ResponseWriter, data any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": data})
}

func (f *fakeProm) config(w http.ResponseWriter, _ *http.Request) {
	f.mtx.Lock()
	fail := f.failConfig > 0
	if fail {
		f.failConfig--
	}
	y := f.configYAML
	f.mtx.Unlock()
	if fail {
		http.Error(w, "Service Unavailable", http.StatusServiceUnavailable)
		return
	}
	f.reply(w, map[string]string{"yaml": y})
}

func (f *fakeProm) metrics(w http.ResponseWriter, _ *http.Request) {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	if f.lowest == "" {
		http.Error(w, "metrics disabled", http.StatusForbidden)
		return
	}
	fmt.Fprintf(w, "# HELP prometheus_tsdb_lowest_timestamp Lowest timestamp value stored in the database. (not this one)\n")
	fmt.Fprintf(w, "prometheus_tsdb_lowest_timestamp 1\n")
	fmt.Fprintf(w, "# HELP %s Lowest timestamp value stored in the database.\n# TYPE %s gauge\n%s %s\n", lowestTimestampMetric, lowestTimestampMetric, lowestTimestampMetric, f.lowest)
}

// matching returns the series matching ms (by their own labels), with the external labels added, sorted.
func (f *fakeProm) matching(ms []*labels.Matcher, mint, maxt int64) []fakeSeries {
	var out []fakeSeries
	for _, s := range f.series {
		ok := true
		for _, m := range ms {
			ok = ok && m.Matches(s.lset.Get(m.Name))
		}
		if !ok {
			continue
		}
		b := labels.NewBuilder(s.lset)
		f.ext.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
		var smp []sample
		for _, x := range s.samples {
			if x.t >= mint && x.t <= maxt {
				smp = append(smp, x)
			}
		}
		out = append(out, fakeSeries{lset: b.Labels(), samples: smp})
	}
	slices.SortFunc(out, func(a, b fakeSeries) int { return labels.Compare(a.lset, b.lset) })
	return out
}

func (f *fakeProm) read(w http.ResponseWriter, r *http.Request) {
	compressed, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	raw, err := snappy.Decode(nil, compressed)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req prompb.ReadRequest
	if err := req.UnmarshalVT(raw); err != nil || len(req.Queries) != 1 {
		http.Error(w, fmt.Sprintf("bad request: %v", err), http.StatusBadRequest)
		return
	}
	q := req.Queries[0]
	var ms []*labels.Matcher
	for _, m := range q.Matchers {
		ms = append(ms, labels.MustNewMatcher(labels.MatchType(m.Type), m.Name, m.Value))
	}
	f.mtx.Lock()
	f.reads = append(f.reads, q)
	series := f.matching(ms, q.StartTimestampMs, q.EndTimestampMs)
	streamed := !f.samplesOnly && slices.Contains(req.AcceptedResponseTypes, prompb.ReadRequest_STREAMED_XOR_CHUNKS)
	chunkSize := f.chunkSize
	f.mtx.Unlock()

	if !streamed {
		res := &prompb.QueryResult{}
		for _, s := range series {
			ts := &prompb.TimeSeries{Labels: labelsToPB(s.lset)}
			for _, x := range s.samples {
				ts.Samples = append(ts.Samples, &prompb.Sample{Timestamp: x.t, Value: x.v})
			}
			res.Timeseries = append(res.Timeseries, ts)
		}
		b, err := (&prompb.ReadResponse{Results: []*prompb.QueryResult{res}}).MarshalVT()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Header().Set("Content-Encoding", "snappy")
		_, _ = w.Write(snappy.Encode(nil, b))
		return
	}
	w.Header().Set("Content-Type", "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse")
	for _, s := range series {
		for start := 0; start < len(s.samples); start += chunkSize {
			part := s.samples[start:min(start+chunkSize, len(s.samples))]
			chk := chunkenc.NewXORChunk()
			app, err := chk.Appender()
			if err != nil {
				f.t.Error(err)
				return
			}
			for _, x := range part {
				app.Append(0, x.t, x.v)
			}
			frame, err := (&prompb.ChunkedReadResponse{ChunkedSeries: []*prompb.ChunkedSeries{{
				Labels: labelsToPB(s.lset),
				Chunks: []*prompb.Chunk{{MinTimeMs: part[0].t, MaxTimeMs: part[len(part)-1].t, Type: prompb.Chunk_XOR, Data: chk.Bytes()}},
			}}}).MarshalVT()
			if err != nil {
				f.t.Error(err)
				return
			}
			writeFrame(w, frame)
		}
	}
}

// writeFrame writes one frame of a streamed remote-read answer, as Prometheus's ChunkedWriter does.
func writeFrame(w io.Writer, data []byte) {
	var hdr [binary.MaxVarintLen64 + 4]byte
	n := binary.PutUvarint(hdr[:], uint64(len(data)))
	binary.BigEndian.PutUint32(hdr[n:], crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
	_, _ = w.Write(hdr[:n+4])
	_, _ = w.Write(data)
}

func labelsToPB(l labels.Labels) []*labelpb.Label {
	var out []*labelpb.Label
	l.Range(func(x labels.Label) { out = append(out, &labelpb.Label{Name: x.Name, Value: x.Value}) })
	return out
}

// apiMatchers parses the match[] selectors of an HTTP API request (one here).
func (f *fakeProm) apiMatchers(r *http.Request) ([]*labels.Matcher, error) {
	if err := r.ParseForm(); err != nil {
		return nil, err
	}
	sel := r.Form["match[]"] // the URL's, or a POST form's, as Prometheus reads them
	if len(sel) == 0 {
		return nil, nil
	}
	return parser.NewParser(parser.Options{}).ParseMetricSelector(sel[0])
}

func (f *fakeProm) labelNames(w http.ResponseWriter, r *http.Request) {
	ms, err := f.apiMatchers(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mtx.Lock()
	defer f.mtx.Unlock()
	var names []string
	for _, s := range f.matching(ms, minT, maxT) {
		s.lset.Range(func(l labels.Label) {
			if !f.ext.Has(l.Name) { // the HTTP API does not add external labels
				names = append(names, l.Name)
			}
		})
	}
	slices.Sort(names)
	f.reply(w, slices.Compact(names))
}

func (f *fakeProm) labelValues(w http.ResponseWriter, r *http.Request) {
	ms, err := f.apiMatchers(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name := r.PathValue("name")
	f.mtx.Lock()
	defer f.mtx.Unlock()
	values := []string{}
	for _, s := range f.series {
		ok := true
		for _, m := range ms {
			ok = ok && m.Matches(s.lset.Get(m.Name))
		}
		if v := s.lset.Get(name); ok && v != "" {
			values = append(values, v)
		}
	}
	slices.Sort(values)
	f.reply(w, slices.Compact(values))
}

func (f *fakeProm) seriesAPI(w http.ResponseWriter, r *http.Request) {
	ms, err := f.apiMatchers(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mtx.Lock()
	defer f.mtx.Unlock()
	out := []map[string]string{}
	for _, s := range f.series {
		ok := true
		for _, m := range ms {
			ok = ok && m.Matches(s.lset.Get(m.Name))
		}
		if ok {
			out = append(out, s.lset.Map())
		}
	}
	f.reply(w, out)
}

const (
	minT = -1 << 62
	maxT = 1 << 62
)

type promSample = prompb.Sample

func itoa(i int) string     { return strconv.Itoa(i) }
func ftoa(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

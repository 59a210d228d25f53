package receive

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/klauspost/compress/snappy"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	promprompb "github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// TestIngesterSeriesRefs: the series of a forwarded write whose labels the ingester received before are appended
// by the reference recorded for those bytes (seriesRefs), and what goes wrong with a reference is caught.
func TestIngesterSeriesRefs(t *testing.T) {
	const n = 20
	now := time.Unix(1_750_000_000, 0)
	t0 := now.UnixMilli() - 60_000
	name := func(k int) string { return fmt.Sprintf(`{__name__="m", s="%d", tenant_id="a"}`, k) }
	// request writes series k at tms+k*step.
	request := func(tms, step int64) *storepb.WriteRequest {
		req := &storepb.WriteRequest{Tenant: "a"}
		for k := range n {
			req.Timeseries = append(req.Timeseries, ts(series("m", "s", fmt.Sprint(k)), tms+int64(k)*step))
		}
		return req
	}
	refOf := func(t *testing.T, db *tsdb.DB, k int) storage.SeriesRef {
		lset := labels.FromStrings("__name__", "m", "s", fmt.Sprint(k))
		ref, _ := db.Appender(context.Background()).(storage.GetRef).GetRef(lset, lset.Hash())
		testutil.Assert(t, ref != 0, "series %d is not in the head", k)
		return ref
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, ing *Ingester, db *tsdb.DB, lim fixedLimits)
	}{
		{
			// Shown by giving two series each other's reference: their samples trade places.
			name: "known series are appended by reference alone",
			run: func(t *testing.T, ing *Ingester, db *tsdb.DB, _ fixedLimits) {
				r0, r1 := refOf(t, db, 0), refOf(t, db, 1)
				refs := ing.get("a").refs
				swapRefs(refs, r0, r1)
				testutil.Ok(t, remoteWriteWire(context.Background(), ing, request(t0+1000, 1)))
				got := readAll(t, ing, "a")
				testutil.Equals(t, []int64{t0, t0 + 1001}, got[name(0)], "%v", got)
				testutil.Equals(t, []int64{t0, t0 + 1000}, got[name(1)])
				testutil.Equals(t, []int64{t0, t0 + 1002}, got[name(2)])
			},
		},
		{
			name: "a series the head removed is appended by labels again",
			run: func(t *testing.T, ing *Ingester, db *tsdb.DB, _ fixedLimits) {
				old := refOf(t, db, 0)
				testutil.Ok(t, compactHead(db, ing.cfg.BlockDuration.Milliseconds()))
				testutil.Ok(t, db.Head().Truncate(t0+1)) // what head GC does once the block is cut
				testutil.Equals(t, uint64(0), db.Head().NumSeries())
				testutil.Ok(t, remoteWriteWire(context.Background(), ing, request(t0+1000, 0)))
				testutil.Equals(t, uint64(n), db.Head().NumSeries())
				testutil.Assert(t, refOf(t, db, 0) != old, "the head reused a reference")
				for k := range n {
					testutil.Equals(t, []int64{t0, t0 + 1000}, readAll(t, ing, "a")[name(k)])
				}
				// The new references are recorded: the next write does not go by labels (a removed reference
				// would be looked up again every time).
				for _, e := range ing.get("a").refs.t.slots {
					testutil.Assert(t, e.v == 0 || storage.SeriesRef(e.v) != old, "the removed reference is still recorded")
				}
			},
		},
		{
			name: "an append by reference that fails names the series",
			run: func(t *testing.T, ing *Ingester, db *tsdb.DB, _ fixedLimits) {
				testutil.Ok(t, remoteWriteWire(context.Background(), ing, request(t0+1000, 0)))
				err := remoteWriteWire(context.Background(), ing, &storepb.WriteRequest{Tenant: "a", Timeseries: []*prompb.TimeSeries{ts(series("m", "s", "7"), t0+500)}})
				testutil.NotOk(t, err)
				testutil.Assert(t, strings.Contains(err.Error(), `s=\"7\"`) || strings.Contains(err.Error(), `s="7"`), err.Error())
			},
		},
		{
			name: "another layout of the same labels is the same series",
			run: func(t *testing.T, ing *Ingester, db *tsdb.DB, _ fixedLimits) {
				var body []byte
				body = protowire.AppendString(protowire.AppendTag(body, 2, protowire.BytesType), "a")
				for k := range n {
					var sb []byte
					for _, l := range [][2]string{{"__name__", "m"}, {"s", fmt.Sprint(k)}} { // value first
						var lb []byte
						lb = protowire.AppendString(protowire.AppendTag(lb, 2, protowire.BytesType), l[1])
						lb = protowire.AppendString(protowire.AppendTag(lb, 1, protowire.BytesType), l[0])
						sb = protowire.AppendBytes(protowire.AppendTag(sb, 1, protowire.BytesType), lb)
					}
					smp, err := (&prompb.Sample{Timestamp: t0 + 1000, Value: 1}).MarshalVT()
					testutil.Ok(t, err)
					sb = protowire.AppendBytes(protowire.AppendTag(sb, 2, protowire.BytesType), smp)
					body = protowire.AppendBytes(protowire.AppendTag(body, 1, protowire.BytesType), sb)
				}
				testutil.Ok(t, remoteWriteBytes(context.Background(), ing, body))
				testutil.Equals(t, uint64(n), db.Head().NumSeries())
				testutil.Equals(t, 2*n, ing.get("a").refs.len())
				testutil.Ok(t, remoteWriteWire(context.Background(), ing, request(t0+2000, 0)))
				for k := range n {
					testutil.Equals(t, []int64{t0, t0 + 1000, t0 + 2000}, readAll(t, ing, "a")[name(k)])
				}
			},
		},
		{
			// A series known by its bytes has only its samples checked: its labels passed under the same limits.
			name: "known series are checked again when the label limits change",
			run: func(t *testing.T, ing *Ingester, db *tsdb.DB, lim fixedLimits) {
				l := tenancy.DefaultLimits()
				l.MaxLabelNamesPerSeries = 1
				lim["a"] = &l
				err := remoteWriteWire(context.Background(), ing, request(t0+1000, 0))
				testutil.NotOk(t, err)
				testutil.Assert(t, strings.Contains(err.Error(), "max-label-names-per-series"), err.Error())
				testutil.Equals(t, []int64{t0}, readAll(t, ing, "a")[name(0)])
				// Its samples still are.
				l = tenancy.DefaultLimits()
				lim["a"] = &l
				testutil.Ok(t, remoteWriteWire(context.Background(), ing, request(t0+1000, 0)))
				err = remoteWriteWire(context.Background(), ing, request(now.Add(time.Hour).UnixMilli(), 0))
				testutil.NotOk(t, err)
				testutil.Assert(t, strings.Contains(err.Error(), "too far in the future"), err.Error())
				// Decoded without its labels, it is named all the same.
				testutil.Assert(t, strings.Contains(err.Error(), `s=\"0\"`) || strings.Contains(err.Error(), `s="0"`), err.Error())
				testutil.Equals(t, []int64{t0, t0 + 1000}, readAll(t, ing, "a")[name(0)])
			},
		},
		{
			name: "a series whose labels validation sorts is not known by its bytes",
			run: func(t *testing.T, ing *Ingester, db *tsdb.DB, _ fixedLimits) {
				unsorted := &prompb.TimeSeries{Labels: []*labelpb.Label{{Name: "s", Value: "x"}, {Name: "__name__", Value: "m"}}}
				for _, tms := range []int64{t0, t0 + 1000} {
					unsorted.Samples = []*prompb.Sample{{Timestamp: tms, Value: 1}}
					testutil.Ok(t, remoteWriteWire(context.Background(), ing, &storepb.WriteRequest{Tenant: "a", Timeseries: []*prompb.TimeSeries{unsorted}}))
				}
				testutil.Equals(t, []int64{t0, t0 + 1000}, readAll(t, ing, "a")[`{__name__="m", s="x", tenant_id="a"}`])
				testutil.Equals(t, n, ing.get("a").refs.len())
			},
		},
		{
			name: "known series are decoded without their labels",
			run: func(t *testing.T, ing *Ingester, db *tsdb.DB, _ fixedLimits) {
				w := decodeForwarded(t, ing, request(t0+1000, 0))
				for k, ts := range w.series {
					testutil.Equals(t, 0, len(ts.Labels), "series %d", k)
				}
				_, err := ing.remoteWriteForwarded(context.Background(), w)
				testutil.Ok(t, err)
				for k := range n {
					testutil.Equals(t, []int64{t0, t0 + 1000}, readAll(t, ing, "a")[name(k)])
				}
			},
		},
		{
			// Decoded as known under the limits of then, appended under stricter ones: checked with their labels.
			name: "the label limits change between decoding and appending",
			run: func(t *testing.T, ing *Ingester, db *tsdb.DB, lim fixedLimits) {
				w := decodeForwarded(t, ing, request(t0+1000, 0))
				testutil.Equals(t, 0, len(w.series[0].Labels))
				l := tenancy.DefaultLimits()
				l.MaxLabelNamesPerSeries = 1
				lim["a"] = &l
				_, err := ing.remoteWriteForwarded(context.Background(), w)
				testutil.NotOk(t, err)
				testutil.Assert(t, strings.Contains(err.Error(), "max-label-names-per-series"), err.Error())
				testutil.Assert(t, strings.Contains(err.Error(), `s=\"0\"`) || strings.Contains(err.Error(), `s="0"`), err.Error())
				testutil.Equals(t, []int64{t0}, readAll(t, ing, "a")[name(0)])
			},
		},
		{
			// A push that creates a series is redone alone, every series looked up by its labels: those of the
			// known ones come from their bytes.
			name: "a push creating a series appends the known ones by the labels of their bytes",
			run: func(t *testing.T, ing *Ingester, db *tsdb.DB, _ fixedLimits) {
				req := request(t0+1000, 0)
				req.Timeseries = append(req.Timeseries, ts(series("m", "s", "new"), t0+1000))
				w := decodeForwarded(t, ing, req)
				testutil.Equals(t, 0, len(w.series[0].Labels))
				testutil.Equals(t, 2, len(w.series[n].Labels))
				_, err := ing.remoteWriteForwarded(context.Background(), w)
				testutil.Ok(t, err)
				testutil.Equals(t, uint64(n+1), db.Head().NumSeries())
				got := readAll(t, ing, "a")
				for k := range n {
					testutil.Equals(t, []int64{t0, t0 + 1000}, got[name(k)])
				}
				testutil.Equals(t, []int64{t0 + 1000}, got[`{__name__="m", s="new", tenant_id="a"}`])
			},
		},
		{
			name: "in-process pushes neither use nor fill it",
			run: func(t *testing.T, ing *Ingester, db *tsdb.DB, _ fixedLimits) {
				refs := ing.get("a").refs
				swapRefs(refs, refOf(t, db, 0), refOf(t, db, 1)) // a push using them would trade the two's samples
				testutil.Ok(t, ing.Push(context.Background(), "a", request(t0+1000, 1)))
				testutil.Ok(t, ing.Push(context.Background(), "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("new"), t0)}}))
				testutil.Equals(t, n, refs.len())
				got := readAll(t, ing, "a")
				testutil.Equals(t, []int64{t0, t0 + 1000}, got[name(0)])
				testutil.Equals(t, []int64{t0, t0 + 1001}, got[name(1)])
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := fixedLimits{}
			ing := newTestIngester(t, t.TempDir(), lim, prometheus.NewRegistry(), WithIngesterClock(func() time.Time { return now }))
			defer ing.Close()
			testutil.Ok(t, remoteWriteWire(context.Background(), ing, request(t0, 0)))
			testutil.Equals(t, n, ing.get("a").refs.len())
			tc.run(t, ing, ing.DB("a").(*tsdb.DB), lim)
		})
	}
}

// TestSeriesRefsLimit: the map starts again, empty, rather than hold more than its limit; series without bytes and
// references 0 are not recorded, and keys are salted with the label limits.
func TestSeriesRefsLimit(t *testing.T) {
	c := newSeriesRefs()
	var pool receivedPool
	limits := [3]int{30, 1024, 2048}
	batch := func(from, to int, limits [3]int) (*receivedSeries, []storage.SeriesRef) {
		var (
			runs [][]byte
			refs []storage.SeriesRef
		)
		for k := from; k < to; k++ {
			runs = append(runs, []byte(fmt.Sprint("series", k)))
			refs = append(refs, storage.SeriesRef(k+1))
		}
		rs := pool.get(runs, limits)
		c.lookup(rs)
		return rs, refs
	}
	rs, refs := batch(0, 10, limits)
	rs.runs[3], refs[4] = nil, 0
	c.add(rs, refs, 15)
	testutil.Equals(t, 8, c.len())
	c.lookup(rs)
	testutil.Equals(t, []storage.SeriesRef{1, 2, 3, 0, 0, 6, 7, 8, 9, 10}, rs.known)
	other, _ := batch(0, 10, [3]int{30, 1024, 2047})
	testutil.Equals(t, make([]storage.SeriesRef, 10), other.known) // other limits: unknown
	// A key whose first half is recorded but not its second is not known.
	for i := range c.t.slots {
		if c.t.slots[i].key == rs.keys[0] {
			c.t.slots[i].key[1] ^= 1
		}
	}
	c.lookup(rs)
	testutil.Equals(t, []storage.SeriesRef{0, 2, 3, 0, 0, 6, 7, 8, 9, 10}, rs.known)
	c.add(rs, refs, 15) // recorded again
	c.lookup(rs)
	testutil.Equals(t, storage.SeriesRef(1), rs.known[0])

	c.add(rs, refs, 15) // the same series again: 8, within the limit
	testutil.Equals(t, 8, c.len())
	rs2, refs2 := batch(10, 20, limits)
	c.add(rs2, refs2, 15)
	testutil.Equals(t, 10, c.len())
	rs, _ = batch(0, 10, limits)
	testutil.Equals(t, make([]storage.SeriesRef, 10), rs.known)
	// A receivedSeries looked up in another map is not recorded in this one.
	rs.from = newSeriesRefs()
	c.add(rs, refs, 100)
	testutil.Equals(t, 10, c.len())
}

// TestSingleProcessSeriesRefs: with an in-process ingester as the only one (`strata all`), the distributor hands it
// the series' label runs of a 1.0 request, and the ingester appends the series it knows by them by reference
// (shown by giving two series each other's reference: their samples trade places); a series whose labels the
// distributor's validation changed (sorted) is not known by its bytes.
func TestSingleProcessSeriesRefs(t *testing.T) {
	p, ings := testRing(t, "single-process-refs", 1, false)
	ing := ings[0]
	cfg := DefaultPushConfig()
	cfg.ValidatedSeriesCacheSize = 0 // as `strata all` (setupDistributor): its ingester knows the series
	d := NewDistributor(cfg, tenancy.NewOverrides(testLimits(), nil), p, log.NewNopLogger(), prometheus.NewRegistry())
	h := tenancy.DefaultConfig().HTTPMiddleware(false)(NewPushHandler(d))
	post := func(series ...promprompb.TimeSeries) {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/api/v1/push", bytes.NewReader(encodeV1(t, series...)))
		req.Header.Set(tenancy.HeaderOrgID, "team-a")
		req.Header.Set("Content-Type", ctV1)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
	}
	const n = 10
	t0 := time.Now().UnixMilli()
	write := func(tms, step int64) {
		var series []promprompb.TimeSeries
		for k := range n {
			series = append(series, series1(tms+int64(k)*step, "__name__", "m", "s", fmt.Sprint(k)))
		}
		post(append(series, series1(tms, "s", "x", "__name__", "m"))...) // not sorted
	}
	write(t0, 0)
	refs := ing.get("team-a").refs
	testutil.Equals(t, n, refs.len())
	db := ing.DB("team-a").(*tsdb.DB)
	refOf := func(k int) storage.SeriesRef {
		lset := labels.FromStrings("__name__", "m", "s", fmt.Sprint(k))
		ref, _ := db.Appender(context.Background()).(storage.GetRef).GetRef(lset, lset.Hash())
		return ref
	}
	r0, r1 := refOf(0), refOf(1)
	swapRefs(refs, r0, r1)
	write(t0+1000, 1)
	got := readAll(t, ing, "team-a")
	name := func(s string) string { return fmt.Sprintf(`{__name__="m", s="%s", tenant_id="team-a"}`, s) }
	testutil.Equals(t, []int64{t0, t0 + 1001}, got[name("0")], "%v", got)
	testutil.Equals(t, []int64{t0, t0 + 1000}, got[name("1")])
	testutil.Equals(t, []int64{t0, t0 + 1002}, got[name("2")])
	testutil.Equals(t, []int64{t0, t0 + 1000}, got[name("x")])
	testutil.Equals(t, n, refs.len())

	// The distributor knows the series the ingester knows as validated (not the unsorted one), and decodes a
	// request without their labels; a sample of one refused is named all the same.
	body, err := snappy.Decode(nil, encodeV1(t, series1(t0, "__name__", "m", "s", "0"), series1(t0, "s", "x", "__name__", "m")))
	testutil.Ok(t, err)
	o := remotewrite.Options{KeepLabelRuns: true}
	_, err = remotewrite.DecodeV1(body, &o)
	testutil.Ok(t, err)
	known := d.lookupKnown("team-a", newSeriesValidator(d.overrides.ForTenant("team-a"), time.Now()).labelLimits(), o.LabelRuns())
	testutil.Equals(t, []bool{true, false}, known.known)
	req := httptest.NewRequest(http.MethodPost, "/api/v1/push", bytes.NewReader(encodeV1(t, series1(time.Now().Add(time.Hour).UnixMilli(), "__name__", "m", "s", "3"))))
	req.Header.Set(tenancy.HeaderOrgID, "team-a")
	req.Header.Set("Content-Type", ctV1)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	testutil.Equals(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	testutil.Assert(t, strings.Contains(rec.Body.String(), `s="3"`), rec.Body.String())
	write(t0+2000, 0)
	got = readAll(t, ing, "team-a")
	testutil.Equals(t, []int64{t0, t0 + 1003, t0 + 2000}, got[name("3")], "%v", got)
	testutil.Equals(t, []int64{t0, t0 + 1000, t0 + 2000}, got[name("x")])

	// Series the distributor drops ahead of known ones: the ingester's lookup follows the series it is handed
	// (each known series gets its own samples).
	req = httptest.NewRequest(http.MethodPost, "/api/v1/push", bytes.NewReader(encodeV1(t,
		series1(t0+3000, "__name__", "m", "bad-name", "y"), series1(t0+3000, "__name__", "m", "s", "4"),
		series1(t0+3005, "__name__", "m", "s", "5"), series1(t0+3000, "__name__", "m", "s", "6"))))
	req.Header.Set(tenancy.HeaderOrgID, "team-a")
	req.Header.Set("Content-Type", ctV1)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	testutil.Equals(t, http.StatusBadRequest, rec.Code, rec.Body.String()) // the valid ones written all the same
	got = readAll(t, ing, "team-a")
	testutil.Equals(t, []int64{t0, t0 + 1004, t0 + 2000, t0 + 3000}, got[name("4")], "%v", got)
	testutil.Equals(t, []int64{t0, t0 + 1005, t0 + 2000, t0 + 3005}, got[name("5")], "%v", got)
	testutil.Equals(t, []int64{t0, t0 + 1006, t0 + 2000, t0 + 3000}, got[name("6")], "%v", got)
}

// TestIngesterSeriesRefsOfAReopenedTSDB: references are of one TSDB. A forwarded write looked up in a tenant's TSDB
// that is closed as idle before it appends (and opened again, numbering its series anew, in another order) is
// looked up again in the TSDB it appends to: its series get their own samples.
func TestIngesterSeriesRefsOfAReopenedTSDB(t *testing.T) {
	const n = 10
	dir := t.TempDir()
	now := time.Unix(1_750_000_000, 0)
	ing := newIdleClosingIngester(t, dir, func() time.Time { return now })
	// request writes series k at tms+k, in order or reversed.
	request := func(tms int64, reversed bool) *storepb.WriteRequest {
		req := &storepb.WriteRequest{Tenant: "a"}
		for k := range n {
			if reversed {
				k = n - 1 - k
			}
			req.Timeseries = append(req.Timeseries, ts(series("m", "s", fmt.Sprint(k)), tms+int64(k)))
		}
		return req
	}
	// runs are the series' labels as the decoder finds them: the label fields of each series.
	runs := func(req *storepb.WriteRequest) [][]byte {
		var out [][]byte
		for _, s := range req.Timeseries {
			b, err := (&prompb.TimeSeries{Labels: s.Labels}).MarshalVT()
			testutil.Ok(t, err)
			out = append(out, b)
		}
		return out
	}
	t0 := now.UnixMilli()
	testutil.Ok(t, remoteWriteWire(context.Background(), ing, request(t0, false)))

	// Looked up in the TSDB as it is now (every series known)...
	late := request(now.Add(3*time.Hour).UnixMilli(), false)
	rs := ing.received.get(runs(late), newSeriesValidator(ing.overrides.ForTenant("a"), now).labelLimits())
	ing.get("a").refs.lookup(rs)
	for k := range n {
		testutil.Assert(t, rs.known[k] != 0, "series %d is not known", k)
	}
	// ... which is then closed as idle, and opened again by a write of the series in the other order.
	now = now.Add(2 * time.Hour)
	closeIdle(t, ing, dir, "a")
	t1 := now.UnixMilli()
	testutil.Ok(t, remoteWriteWire(context.Background(), ing, request(t1, true)))

	testutil.Ok(t, ing.push(context.Background(), "a", late, rs))
	got := readAll(t, ing, "a")
	for k := range n {
		testutil.Equals(t, []int64{t1 + int64(k), late.Timeseries[k].Samples[0].Timestamp}, got[fmt.Sprintf(`{__name__="m", s="%d", tenant_id="a"}`, k)], "series %d", k)
	}
}

// decodeForwarded decodes req as the gRPC handler does (remoteWriteRaw), the series the ingester knows
// without their labels.
func decodeForwarded(t *testing.T, ing *Ingester, req *storepb.WriteRequest) *forwardedWrite {
	t.Helper()
	b, err := req.MarshalVT()
	testutil.Ok(t, err)
	w := &forwardedWrite{}
	testutil.Ok(t, w.UnmarshalInPlace(b, func() {}))
	w.skipKnown = func(w *forwardedWrite, runs [][]byte) []bool {
		return ing.skipKnownLabels(context.Background(), w, runs)
	}
	testutil.Ok(t, w.decodeRaw())
	return w
}

// TestIngesterSkippedLabelsOfAReopenedTSDB: series decoded without their labels, known to a tenant's TSDB that is
// then closed as idle, are appended to the TSDB opened again (which knows none of them) by the labels of their
// bytes.
func TestIngesterSkippedLabelsOfAReopenedTSDB(t *testing.T) {
	const n = 10
	dir := t.TempDir()
	now := time.Unix(1_750_000_000, 0)
	ing := newIdleClosingIngester(t, dir, func() time.Time { return now })
	request := func(tms int64) *storepb.WriteRequest {
		req := &storepb.WriteRequest{Tenant: "a"}
		for k := range n {
			req.Timeseries = append(req.Timeseries, ts(series("m", "s", fmt.Sprint(k)), tms+int64(k)))
		}
		return req
	}
	t0 := now.UnixMilli()
	testutil.Ok(t, remoteWriteWire(context.Background(), ing, request(t0)))

	late := request(now.Add(2 * time.Hour).UnixMilli()) // valid once the clock has moved on
	w := decodeForwarded(t, ing, late)
	for k, ts := range w.series {
		testutil.Equals(t, 0, len(ts.Labels), "series %d was decoded with its labels", k)
	}
	now = now.Add(2 * time.Hour)
	closeIdle(t, ing, dir, "a")

	_, err := ing.remoteWriteForwarded(context.Background(), w)
	testutil.Ok(t, err)
	testutil.Equals(t, uint64(n), ing.DB("a").(*tsdb.DB).Head().NumSeries())
	got := readAll(t, ing, "a")
	for k := range n {
		testutil.Equals(t, []int64{late.Timeseries[k].Samples[0].Timestamp}, got[fmt.Sprintf(`{__name__="m", s="%d", tenant_id="a"}`, k)], "series %d: %v", k, got)
	}
}

// newIdleClosingIngester returns an ingester in dir of clock now, whose idle TSDBs close after an hour, their
// blocks shipped by a countingShipper.
func newIdleClosingIngester(t *testing.T, dir string, now func() time.Time) *Ingester {
	t.Helper()
	ing := newTestIngester(t, dir, nil, prometheus.NewRegistry(), WithIngesterClock(now),
		WithShippers(func(tenant, d string, lbls labels.Labels, _ prometheus.Registerer) (Shipper, error) {
			return &countingShipper{dir: d}, nil
		}))
	t.Cleanup(func() { _ = ing.Close() })
	ing.cfg.CloseIdleTSDBTimeout = time.Hour
	return ing
}

// closeIdle cuts tenant's head into a block, marks it shipped and closes the TSDB as idle (the clock past
// CloseIdleTSDBTimeout).
func closeIdle(t *testing.T, ing *Ingester, dir, tenant string) {
	t.Helper()
	db := ing.DB(tenant).(*tsdb.DB)
	testutil.Ok(t, compactHead(db, ing.cfg.BlockDuration.Milliseconds()))
	testutil.Ok(t, db.Head().Truncate(math.MaxInt64))
	var ids []ulid.ULID
	for _, b := range db.Blocks() {
		ids = append(ids, b.Meta().ULID)
	}
	testutil.Ok(t, block.WriteShipperMeta(log.NewNopLogger(), filepath.Join(dir, tenant), &block.ShipperMeta{Version: 1, Uploaded: ids}))
	testutil.Equals(t, []string{tenant}, ing.CloseIdle())
}

// swapRefs gives the series of references a and b each other's.
func swapRefs(c *seriesRefs, a, b storage.SeriesRef) {
	for i := range c.t.slots {
		switch e := &c.t.slots[i]; storage.SeriesRef(e.v) {
		case a:
			e.v = uint64(b)
		case b:
			e.v = uint64(a)
		}
	}
}

// TestRingPusherFillsSkippedLabelsForLocalIngesters: series decoded without their labels (known while `strata
// all`'s ingester was the ring's only one) reach in-process ingesters of a ring of several with their labels,
// decoded from their runs, and are stored as sent.
func TestRingPusherFillsSkippedLabelsForLocalIngesters(t *testing.T) {
	p, ings := testRing(t, "fill-skipped", 3, false)
	t0 := time.Now().UnixMilli()
	body, err := snappy.Decode(nil, encodeV1(t, series1(t0, "__name__", "m", "s", "0"), series1(t0, "__name__", "m", "s", "1")))
	testutil.Ok(t, err)
	o := remotewrite.Options{KeepFrames: true, SkipLabels: func(runs [][]byte) []bool { return []bool{true, true} }}
	series, err := remotewrite.DecodeV1(body, &o)
	testutil.Ok(t, err)
	for _, ts := range series {
		testutil.Equals(t, 0, len(ts.Labels))
	}
	released := make(chan struct{})
	testutil.Ok(t, p.PushFrames(context.Background(), "team-a", &storepb.WriteRequest{Tenant: "team-a", Timeseries: series},
		o.Frames(), o.LabelRuns(), nil, func() { close(released) }))
	<-released
	for i, ing := range ings {
		got := readAll(t, ing, "team-a")
		for _, s := range []string{"0", "1"} {
			testutil.Equals(t, []int64{t0}, got[fmt.Sprintf(`{__name__="m", s="%s", tenant_id="team-a"}`, s)], "ingester %d: %v", i, got)
		}
	}
}

// TestPushRunsTakesTheDistributorsLookup: `strata all`'s distributor looks the series up in its ingester before it
// validates them (knownValid), and the push appends by that lookup rather than looking them up again: shown by
// swapping two series' references in the table after the lookup — the push goes by the references looked up, and
// a push without the hand-over by the swapped ones. The hand-over is taken once.
func TestPushRunsTakesTheDistributorsLookup(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry(), WithIngesterClock(func() time.Time { return now }))
	defer ing.Close()
	t0 := now.UnixMilli()
	request := func(tms int64) (*storepb.WriteRequest, [][]byte) {
		req := &storepb.WriteRequest{Tenant: "a"}
		var runs [][]byte
		for k := range 2 {
			s := ts(series("m", "s", fmt.Sprint(k)), tms)
			b, err := (&prompb.TimeSeries{Labels: s.Labels}).MarshalVT()
			testutil.Ok(t, err)
			req.Timeseries, runs = append(req.Timeseries, s), append(runs, b)
		}
		return req, runs
	}
	limits := newSeriesValidator(ing.overrides.ForTenant("a"), now).labelLimits()
	req, runs := request(t0)
	testutil.Ok(t, ing.pushRuns(context.Background(), "a", req, runs))
	db := ing.DB("a").(*tsdb.DB)
	refOf := func(k int) storage.SeriesRef {
		lset := labels.FromStrings("__name__", "m", "s", fmt.Sprint(k))
		ref, _ := db.Appender(context.Background()).(storage.GetRef).GetRef(lset, lset.Hash())
		return ref
	}
	name := func(k int) string { return fmt.Sprintf(`{__name__="m", s="%d", tenant_id="a"}`, k) }

	req, runs = request(t0 + 1000)
	req.Timeseries[0].Samples[0].Timestamp++ // series 0 at t0+1001, series 1 at t0+1000
	known := make([]bool, 2)
	looked, ok := ing.knownValid("a", limits, runs, known)
	testutil.Assert(t, ok)
	testutil.Equals(t, []bool{true, true}, known)
	swapRefs(ing.get("a").refs, refOf(0), refOf(1))
	ctx := withLookedUp(context.Background(), looked)
	testutil.Ok(t, ing.pushRuns(ctx, "a", req, runs))
	got := readAll(t, ing, "a")
	testutil.Equals(t, []int64{t0, t0 + 1001}, got[name(0)], "%v", got)
	testutil.Equals(t, []int64{t0, t0 + 1000}, got[name(1)])
	testutil.Equals(t, nil, takeLookedUp(ctx))

	// Without it, the table (swapped) is looked up: the two trade this sample.
	req, runs = request(t0 + 2000)
	req.Timeseries[0].Samples[0].Timestamp++
	testutil.Ok(t, ing.pushRuns(ctx, "a", req, runs))
	got = readAll(t, ing, "a")
	testutil.Equals(t, []int64{t0, t0 + 1001, t0 + 2000}, got[name(0)], "%v", got)
	testutil.Equals(t, []int64{t0, t0 + 1000, t0 + 2001}, got[name(1)])
}

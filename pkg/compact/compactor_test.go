package compact

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// shipBlock writes a block of nSeries series with a sample every 15s in [mint, maxt) (ms) and uploads it to the
// tenant's bucket as an ingester does, with external labels lset.
func shipBlock(t *testing.T, bkt objstore.Bucket, tenant string, lset map[string]string, nSeries int, mint, maxt int64) *block.Meta {
	t.Helper()
	return shipBlockSeries(t, bkt, tenant, lset, nil, nSeries, mint, maxt)
}

// shipBlockSeries is shipBlock with extra labels in every series.
func shipBlockSeries(t *testing.T, bkt objstore.Bucket, tenant string, lset, extra map[string]string, nSeries int, mint, maxt int64) *block.Meta {
	t.Helper()
	var ss []storage.Series
	for i := range nSeries {
		var smpls []chunks.Sample
		for ts := mint; ts < maxt; ts += 15000 {
			smpls = append(smpls, tsample{t: ts, f: float64(ts/1000 + int64(i))})
		}
		b := labels.NewBuilder(labels.FromStrings("__name__", "m", "i", string(rune('a'+i))))
		for k, v := range extra {
			b.Set(k, v)
		}
		ss = append(ss, storage.NewListSeries(b.Labels(), smpls))
	}
	dir, err := tsdb.CreateBlock(ss, t.TempDir(), 0, slog.New(slog.DiscardHandler))
	testutil.Ok(t, err)
	m, err := block.ReadMetaFromDir(dir)
	testutil.Ok(t, err)
	m.Thanos.Labels, m.Thanos.Source = lset, block.ReceiveSource
	testutil.Ok(t, block.Upload(context.Background(), log.NewNopLogger(), objstore.NewPrefixedBucket(bkt, tenant), dir, m))
	return m
}

// liveBlocks lists the bucket's live blocks: with meta.json, not marked for deletion.
func liveBlocks(t *testing.T, bkt objstore.Bucket, tenant string) map[ulid.ULID]*block.Meta {
	t.Helper()
	tb, err := ScanTenant(context.Background(), log.NewNopLogger(), objstore.NewPrefixedBucket(bkt, tenant), 4)
	testutil.Ok(t, err)
	out := map[ulid.ULID]*block.Meta{}
	for _, m := range tb.Live() {
		out[m.ULID] = m
	}
	return out
}

func sumSamples(metas map[ulid.ULID]*block.Meta) uint64 {
	var n uint64
	for _, m := range metas {
		n += m.Stats.NumSamples
	}
	return n
}

func newTestCompactor(t *testing.T, bkt objstore.Bucket, reg prometheus.Registerer, ranges ...time.Duration) *Compactor {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BlockRanges = ranges
	cfg.Normalise.Enabled = false // TestCompactorNormalisesFirst covers it
	c, err := New(cfg, bkt, t.TempDir(), nil, log.NewNopLogger(), reg, func() time.Time { return time.Now().Add(time.Hour) })
	testutil.Ok(t, err)
	return c
}

const hourMs = int64(time.Hour / time.Millisecond)

func TestCompactorMergesReplicasAndLevels(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	lset := map[string]string{"tenant_id": "t1"}
	// RF 3: three copies of each of four 1h ranges, and one sidecar-like block of another group.
	var unique uint64
	for h := int64(0); h < 4; h++ {
		for range 3 {
			shipBlock(t, bkt, "t1", lset, 3, h*hourMs, (h+1)*hourMs)
		}
		unique += 3 * 240
	}
	other := shipBlock(t, bkt, "t1", map[string]string{"tenant_id": "t1", "cluster": "eu"}, 2, 0, hourMs)
	unique += other.Stats.NumSamples
	reg := prometheus.NewRegistry()
	c := newTestCompactor(t, bkt, reg, time.Hour, 2*time.Hour)

	testutil.Equals(t, 13, len(liveBlocks(t, bkt, "t1")))
	testutil.Ok(t, c.RunOnce(ctx))
	live := liveBlocks(t, bkt, "t1")
	testutil.Equals(t, unique, sumSamples(live))
	// [0,2h) leveled from two merged 1h blocks; [2h,3h) merged and [3h,4h) merged (the newest waits for its
	// range); the other group's single block untouched.
	var spans []int64
	for _, m := range live {
		if m.ULID != other.ULID {
			testutil.Equals(t, block.CompactorSource, m.Thanos.Source)
			testutil.Equals(t, lset, m.Thanos.Labels)
			spans = append(spans, (m.MaxTime-m.MinTime+hourMs/2)/hourMs)
		}
	}
	testutil.Equals(t, 4, len(live), "%v", spans)
	testutil.Equals(t, []int64{2, 1, 1}, sorted(spans))
	testutil.Equals(t, 5.0, promtestutil.ToFloat64(c.metrics.groupsCompacted)) // four merges, one leveling
	testutil.Equals(t, 14.0, promtestutil.ToFloat64(c.metrics.blocksMarkedDel))
	testutil.Equals(t, 0.0, promtestutil.ToFloat64(c.metrics.oldestUncompacted.WithLabelValues("t1")))
	testutil.Assert(t, promtestutil.ToFloat64(c.metrics.lastSuccess) > 0)

	// A second run finds nothing to do.
	testutil.Ok(t, c.RunOnce(ctx))
	testutil.Equals(t, live, liveBlocks(t, bkt, "t1"))
	testutil.Equals(t, 5.0, promtestutil.ToFloat64(c.metrics.groupsCompacted))
	entries, err := os.ReadDir(c.workDir)
	testutil.Ok(t, err)
	testutil.Equals(t, 0, len(entries), "work dir cleaned")
}

// TestCompactorFinishesInterruptedCompaction: killed after the upload of the result and before the deletion
// marks of its sources, or in the middle of the upload, the next run neither compacts again nor serves a
// partial block.
func TestCompactorFinishesInterruptedCompaction(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		crash   func(t *testing.T, bkt objstore.Bucket, result ulid.ULID)
		wantNew bool // whether the next run compacts anew
	}{
		{name: "between upload and marks", crash: func(t *testing.T, bkt objstore.Bucket, _ ulid.ULID) {
			removeMarks(t, bkt)
		}},
		{name: "between the marks of two sources", crash: func(t *testing.T, bkt objstore.Bucket, _ ulid.ULID) {
			removeMarks(t, bkt, 1)
		}},
		{name: "during the upload", wantNew: true, crash: func(t *testing.T, bkt objstore.Bucket, result ulid.ULID) {
			removeMarks(t, bkt)
			testutil.Ok(t, bkt.Delete(ctx, "t1/"+result.String()+"/meta.json"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bkt := objstore.NewInMemBucket()
			lset := map[string]string{"tenant_id": "t1"}
			for range 3 {
				shipBlock(t, bkt, "t1", lset, 2, 0, hourMs)
			}
			c := newTestCompactor(t, bkt, nil, time.Hour, 2*time.Hour)
			testutil.Ok(t, c.RunOnce(ctx))
			live := liveBlocks(t, bkt, "t1")
			testutil.Equals(t, 1, len(live))
			var result ulid.ULID
			for id := range live {
				result = id
			}
			tc.crash(t, bkt, result)

			c = newTestCompactor(t, bkt, nil, time.Hour, 2*time.Hour) // a restarted compactor
			testutil.Ok(t, c.RunOnce(ctx))
			after := liveBlocks(t, bkt, "t1")
			testutil.Equals(t, 1, len(after))
			testutil.Equals(t, uint64(2*240), sumSamples(after))
			_, same := after[result]
			testutil.Equals(t, !tc.wantNew, same)
			testutil.Equals(t, boolToFloat(tc.wantNew), promtestutil.ToFloat64(c.metrics.groupsCompacted))
		})
	}
}

func sorted(s []int64) []int64 {
	slices.Sort(s)
	slices.Reverse(s)
	return s
}

func boolToFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// removeMarks removes the deletion marks (both copies) of the first n marked blocks (all when none given).
func removeMarks(t *testing.T, bkt objstore.Bucket, keep ...int) {
	t.Helper()
	ctx := context.Background()
	var marked []ulid.ULID
	testutil.Ok(t, bkt.Iter(ctx, "t1/markers/", func(name string) error {
		id, err := ulid.Parse(filepath.Base(name)[:26])
		testutil.Ok(t, err)
		marked = append(marked, id)
		return nil
	}))
	if len(keep) > 0 {
		marked = marked[keep[0]:]
	}
	for _, id := range marked {
		testutil.Ok(t, bkt.Delete(ctx, "t1/"+block.DeletionMarkFilepath(id)))
		testutil.Ok(t, bkt.Delete(ctx, "t1/"+id.String()+"/"+block.DeletionMarkFilename))
	}
}

// TestCompactorCorruptedBlock: a block whose chunks cannot be read gets a no-compact mark with the reason; the
// rest of its group is compacted without it, and the other groups and tenants are compacted too.
func TestCompactorCorruptedBlock(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	lset := map[string]string{"tenant_id": "t1"}
	var metas []*block.Meta
	for range 3 {
		metas = append(metas, shipBlock(t, bkt, "t1", lset, 2, 0, hourMs))
	}
	for range 2 {
		shipBlock(t, bkt, "t2", map[string]string{"tenant_id": "t2"}, 2, 0, hourMs)
	}
	bad := metas[1].ULID
	chunksFile := "t1/" + bad.String() + "/chunks/000001"
	testutil.Ok(t, bkt.Upload(ctx, chunksFile, bytes.NewReader([]byte{0x85, 0xBD, 0x40, 0xDD, 1, 0, 0, 0, 9})))
	reg := prometheus.NewRegistry()
	c := newTestCompactor(t, bkt, reg, time.Hour, 2*time.Hour)
	testutil.Ok(t, c.RunOnce(ctx))

	mark, err := block.ReadNoCompactMark(ctx, objstore.NewPrefixedBucket(bkt, "t1"), bad)
	testutil.Ok(t, err)
	testutil.Equals(t, CorruptedNoCompactReason, mark.Reason)
	testutil.Assert(t, mark.Details != "")
	testutil.Equals(t, 1.0, promtestutil.ToFloat64(c.metrics.blocksNoCompact.WithLabelValues(string(CorruptedNoCompactReason))))

	live := liveBlocks(t, bkt, "t1")
	testutil.Equals(t, 2, len(live)) // the corrupted block and the merge of the two others
	_, ok := live[bad]
	testutil.Assert(t, ok)
	testutil.Equals(t, 1, len(liveBlocks(t, bkt, "t2")))
	testutil.Equals(t, 2.0, promtestutil.ToFloat64(c.metrics.groupsCompacted))

	// The next run leaves the marked block alone.
	testutil.Ok(t, c.RunOnce(ctx))
	testutil.Equals(t, live, liveBlocks(t, bkt, "t1"))

	// The status page shows the block and why, nothing planned, nothing failed.
	rec := httptest.NewRecorder()
	c.TenantsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/compactor/tenants?format=json", nil))
	var status []TenantStatus
	testutil.Ok(t, json.Unmarshal(rec.Body.Bytes(), &status))
	testutil.Equals(t, 2, len(status))
	testutil.Equals(t, "t1", status[0].Tenant)
	testutil.Equals(t, 1, len(status[0].NoCompact))
	testutil.Equals(t, bad.String(), status[0].NoCompact[0].Block)
	testutil.Equals(t, string(CorruptedNoCompactReason), status[0].NoCompact[0].Reason)
	testutil.Equals(t, 0, len(status[0].PlannedGroups))
	testutil.Equals(t, 0, len(status[0].FailedGroups)+len(status[0].FailedSteps))
	testutil.Equals(t, 2, status[0].LiveBlocks)
	rec = httptest.NewRecorder()
	c.TenantsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/compactor/tenants", nil))
	testutil.Assert(t, strings.Contains(rec.Body.String(), bad.String()+": "+string(CorruptedNoCompactReason)), rec.Body.String())
}

// TestCompactorGroupFailureDoesNotStopOthers: a bucket error in one tenant's group is reported and retried
// next cycle; the other tenant is compacted in the same cycle.
func TestCompactorGroupFailureDoesNotStopOthers(t *testing.T) {
	ctx := context.Background()
	inmem := objstore.NewInMemBucket()
	for _, tenant := range []string{"t1", "t2"} {
		for range 2 {
			shipBlock(t, inmem, tenant, map[string]string{"tenant_id": tenant}, 1, 0, hourMs)
		}
	}
	bkt := &failingGetBucket{Bucket: inmem, failPrefix: "t1/", failing: true}
	c := newTestCompactor(t, bkt, nil, time.Hour, 2*time.Hour)
	testutil.NotOk(t, c.RunOnce(ctx))
	testutil.Equals(t, 2, len(liveBlocks(t, inmem, "t1")))
	testutil.Equals(t, 1, len(liveBlocks(t, inmem, "t2")))
	testutil.Equals(t, 1.0, promtestutil.ToFloat64(c.metrics.groupsFailed))
	status := c.Status()
	testutil.Equals(t, 1, len(status[0].FailedGroups), "%+v", status[0])
	testutil.Equals(t, 1, len(status[0].PlannedGroups), "%+v", status[0])
	testutil.Assert(t, !status[0].OldestUncompacted.IsZero())
	testutil.Equals(t, 0, len(status[1].FailedGroups)+len(status[1].PlannedGroups), "%+v", status[1])

	bkt.failing = false
	testutil.Ok(t, c.RunOnce(ctx))
	testutil.Equals(t, 1, len(liveBlocks(t, inmem, "t1")))
	testutil.Equals(t, 0, len(c.Status()[0].FailedGroups))
}

// failingGetBucket fails the reads of blocks' index and chunks under failPrefix while failing is set.
type failingGetBucket struct {
	objstore.Bucket
	failPrefix string
	failing    bool
}

func (b *failingGetBucket) Get(ctx context.Context, name string) (_ io.ReadCloser, err error) {
	if b.failing && strings.HasPrefix(name, b.failPrefix) && (strings.Contains(name, "/chunks/") || strings.HasSuffix(name, "/index")) {
		return nil, errors.New("injected bucket error")
	}
	return b.Bucket.Get(ctx, name)
}

// TestCompactorNormalisesFirst: a sidecar block (cluster=eu as an external label) and the pushed replicas of the
// same series (cluster=eu in the series) end up as one block holding each sample once.
func TestCompactorNormalisesFirst(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	for range 2 {
		shipBlockSeries(t, bkt, "t1", map[string]string{"tenant_id": "t1"}, map[string]string{"cluster": "eu"}, 2, 0, hourMs)
	}
	shipBlock(t, bkt, "t1", map[string]string{"tenant_id": "t1", "cluster": "eu"}, 2, 0, hourMs)
	cfg := DefaultConfig()
	cfg.BlockRanges = []time.Duration{time.Hour, 2 * time.Hour}
	cfg.ConsistencyDelay = 0
	c, err := New(cfg, bkt, t.TempDir(), nil, log.NewNopLogger(), nil, func() time.Time { return time.Now().Add(time.Hour) })
	testutil.Ok(t, err)
	testutil.Ok(t, c.RunOnce(ctx))
	live := liveBlocks(t, bkt, "t1")
	testutil.Equals(t, 1, len(live))
	testutil.Equals(t, uint64(2*240), sumSamples(live))
	for _, m := range live {
		testutil.Equals(t, map[string]string{"tenant_id": "t1"}, m.Thanos.Labels)
		testutil.Equals(t, 3, len(m.Compaction.Sources)) // two pushed and the sidecar's (its normalised copy keeps its sources)
	}
	// The cycle wrote the bucket index, which lists the result.
	idx, err := block.ReadBucketIndex(ctx, objstore.NewPrefixedBucket(bkt, "t1"))
	testutil.Ok(t, err)
	testutil.Assert(t, idx != nil)
	var indexed int
	for _, b := range idx.Blocks {
		if _, ok := live[b.ID]; ok {
			indexed++
		}
	}
	testutil.Equals(t, 1, indexed)
}

// TestCompactorRunFirstDelay: Run waits firstDelay before its first cycle, and runs it at once without one.
func TestCompactorRunFirstDelay(t *testing.T) {
	for _, tc := range []struct {
		delay      time.Duration
		wantCycles float64
	}{{delay: 0, wantCycles: 1}, {delay: time.Hour, wantCycles: 0}} {
		bkt := objstore.NewInMemBucket()
		c := newTestCompactor(t, bkt, nil, time.Hour, 2*time.Hour)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- c.Run(ctx, tc.delay) }()
		deadline := time.Now().Add(5 * time.Second)
		for tc.wantCycles > 0 && promtestutil.ToFloat64(c.metrics.runs) < tc.wantCycles && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		cancel()
		testutil.Ok(t, <-done)
		testutil.Equals(t, tc.wantCycles, promtestutil.ToFloat64(c.metrics.runs), "delay %s", tc.delay)
	}
}

// TestCompactorThanosMarks: marks written the way Thanos's tools write them (in the block's directory only, no
// markers/ mirror) are honoured: a no-compact-marked block stays out, a deletion-marked one is not compacted.
func TestCompactorThanosMarks(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	lset := map[string]string{"tenant_id": "t1"}
	var metas []*block.Meta
	for range 4 {
		metas = append(metas, shipBlock(t, bkt, "t1", lset, 1, 0, hourMs))
	}
	noCompact, deleted := metas[0].ULID, metas[1].ULID
	testutil.Ok(t, bkt.Upload(ctx, "t1/"+noCompact.String()+"/"+block.NoCompactMarkFilename,
		strings.NewReader(`{"id":"`+noCompact.String()+`","version":1,"reason":"manual","no_compact_time":1}`)))
	testutil.Ok(t, bkt.Upload(ctx, "t1/"+deleted.String()+"/"+block.DeletionMarkFilename,
		strings.NewReader(`{"id":"`+deleted.String()+`","version":1,"deletion_time":`+strconv.FormatInt(time.Now().Unix(), 10)+`}`)))
	c := newTestCompactor(t, bkt, nil, time.Hour, 2*time.Hour)
	testutil.Ok(t, c.RunOnce(ctx))
	live := liveBlocks(t, bkt, "t1")
	testutil.Equals(t, 2, len(live)) // the no-compact block and the merge of the two unmarked ones
	_, ok := live[noCompact]
	testutil.Assert(t, ok, "no-compact block compacted")
	for id, m := range live {
		if id != noCompact {
			testutil.Equals(t, 2, len(m.Compaction.Sources))
		}
	}
}

// TestCompactorConsistencyDelay: blocks uploaded less than the consistency delay ago wait for a later cycle.
func TestCompactorConsistencyDelay(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	for range 3 {
		shipBlock(t, bkt, "t1", map[string]string{"tenant_id": "t1"}, 1, 0, hourMs)
	}
	shipped := time.Now()
	for _, tc := range []struct {
		after     time.Duration
		wantLive  int
		wantGroup float64
	}{{after: 10 * time.Minute, wantLive: 3}, {after: 31 * time.Minute, wantLive: 1, wantGroup: 1}} {
		cfg := DefaultConfig()
		cfg.BlockRanges = []time.Duration{time.Hour, 2 * time.Hour}
		c, err := New(cfg, bkt, t.TempDir(), nil, log.NewNopLogger(), nil, func() time.Time { return shipped.Add(tc.after) })
		testutil.Ok(t, err)
		testutil.Ok(t, c.RunOnce(ctx))
		testutil.Equals(t, tc.wantLive, len(liveBlocks(t, bkt, "t1")), "after %s", tc.after)
		testutil.Equals(t, tc.wantGroup, promtestutil.ToFloat64(c.metrics.groupsCompacted), "after %s", tc.after)
	}
}

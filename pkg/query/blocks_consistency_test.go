package query

import (
	"bytes"
	"context"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storetest"
)

// uploadTestMeta uploads the meta.json of fixture block i of blocksTestTenant (no index or chunks: the fake
// gateways serve the data), uploaded at uploaded.
func uploadTestMeta(t testing.TB, bkt objstore.Bucket, i int, uploaded time.Time) {
	t.Helper()
	ref := blockTestRef(i)
	m := &block.Meta{
		BlockMeta: tsdb.BlockMeta{ULID: ref.ID, MinTime: ref.MinTime, MaxTime: ref.MaxTime, Version: block.TSDBVersion1},
		Thanos:    block.ThanosMeta{Labels: map[string]string{"tenant_id": blocksTestTenant}, Source: block.ReceiveSource, UploadTime: uploaded},
	}
	var buf bytes.Buffer
	testutil.Ok(t, m.Write(&buf))
	testutil.Ok(t, bkt.Upload(context.Background(), path.Join(blocksTestTenant, ref.ID.String(), block.MetaFilename), &buf))
}

// The consistency check: blocks no store-gateway confirmed, after their retries, make the querier read the block
// list again at once (not at its refresh interval) and re-plan. Blocks gone from the list (deleted, without
// meta.json, marked for deletion longer ago than the delay) are no longer required, so the query succeeds
// without them even when it aborts on partial responses; blocks new in the list are queried; a block still
// listed that no gateway has fails the query (or ends the stream with Unavailable, partial response allowed),
// naming it. A block marked for deletion less than the delay ago is still queried and its data served; past
// the delay it is neither asked for nor required, whether the list was read before or after the delay passed.
func TestBlocksStore_ConsistencyCheck(t *testing.T) {
	const (
		refresh = time.Hour // never by interval in these tests: only a re-plan reads the list again
		grace   = 10 * time.Minute
		delay   = time.Hour
	)
	t0 := time.Unix(1_800_000_000, 0)
	uploaded := t0.Add(-2 * time.Hour)
	b := func(i int) string { return blockTestID(i).String() }
	tbktOf := func(bkt objstore.Bucket) objstore.Bucket { return objstore.NewPrefixedBucket(bkt, blocksTestTenant) }
	markAt := func(t *testing.T, bkt objstore.Bucket, i int, at time.Time) {
		testutil.Ok(t, block.MarkForDeletion(context.Background(), log.NewNopLogger(), tbktOf(bkt), blockTestID(i), "test", func() time.Time { return at }))
	}
	for _, tc := range []struct {
		name string
		// held are the blocks the gateways (g1 first owner of every block, g2 second) serve.
		held []int
		// before changes the bucket before the querier first reads it; after, between that read (the plan's
		// list) and the query. later is how long after t0 the query runs.
		before, after func(t *testing.T, bkt objstore.Bucket)
		later         time.Duration
		strategy      storepb.PartialResponseStrategy

		want         []wantBlocksSeries
		wantCode     codes.Code
		wantErrParts []string
		wantAsked    []string // blocks asked of g1 in its first request, sorted
		wantReplans  float64
		wantGone     float64
		wantFailed   float64
	}{
		{
			name: "meta.json deleted after the plan (the first step of a delete): not required after a refresh",
			held: []int{0, 2},
			after: func(t *testing.T, bkt objstore.Bucket) {
				testutil.Ok(t, bkt.Delete(context.Background(), path.Join(blocksTestTenant, b(1), block.MetaFilename)))
			},
			strategy:    storepb.PartialResponseStrategy_ABORT,
			want:        []wantBlocksSeries{{lset: `{__name__="other"}`, blocks: []int{2}}, {lset: `{__name__="up", job="a"}`, blocks: []int{0, 2}}},
			wantAsked:   []string{b(0), b(1), b(2)},
			wantReplans: 1,
			wantGone:    1,
		},
		{
			name: "block deleted after the plan: not required after a refresh",
			held: []int{0, 2},
			after: func(t *testing.T, bkt objstore.Bucket) {
				testutil.Ok(t, block.Delete(context.Background(), log.NewNopLogger(), tbktOf(bkt), blockTestID(1)))
			},
			strategy:    storepb.PartialResponseStrategy_ABORT,
			want:        []wantBlocksSeries{{lset: `{__name__="other"}`, blocks: []int{2}}, {lset: `{__name__="up", job="a"}`, blocks: []int{0, 2}}},
			wantAsked:   []string{b(0), b(1), b(2)},
			wantReplans: 1,
			wantGone:    1,
		},
		{
			name: "marked for deletion longer ago than the delay, unknown to the plan: not required after a refresh",
			held: []int{0, 2},
			after: func(t *testing.T, bkt objstore.Bucket) {
				markAt(t, bkt, 1, t0.Add(-delay-time.Minute))
			},
			strategy:    storepb.PartialResponseStrategy_ABORT,
			want:        []wantBlocksSeries{{lset: `{__name__="other"}`, blocks: []int{2}}, {lset: `{__name__="up", job="a"}`, blocks: []int{0, 2}}},
			wantAsked:   []string{b(0), b(1), b(2)},
			wantReplans: 1,
			wantGone:    1,
		},
		{
			name: "a block replaced after the plan (compacted): the old one not required, the new one queried",
			held: []int{0, 2},
			before: func(t *testing.T, bkt objstore.Bucket) {
				testutil.Ok(t, bkt.Delete(context.Background(), path.Join(blocksTestTenant, b(2), block.MetaFilename)))
			},
			after: func(t *testing.T, bkt objstore.Bucket) {
				testutil.Ok(t, block.Delete(context.Background(), log.NewNopLogger(), tbktOf(bkt), blockTestID(1)))
				uploadTestMeta(t, bkt, 2, uploaded)
			},
			strategy:    storepb.PartialResponseStrategy_ABORT,
			want:        []wantBlocksSeries{{lset: `{__name__="other"}`, blocks: []int{2}}, {lset: `{__name__="up", job="a"}`, blocks: []int{0, 2}}},
			wantAsked:   []string{b(0), b(1)},
			wantReplans: 1,
			wantGone:    1,
		},
		{
			name:         "still listed, no gateway has it: the query fails naming the block, after both owners and a refresh",
			held:         []int{0, 2},
			strategy:     storepb.PartialResponseStrategy_ABORT,
			wantCode:     codes.Unavailable,
			wantErrParts: []string{"1 blocks could not be queried", b(1)},
			wantAsked:    []string{b(0), b(1), b(2)},
			wantReplans:  1,
			wantFailed:   1,
		},
		{
			name:     "still listed, no gateway has it, partial response: the other blocks, then Unavailable naming it",
			held:     []int{0, 2},
			strategy: storepb.PartialResponseStrategy_WARN,
			want: []wantBlocksSeries{
				{lset: `{__name__="other"}`, blocks: []int{2}},
				{lset: `{__name__="up", job="a"}`, blocks: []int{0, 2}},
			},
			wantCode:     codes.Unavailable,
			wantErrParts: []string{b(1)},
			wantAsked:    []string{b(0), b(1), b(2)},
			wantReplans:  1,
			wantFailed:   1,
		},
		{
			name: "marked for deletion less than the delay ago: still queried and served",
			held: []int{0, 1, 2},
			before: func(t *testing.T, bkt objstore.Bucket) {
				markAt(t, bkt, 1, t0.Add(-delay+time.Minute))
			},
			strategy:  storepb.PartialResponseStrategy_ABORT,
			want:      completeBlocksSeries(),
			wantAsked: []string{b(0), b(1), b(2)},
		},
		{
			name: "marked for deletion longer ago than the delay: neither asked for nor required",
			held: []int{0, 2},
			before: func(t *testing.T, bkt objstore.Bucket) {
				markAt(t, bkt, 1, t0.Add(-delay-time.Minute))
			},
			strategy:  storepb.PartialResponseStrategy_ABORT,
			want:      []wantBlocksSeries{{lset: `{__name__="other"}`, blocks: []int{2}}, {lset: `{__name__="up", job="a"}`, blocks: []int{0, 2}}},
			wantAsked: []string{b(0), b(2)},
		},
		{
			name: "the delay passes between the list's read and the query: no longer asked for, without a refresh",
			held: []int{0, 2},
			before: func(t *testing.T, bkt objstore.Bucket) {
				markAt(t, bkt, 1, t0.Add(-delay+time.Minute))
			},
			later:     2 * time.Minute,
			strategy:  storepb.PartialResponseStrategy_ABORT,
			want:      []wantBlocksSeries{{lset: `{__name__="other"}`, blocks: []int{2}}, {lset: `{__name__="up", job="a"}`, blocks: []int{0, 2}}},
			wantAsked: []string{b(0), b(2)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bkt := objstore.NewInMemBucket()
			for i := 0; i < blocksTestBlocks; i++ {
				uploadTestMeta(t, bkt, i, uploaded)
			}
			if tc.before != nil {
				tc.before(t, bkt)
			}
			clock := storetest.NewClock(t0)
			finder := NewBucketBlocksFinder(bkt, refresh, grace, delay, clock.Now)
			// The querier's list, as read before the change.
			_, err := finder.Blocks(context.Background(), blocksTestTenant, 0, blocksTestBlocks*blockSpan)
			testutil.Ok(t, err)
			if tc.after != nil {
				tc.after(t, bkt)
			}
			clock.Set(t0.Add(tc.later))

			gws := map[string]*fakeGateway{"g1": newFakeGateway(t, tc.held...), "g2": newFakeGateway(t, tc.held...)}
			owners := map[int][]string{0: {"g1", "g2"}, 1: {"g1", "g2"}, 2: {"g1", "g2"}}
			f := newBlocksFixtureWithFinder(t, gws, owners, BlocksStoreConfig{}, finder)
			got, err := storetest.Series(tenantContext(blocksTestTenant), f.store, fullRangeRequest(tc.strategy))
			checkCode(t, err, tc.wantCode, tc.wantErrParts)
			checkBlocksSeries(t, tc.want, got.Series)
			asked := gws["g1"].askedBlocks()
			testutil.Assert(t, len(asked) > 0, "g1 asked")
			testutil.Equals(t, tc.wantAsked, asked[0], "blocks asked of g1 first")
			testutil.Equals(t, tc.wantReplans, f.counter("strata_querier_blocks_replans_total"), "re-plans")
			testutil.Equals(t, tc.wantGone, f.counter("strata_querier_blocks_gone_total"), "gone")
			testutil.Equals(t, tc.wantFailed, f.counter("strata_querier_blocks_consistency_checks_failed_total"), "failed checks")
			testutil.Equals(t, 1.0, f.counter("strata_querier_blocks_consistency_checks_total"), "checks")
		})
	}
}

// iterCountingBucket counts the listings of a bucket.
type iterCountingBucket struct {
	objstore.Bucket
	mtx   sync.Mutex
	iters int
}

func (b *iterCountingBucket) Iter(ctx context.Context, dir string, f func(string) error, opts ...objstore.IterOption) error {
	b.mtx.Lock()
	b.iters++
	b.mtx.Unlock()
	return b.Bucket.Iter(ctx, dir, f, opts...)
}

func (b *iterCountingBucket) count() int {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	return b.iters
}

// Blocks reads the bucket at most every refresh interval; FreshBlocks reads it at once, every call. Blocks
// uploaded within the grace period are left out, and blocks whose deletion mark gets older than the delay leave
// the answer as time passes, without a read.
func TestBucketBlocksFinder_Refresh(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0)
	bkt := &iterCountingBucket{Bucket: objstore.NewInMemBucket()}
	uploadTestMeta(t, bkt, 0, t0.Add(-time.Hour))
	uploadTestMeta(t, bkt, 1, t0.Add(-time.Hour))
	clock := storetest.NewClock(t0)
	f := NewBucketBlocksFinder(bkt, time.Hour, 10*time.Minute, time.Hour, clock.Now)
	all := func() []BlockRef {
		refs, err := f.Blocks(ctx, blocksTestTenant, 0, blocksTestBlocks*blockSpan)
		testutil.Ok(t, err)
		return refs
	}
	fresh := func() []BlockRef {
		refs, err := f.FreshBlocks(ctx, blocksTestTenant, 0, blocksTestBlocks*blockSpan)
		testutil.Ok(t, err)
		return refs
	}
	testutil.Equals(t, []BlockRef{blockTestRef(0), blockTestRef(1)}, all())
	reads := bkt.count()
	testutil.Assert(t, reads > 0, "read")

	// Within the refresh interval: no read, changes unseen.
	testutil.Ok(t, block.MarkForDeletion(ctx, log.NewNopLogger(), objstore.NewPrefixedBucket(bkt, blocksTestTenant), blockTestID(1), "test", func() time.Time { return t0.Add(-50 * time.Minute) }))
	uploadTestMeta(t, bkt, 2, t0.Add(-5*time.Minute)) // within the upload grace period
	testutil.Equals(t, []BlockRef{blockTestRef(0), blockTestRef(1)}, all())
	testutil.Equals(t, reads, bkt.count())

	// FreshBlocks reads at once: the mark is within the delay (block 1 kept), block 2 is too recent.
	testutil.Equals(t, []BlockRef{blockTestRef(0), blockTestRef(1)}, fresh())
	testutil.Assert(t, bkt.count() > reads, "FreshBlocks read the bucket")
	reads = bkt.count()
	fresh()
	testutil.Assert(t, bkt.count() > reads, "every FreshBlocks call reads the bucket")
	reads = bkt.count()

	// Time passes, within the refresh interval: block 1's mark passes the delay, block 2 the grace period.
	clock.Set(t0.Add(11 * time.Minute))
	testutil.Equals(t, []BlockRef{blockTestRef(0), blockTestRef(2)}, all())
	testutil.Equals(t, reads, bkt.count())
}

// Label names and values go through the same consistency check as series: a block deleted after the plan is
// not required once the list is read again, so strict label requests succeed without it; a block still listed
// that no gateway has fails them, naming it.
func TestBlocksStore_ConsistencyCheckLabels(t *testing.T) {
	ctx := tenantContext(blocksTestTenant)
	t0 := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name     string
		deleted  bool
		wantJobs []string
		wantErr  bool
	}{
		{name: "block gone after the plan", deleted: true, wantJobs: []string{"a"}},
		{name: "block still listed, held by no gateway", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bkt := objstore.NewInMemBucket()
			for i := 0; i < blocksTestBlocks; i++ {
				uploadTestMeta(t, bkt, i, t0.Add(-time.Hour))
			}
			clock := storetest.NewClock(t0)
			finder := NewBucketBlocksFinder(bkt, time.Hour, time.Minute, time.Hour, clock.Now)
			_, err := finder.Blocks(context.Background(), blocksTestTenant, 0, blocksTestBlocks*blockSpan)
			testutil.Ok(t, err)
			if tc.deleted {
				testutil.Ok(t, block.Delete(context.Background(), log.NewNopLogger(), objstore.NewPrefixedBucket(bkt, blocksTestTenant), blockTestID(1)))
			}
			f := newBlocksFixtureWithFinder(t, map[string]*fakeGateway{"g1": newFakeGateway(t, 0, 2)},
				map[int][]string{0: {"g1"}, 1: {"g1"}, 2: {"g1"}}, BlocksStoreConfig{}, finder)
			values, err := f.store.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "job", PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT})
			names, nerr := f.store.LabelNames(ctx, &storepb.LabelNamesRequest{PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT})
			if tc.wantErr {
				for _, err := range []error{err, nerr} {
					testutil.Equals(t, codes.Unavailable, status.Code(err), "%v", err)
					testutil.Assert(t, strings.Contains(err.Error(), blockTestID(1).String()), err.Error())
				}
				return
			}
			testutil.Ok(t, err)
			testutil.Ok(t, nerr)
			testutil.Equals(t, tc.wantJobs, values.GetValues())
			testutil.Equals(t, []string{"__name__", "job"}, names.GetNames())
			testutil.Equals(t, 0, len(values.GetWarnings())+len(names.GetWarnings()))
		})
	}
}

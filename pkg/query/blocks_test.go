package query

import (
	"context"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
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
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/hintspb"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

const (
	blocksTestTenant = "team-a"
	blockSpan        = int64(time.Hour / time.Millisecond)
	blockSampleStep  = int64(30 * time.Second / time.Millisecond)
	blocksTestBlocks = 3
)

// blockTestID is the ID of the i-th block of the fixture.
func blockTestID(i int) ulid.ULID { return ulid.MustNew(uint64(1_000_000+i), nil) }

// blockTestRef is the i-th block: [i h, (i+1) h).
func blockTestRef(i int) BlockRef {
	return BlockRef{ID: blockTestID(i), MinTime: int64(i) * blockSpan, MaxTime: int64(i+1) * blockSpan}
}

// blockTestChunk is a XOR chunk of samples every 30s over [mint, maxt), each valued ts/1000 + offset.
func blockTestChunk(t testing.TB, mint, maxt int64, offset float64) *storepb.AggrChunk {
	t.Helper()
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	testutil.Ok(t, err)
	last := mint
	for ts := mint; ts < maxt; ts += blockSampleStep {
		app.Append(0, ts, float64(ts)/1000+offset)
		last = ts
	}
	return &storepb.AggrChunk{MinTime: mint, MaxTime: last, Raw: &storepb.Chunk{Type: storepb.Chunk_XOR, Data: c.Bytes()}}
}

func pbLabels(kv ...string) []*labelpb.Label {
	var out []*labelpb.Label
	for i := 0; i < len(kv); i += 2 {
		out = append(out, &labelpb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

// blockTestSeries is the fixture's content of block i: up{job="a"} in every block, up{job="b"} in block 1,
// other{} in block 2, every series with one chunk spanning the block. offset changes the sample values (a
// "poisoned" copy of the block).
func blockTestSeries(t testing.TB, i int, offset float64) []*storepb.Series {
	mint, maxt := int64(i)*blockSpan, int64(i+1)*blockSpan
	out := []*storepb.Series{{Labels: pbLabels("__name__", "up", "job", "a"), Chunks: []*storepb.AggrChunk{blockTestChunk(t, mint, maxt, offset)}}}
	switch i {
	case 1:
		out = append(out, &storepb.Series{Labels: pbLabels("__name__", "up", "job", "b"), Chunks: []*storepb.AggrChunk{blockTestChunk(t, mint, maxt, offset)}})
	case 2:
		out = append(out, &storepb.Series{Labels: pbLabels("__name__", "other"), Chunks: []*storepb.AggrChunk{blockTestChunk(t, mint, maxt, offset)}})
	}
	return out
}

// fakeGateway is a store-gateway serving the series of the blocks it holds: a request gets the blocks it holds
// that its __block_id__ block matchers name, and the IDs of those in its response hints.
type fakeGateway struct {
	storepb.UnimplementedStoreServer

	blocks map[string][]*storepb.Series // by block ID
	// fail makes every request fail with it.
	fail error
	// failAfterSeries makes Series send its series, then fail.
	failAfterSeries bool
	// omit are blocks it holds but silently neither serves nor confirms.
	omit map[string]bool
	// warning is sent with every answer.
	warning string
	// delay is waited before answering.
	delay time.Duration

	mtx       sync.Mutex
	requested [][]string // the block IDs of each request it answered
	asked     [][]string // the block IDs each request named in its block matchers, sorted
	orgIDs    []string   // the x-scope-orgid of each request
}

// newFakeGateway returns a gateway holding the fixture's blocks idx.
func newFakeGateway(t testing.TB, idx ...int) *fakeGateway {
	g := &fakeGateway{blocks: map[string][]*storepb.Series{}, omit: map[string]bool{}}
	for _, i := range idx {
		g.blocks[blockTestID(i).String()] = blockTestSeries(t, i, 0)
	}
	return g
}

func (g *fakeGateway) requests() [][]string {
	g.mtx.Lock()
	defer g.mtx.Unlock()
	return slices.Clone(g.requested)
}

// askedBlocks returns the block IDs each request named, held or not.
func (g *fakeGateway) askedBlocks() [][]string {
	g.mtx.Lock()
	defer g.mtx.Unlock()
	return slices.Clone(g.asked)
}

// selected records the request and returns the IDs of the blocks to serve, sorted.
func (g *fakeGateway) selected(ctx context.Context, hints *anypb.Any, rh blockHints) ([]string, error) {
	orgID := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		orgID = strings.Join(md.Get(tenancy.MetadataOrgID), ",") // one value, not one per layer that set it
	}
	var (
		blockMs []*labels.Matcher
		asked   []string
	)
	if hints != nil {
		if err := hints.UnmarshalTo(rh); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	ms, err := store.MatchersFromPB(rh.GetBlockMatchers())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	for _, m := range ms {
		if m.Name == store.BlockIDLabel {
			blockMs = append(blockMs, m)
			if m.Type == labels.MatchRegexp {
				asked = append(asked, strings.Split(m.Value, "|")...)
			}
		}
	}
	var ids []string
	for id := range g.blocks {
		if g.omit[id] || !matchesAll(blockMs, id) {
			continue
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	g.mtx.Lock()
	g.orgIDs = append(g.orgIDs, orgID)
	g.requested = append(g.requested, ids)
	sort.Strings(asked)
	g.asked = append(g.asked, asked)
	g.mtx.Unlock()
	if g.delay > 0 {
		select {
		case <-time.After(g.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if g.fail != nil {
		return nil, g.fail
	}
	return ids, nil
}

// blockHints is the request hints of any StoreAPI method.
type blockHints interface {
	proto.Message
	GetBlockMatchers() []*storepb.LabelMatcher
}

func matchesAll(ms []*labels.Matcher, v string) bool {
	for _, m := range ms {
		if !m.Matches(v) {
			return false
		}
	}
	return true
}

func queriedBlocks(ids []string) []*hintspb.Block {
	out := make([]*hintspb.Block, 0, len(ids))
	for _, id := range ids {
		out = append(out, &hintspb.Block{Id: id})
	}
	return out
}

// series returns the gateway's series of blocks ids matching ms, sorted, one label set once.
func (g *fakeGateway) series(ids []string, ms []*labels.Matcher) []*storepb.Series {
	byLabels := map[string]*storepb.Series{}
	lsets := map[string]labels.Labels{}
	for _, id := range ids {
		for _, s := range g.blocks[id] {
			lset := store.LabelsFromPB(s.GetLabels())
			if !matchesLabels(ms, lset) {
				continue
			}
			k := lset.String()
			if cur, ok := byLabels[k]; ok {
				cur.Chunks = append(slices.Clone(cur.Chunks), s.GetChunks()...)
				continue
			}
			byLabels[k] = &storepb.Series{Labels: s.GetLabels(), Chunks: s.GetChunks()}
			lsets[k] = lset
		}
	}
	keys := make([]string, 0, len(byLabels))
	for k := range byLabels {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return labels.Compare(lsets[keys[i]], lsets[keys[j]]) < 0 })
	out := make([]*storepb.Series, 0, len(keys))
	for _, k := range keys {
		out = append(out, byLabels[k])
	}
	return out
}

func matchesLabels(ms []*labels.Matcher, lset labels.Labels) bool {
	for _, m := range ms {
		if !m.Matches(lset.Get(m.Name)) {
			return false
		}
	}
	return true
}

func (g *fakeGateway) Series(req *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	var rh hintspb.SeriesRequestHints
	ids, err := g.selected(srv.Context(), req.GetHints(), &rh)
	if err != nil {
		return err
	}
	ms, err := store.MatchersFromPB(req.GetMatchers())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	for _, s := range g.series(ids, ms) {
		if req.GetSkipChunks() {
			s = &storepb.Series{Labels: s.GetLabels()}
		}
		if err := srv.Send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Series{Series: s}}); err != nil {
			return err
		}
	}
	if g.warning != "" {
		if err := srv.Send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Warning{Warning: g.warning}}); err != nil {
			return err
		}
	}
	if g.failAfterSeries {
		return status.Error(codes.Internal, "disk broke mid-stream")
	}
	hints, err := anypb.New(&hintspb.SeriesResponseHints{QueriedBlocks: queriedBlocks(ids)})
	if err != nil {
		return err
	}
	return srv.Send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Hints{Hints: hints}})
}

func (g *fakeGateway) LabelNames(ctx context.Context, req *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	var rh hintspb.LabelNamesRequestHints
	ids, err := g.selected(ctx, req.GetHints(), &rh)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range g.series(ids, nil) {
		for _, l := range s.GetLabels() {
			names = append(names, l.GetName())
		}
	}
	slices.Sort(names)
	hints, err := anypb.New(&hintspb.LabelNamesResponseHints{QueriedBlocks: queriedBlocks(ids)})
	if err != nil {
		return nil, err
	}
	resp := &storepb.LabelNamesResponse{Names: slices.Compact(names), Hints: hints}
	if g.warning != "" {
		resp.Warnings = []string{g.warning}
	}
	return resp, nil
}

func (g *fakeGateway) LabelValues(ctx context.Context, req *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	var rh hintspb.LabelValuesRequestHints
	ids, err := g.selected(ctx, req.GetHints(), &rh)
	if err != nil {
		return nil, err
	}
	var values []string
	for _, s := range g.series(ids, nil) {
		if v := store.LabelsFromPB(s.GetLabels()).Get(req.GetLabel()); v != "" {
			values = append(values, v)
		}
	}
	slices.Sort(values)
	hints, err := anypb.New(&hintspb.LabelValuesResponseHints{QueriedBlocks: queriedBlocks(ids)})
	if err != nil {
		return nil, err
	}
	resp := &storepb.LabelValuesResponse{Values: slices.Compact(values), Hints: hints}
	if g.warning != "" {
		resp.Warnings = []string{g.warning}
	}
	return resp, nil
}

// serveGateway serves g on a loopback gRPC server and returns its address.
func serveGateway(t testing.TB, g *fakeGateway) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	srv := grpc.NewServer()
	storepb.RegisterStoreServer(srv, g)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

// downAddr is the address of a listener already closed: a gateway that is down.
func downAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	addr := l.Addr().String()
	testutil.Ok(t, l.Close())
	return addr
}

// staticFinder returns, per tenant, the blocks overlapping [minT, maxT].
type staticFinder struct {
	blocks map[string][]BlockRef
	err    error

	mtx   sync.Mutex
	asked []string
}

func (f *staticFinder) Blocks(_ context.Context, tenant string, minT, maxT int64) ([]BlockRef, error) {
	f.mtx.Lock()
	f.asked = append(f.asked, tenant)
	f.mtx.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	var out []BlockRef
	for _, b := range f.blocks[tenant] {
		if b.MinTime <= maxT && b.MaxTime > minT {
			out = append(out, b)
		}
	}
	return out, nil
}

// blocksFixture is a BlocksStore over gateways, with block i owned by the gateways owners[i] (by name, in
// order). A nil gateway is a down one.
type blocksFixture struct {
	store  *BlocksStore
	gws    map[string]*fakeGateway
	addrs  map[string]string
	reg    *prometheus.Registry
	finder *staticFinder
	pool   *GatewayPool
}

func newBlocksFixture(t testing.TB, gws map[string]*fakeGateway, owners map[int][]string, cfg BlocksStoreConfig) *blocksFixture {
	t.Helper()
	return newBlocksFixtureWithFinder(t, gws, owners, cfg, nil)
}

// newBlocksFixtureWithFinder is newBlocksFixture with another finder than the fixture's staticFinder (nil:
// the staticFinder of the blocks owners names).
func newBlocksFixtureWithFinder(t testing.TB, gws map[string]*fakeGateway, owners map[int][]string, cfg BlocksStoreConfig, finder BlocksFinder) *blocksFixture {
	t.Helper()
	f := &blocksFixture{gws: gws, addrs: map[string]string{}, reg: prometheus.NewRegistry(), finder: &staticFinder{blocks: map[string][]BlockRef{}}}
	if finder == nil {
		finder = f.finder
	}
	for name, g := range gws {
		if g == nil {
			f.addrs[name] = downAddr(t)
			continue
		}
		f.addrs[name] = serveGateway(t, g)
	}
	byID := map[ulid.ULID][]string{}
	for i := 0; i < blocksTestBlocks; i++ {
		if _, ok := owners[i]; !ok {
			continue
		}
		f.finder.blocks[blocksTestTenant] = append(f.finder.blocks[blocksTestTenant], blockTestRef(i))
		for _, name := range owners[i] {
			byID[blockTestID(i)] = append(byID[blockTestID(i)], f.addrs[name])
		}
	}
	ownersOf := func(id ulid.ULID) ([]string, error) {
		o, ok := byID[id]
		if !ok {
			return nil, errors.Newf("block %s is in no gateway's ring range", id)
		}
		return o, nil
	}
	f.pool = NewGatewayPool()
	f.store = NewBlocksStore(finder, ownersOf, f.pool.Dial, cfg, log.NewNopLogger(), f.reg)
	t.Cleanup(func() {
		testutil.Ok(t, f.store.Close())
		testutil.Ok(t, f.pool.Close())
	})
	return f
}

func (f *blocksFixture) counter(name string) float64 {
	mfs, err := f.reg.Gather()
	if err != nil {
		panic(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

func tenantContext(tenants ...string) context.Context {
	return tenancy.WithTenants(context.Background(), tenants)
}

// checkCode checks a call's error: none when want is OK, else one of code want whose message names every part.
func checkCode(t *testing.T, err error, want codes.Code, parts []string) {
	t.Helper()
	if want == codes.OK {
		testutil.Ok(t, err)
		return
	}
	testutil.NotOk(t, err)
	testutil.Equals(t, want, status.Code(err), "%v", err)
	for _, p := range parts {
		testutil.Assert(t, strings.Contains(err.Error(), p), "error %q does not name %q", err, p)
	}
}

// wantBlocksSeries is the fixture's series over the blocks idx, merged: labels → the blocks of its chunks.
type wantBlocksSeries struct {
	lset   string
	blocks []int
}

func completeBlocksSeries() []wantBlocksSeries {
	return []wantBlocksSeries{
		{lset: `{__name__="other"}`, blocks: []int{2}},
		{lset: `{__name__="up", job="a"}`, blocks: []int{0, 1, 2}},
		{lset: `{__name__="up", job="b"}`, blocks: []int{1}},
	}
}

// checkBlocksSeries compares series with the fixture's: labels in order, and for each its chunks, in time order,
// those of the blocks named (unpoisoned).
func checkBlocksSeries(t *testing.T, want []wantBlocksSeries, got []*storepb.Series) {
	t.Helper()
	testutil.Equals(t, len(want), len(got), "series: %v", got)
	for i, w := range want {
		lset := store.LabelsFromPB(got[i].GetLabels())
		testutil.Equals(t, w.lset, lset.String())
		testutil.Equals(t, len(w.blocks), len(got[i].GetChunks()), "chunks of %s", lset)
		for j, b := range w.blocks {
			wc := blockTestChunk(t, int64(b)*blockSpan, int64(b+1)*blockSpan, 0)
			gc := got[i].GetChunks()[j]
			testutil.Equals(t, wc.GetMinTime(), gc.GetMinTime(), "chunk %d of %s", j, lset)
			testutil.Equals(t, wc.GetMaxTime(), gc.GetMaxTime(), "chunk %d of %s", j, lset)
			testutil.Equals(t, wc.GetRaw().GetData(), gc.GetRaw().GetData(), "chunk %d of %s (poisoned data kept?)", j, lset)
		}
	}
}

func fullRangeRequest(strategy storepb.PartialResponseStrategy) *storepb.SeriesRequest {
	return &storepb.SeriesRequest{
		MinTime:                 0,
		MaxTime:                 blocksTestBlocks*blockSpan - 1,
		Matchers:                []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "__name__", Value: ".+"}},
		PartialResponseStrategy: strategy,
	}
}

func TestBlocksStore_Series(t *testing.T) {
	b := func(i int) string { return blockTestID(i).String() }
	for _, tc := range []struct {
		name     string
		gws      func(t *testing.T) map[string]*fakeGateway
		owners   map[int][]string
		cfg      BlocksStoreConfig
		strategy storepb.PartialResponseStrategy
		batch    int64

		want          []wantBlocksSeries
		wantWarnings  []string
		wantCode      codes.Code // of the Series call (ABORT) or of the stream's end (WARN)
		wantErrParts  []string
		wantQueried   float64
		wantRetried   float64
		wantUnqueried float64
		check         func(t *testing.T, f *blocksFixture)
	}{
		{
			name: "every block answered by its first owner",
			gws: func(t *testing.T) map[string]*fakeGateway {
				return map[string]*fakeGateway{"g1": newFakeGateway(t, 0, 1, 2), "g2": newFakeGateway(t, 0, 1, 2)}
			},
			owners:      map[int][]string{0: {"g1", "g2"}, 1: {"g1", "g2"}, 2: {"g2", "g1"}},
			want:        completeBlocksSeries(),
			wantQueried: 3,
			check: func(t *testing.T, f *blocksFixture) {
				// One request per gateway, naming exactly its blocks.
				testutil.Equals(t, [][]string{{b(0), b(1)}}, f.gws["g1"].requests())
				testutil.Equals(t, [][]string{{b(2)}}, f.gws["g2"].requests())
				testutil.Equals(t, 2.0, promtestutil.ToFloat64(f.store.metrics.requests.WithLabelValues(gatewaySuccess)))
			},
		},
		{
			name: "first owner down: its blocks are served by their second owners",
			gws: func(t *testing.T) map[string]*fakeGateway {
				return map[string]*fakeGateway{"down": nil, "g2": newFakeGateway(t, 0, 1), "g3": newFakeGateway(t, 2)}
			},
			owners:      map[int][]string{0: {"down", "g2"}, 1: {"down", "g2"}, 2: {"down", "g3"}},
			want:        completeBlocksSeries(),
			wantQueried: 3,
			wantRetried: 3,
			check: func(t *testing.T, f *blocksFixture) {
				testutil.Equals(t, 1.0, promtestutil.ToFloat64(f.store.metrics.requests.WithLabelValues(gatewayError)))
				testutil.Equals(t, 2.0, promtestutil.ToFloat64(f.store.metrics.requests.WithLabelValues(gatewaySuccess)))
			},
		},
		{
			name: "first owner answers Unavailable: retried on the next owners, and a failed gateway is not asked again",
			gws: func(t *testing.T) map[string]*fakeGateway {
				bad := newFakeGateway(t, 0, 1, 2)
				bad.fail = status.Error(codes.Unavailable, "gateway is stopping")
				// g2 fails for block 0 by omission: block 0's third owner is the failed gateway, skipped.
				g2 := newFakeGateway(t, 1)
				return map[string]*fakeGateway{"bad": bad, "g2": g2, "g3": newFakeGateway(t, 0, 2)}
			},
			owners:      map[int][]string{0: {"bad", "g2", "bad", "g3"}, 1: {"bad", "g2"}, 2: {"g3", "bad"}},
			want:        completeBlocksSeries(),
			wantQueried: 3,
			wantRetried: 3, // block 0 twice (g2, g3), block 1 once
			check: func(t *testing.T, f *blocksFixture) {
				testutil.Equals(t, 1, len(f.gws["bad"].requests()))
				testutil.Equals(t, [][]string{{b(1)}}, f.gws["g2"].requests()) // it holds only block 1 of the two asked
				testutil.Equals(t, [][]string{{b(2)}, {b(0)}}, f.gws["g3"].requests())
				testutil.Equals(t, 1.0, promtestutil.ToFloat64(f.store.metrics.requests.WithLabelValues(gatewayIncomplete)))
			},
		},
		{
			name: "a gateway that omits a block from queried_blocks: the block is retried elsewhere",
			gws: func(t *testing.T) map[string]*fakeGateway {
				g1 := newFakeGateway(t, 0, 1, 2)
				g1.omit[blockTestID(1).String()] = true
				return map[string]*fakeGateway{"g1": g1, "g2": newFakeGateway(t, 1)}
			},
			owners:      map[int][]string{0: {"g1"}, 1: {"g1", "g2"}, 2: {"g1"}},
			want:        completeBlocksSeries(),
			wantQueried: 3,
			wantRetried: 1,
			check: func(t *testing.T, f *blocksFixture) {
				testutil.Equals(t, [][]string{{b(1)}}, f.gws["g2"].requests())
			},
		},
		{
			name: "a gateway failing mid-stream: what it sent is dropped, its blocks are asked again",
			gws: func(t *testing.T) map[string]*fakeGateway {
				poisoned := newFakeGateway(t)
				for i := 0; i < blocksTestBlocks; i++ {
					poisoned.blocks[blockTestID(i).String()] = blockTestSeries(t, i, 1000)
				}
				poisoned.failAfterSeries = true
				poisoned.warning = "from a failed attempt"
				return map[string]*fakeGateway{"poisoned": poisoned, "g2": newFakeGateway(t, 0, 1, 2)}
			},
			owners:      map[int][]string{0: {"poisoned", "g2"}, 1: {"poisoned", "g2"}, 2: {"poisoned", "g2"}},
			want:        completeBlocksSeries(),
			wantQueried: 3,
			wantRetried: 3,
		},
		{
			name: "the series of one label set in blocks on several gateways become one, chunks by time, identical chunks once",
			gws: func(t *testing.T) map[string]*fakeGateway {
				g1 := newFakeGateway(t, 2, 0)
				// g2 holds block 1 and also a copy of block 0's up{job="a"} under block 1's ID (overlapping blocks):
				// its identical chunk is kept once.
				g2 := newFakeGateway(t, 1)
				g2.blocks[b(1)] = append(g2.blocks[b(1)], blockTestSeries(t, 0, 0)...)
				return map[string]*fakeGateway{"g1": g1, "g2": g2}
			},
			owners:      map[int][]string{0: {"g1"}, 1: {"g2"}, 2: {"g1"}},
			want:        completeBlocksSeries(),
			wantQueried: 3,
		},
		{
			name: "series batched as the request asks, warnings passed on",
			gws: func(t *testing.T) map[string]*fakeGateway {
				g1 := newFakeGateway(t, 0, 1, 2)
				g1.warning = "index header is being loaded"
				return map[string]*fakeGateway{"g1": g1}
			},
			owners:       map[int][]string{0: {"g1"}, 1: {"g1"}, 2: {"g1"}},
			batch:        2,
			want:         completeBlocksSeries(),
			wantWarnings: []string{"index header is being loaded"},
			wantQueried:  3,
		},
		{
			name: "every owner failing, partial response: the other blocks' series, then Unavailable naming the blocks",
			gws: func(t *testing.T) map[string]*fakeGateway {
				bad1, bad2 := newFakeGateway(t, 1), newFakeGateway(t, 1)
				bad1.fail = status.Error(codes.Unavailable, "gateway one is stopping")
				bad2.fail = status.Error(codes.Internal, "gateway two is broken")
				return map[string]*fakeGateway{"g1": newFakeGateway(t, 0, 2), "bad1": bad1, "bad2": bad2, "down": nil}
			},
			owners:   map[int][]string{0: {"g1"}, 1: {"bad1", "bad2", "down"}, 2: {"g1"}},
			strategy: storepb.PartialResponseStrategy_WARN,
			want: []wantBlocksSeries{
				{lset: `{__name__="other"}`, blocks: []int{2}},
				{lset: `{__name__="up", job="a"}`, blocks: []int{0, 2}},
			},
			wantCode:      codes.Unavailable,
			wantErrParts:  []string{"1 blocks could not be queried", b(1), "gateway one is stopping", "gateway two is broken"},
			wantQueried:   2,
			wantRetried:   2,
			wantUnqueried: 1,
		},
		{
			name: "every owner failing, abort: the call fails",
			gws: func(t *testing.T) map[string]*fakeGateway {
				bad := newFakeGateway(t, 0, 1, 2)
				bad.fail = status.Error(codes.ResourceExhausted, "too many requests")
				return map[string]*fakeGateway{"bad": bad}
			},
			owners:        map[int][]string{0: {"bad"}, 1: {"bad"}, 2: {"bad"}},
			strategy:      storepb.PartialResponseStrategy_ABORT,
			wantCode:      codes.Unavailable,
			wantErrParts:  []string{"3 blocks could not be queried", b(0), b(1), b(2), "too many requests"},
			wantUnqueried: 3,
		},
		{
			name: "more owners than attempts: the block is given up after MaxAttempts",
			gws: func(t *testing.T) map[string]*fakeGateway {
				gws := map[string]*fakeGateway{"g4": newFakeGateway(t, 0)}
				for _, n := range []string{"g1", "g2", "g3"} {
					gws[n] = newFakeGateway(t) // hold nothing: answer, confirm nothing
				}
				return gws
			},
			owners:        map[int][]string{0: {"g1", "g2", "g3", "g4"}},
			cfg:           BlocksStoreConfig{MaxAttempts: 3},
			wantCode:      codes.Unavailable,
			wantErrParts:  []string{b(0)},
			wantRetried:   2,
			wantUnqueried: 1,
			check: func(t *testing.T, f *blocksFixture) {
				testutil.Equals(t, 0, len(f.gws["g4"].requests()))
			},
		},
		{
			name: "a block without owners is unqueried",
			gws: func(t *testing.T) map[string]*fakeGateway {
				return map[string]*fakeGateway{"g1": newFakeGateway(t, 0, 1, 2)}
			},
			owners:        map[int][]string{0: {"g1"}, 1: {}, 2: {"g1"}},
			strategy:      storepb.PartialResponseStrategy_ABORT,
			wantCode:      codes.Unavailable,
			wantErrParts:  []string{"1 blocks", b(1)},
			wantQueried:   2,
			wantUnqueried: 1,
		},
		{
			name: "no blocks: an empty stream, no gateway asked",
			gws: func(t *testing.T) map[string]*fakeGateway {
				return map[string]*fakeGateway{"g1": newFakeGateway(t, 0, 1, 2)}
			},
			owners: map[int][]string{},
			check: func(t *testing.T, f *blocksFixture) {
				testutil.Equals(t, 0, len(f.gws["g1"].requests()))
			},
		},
		{
			name: "bounded concurrency",
			gws: func(t *testing.T) map[string]*fakeGateway {
				return map[string]*fakeGateway{"g1": newFakeGateway(t, 0), "g2": newFakeGateway(t, 1), "g3": newFakeGateway(t, 2)}
			},
			owners:      map[int][]string{0: {"g1"}, 1: {"g2"}, 2: {"g3"}},
			cfg:         BlocksStoreConfig{MaxConcurrency: 1},
			want:        completeBlocksSeries(),
			wantQueried: 3,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newBlocksFixture(t, tc.gws(t), tc.owners, tc.cfg)
			req := fullRangeRequest(tc.strategy)
			req.ResponseBatchSize = tc.batch
			got, err := storetest.Series(tenantContext(blocksTestTenant), f.store, req)
			checkCode(t, err, tc.wantCode, tc.wantErrParts)
			checkBlocksSeries(t, tc.want, got.Series)
			warnings := got.Warnings
			testutil.Equals(t, len(tc.wantWarnings), len(warnings), "warnings: %v", warnings)
			for i, w := range tc.wantWarnings {
				testutil.Assert(t, strings.Contains(warnings[i], w), "warning %q, want %q", warnings[i], w)
			}
			testutil.Equals(t, tc.wantQueried, f.counter("strata_querier_blocks_queried_total"), "queried")
			testutil.Equals(t, tc.wantRetried, f.counter("strata_querier_blocks_retried_total"), "retried")
			testutil.Equals(t, tc.wantUnqueried, f.counter("strata_querier_blocks_unqueried_total"), "unqueried")
			// The tenant reaches every gateway asked, in gRPC metadata.
			for name, g := range f.gws {
				if g == nil {
					continue
				}
				g.mtx.Lock()
				for _, id := range g.orgIDs {
					testutil.Equals(t, blocksTestTenant, id, "tenant at %s", name)
				}
				g.mtx.Unlock()
			}
			if tc.check != nil {
				tc.check(t, f)
			}
		})
	}
}

func TestBlocksStore_Tenancy(t *testing.T) {
	t.Run("no tenant", func(t *testing.T) {
		f := newBlocksFixture(t, map[string]*fakeGateway{"g1": newFakeGateway(t, 0)}, map[int][]string{0: {"g1"}}, BlocksStoreConfig{})
		_, err := f.store.Series(context.Background(), fullRangeRequest(storepb.PartialResponseStrategy_WARN))
		testutil.Equals(t, codes.Unauthenticated, status.Code(err))
		_, err = f.store.LabelNames(context.Background(), &storepb.LabelNamesRequest{})
		testutil.Equals(t, codes.Unauthenticated, status.Code(err))
		_, err = f.store.LabelValues(context.Background(), &storepb.LabelValuesRequest{Label: "job"})
		testutil.Equals(t, codes.Unauthenticated, status.Code(err))
		testutil.Equals(t, 0, len(f.gws["g1"].requests()))
	})
	t.Run("federated tenants: every tenant's blocks, the tenants in metadata", func(t *testing.T) {
		f := newBlocksFixture(t, map[string]*fakeGateway{"g1": newFakeGateway(t, 0, 1, 2)}, map[int][]string{0: {"g1"}, 1: {"g1"}, 2: {"g1"}}, BlocksStoreConfig{})
		refs := f.finder.blocks[blocksTestTenant]
		f.finder.blocks = map[string][]BlockRef{"a": refs[:1], "b": refs[1:]}
		got, err := storetest.Series(tenantContext("a", "b"), f.store, fullRangeRequest(storepb.PartialResponseStrategy_ABORT))
		testutil.Ok(t, err)
		checkBlocksSeries(t, completeBlocksSeries(), got.Series)
		testutil.Equals(t, []string{"a", "b"}, f.finder.asked)
		testutil.Equals(t, []string{"a|b"}, f.gws["g1"].orgIDs)
	})
	t.Run("the finder failing is Unavailable", func(t *testing.T) {
		f := newBlocksFixture(t, map[string]*fakeGateway{"g1": newFakeGateway(t, 0)}, map[int][]string{0: {"g1"}}, BlocksStoreConfig{})
		f.finder.err = errors.New("bucket index unreadable")
		_, err := f.store.Series(tenantContext(blocksTestTenant), fullRangeRequest(storepb.PartialResponseStrategy_WARN))
		testutil.Equals(t, codes.Unavailable, status.Code(err))
		testutil.Assert(t, strings.Contains(err.Error(), "bucket index unreadable"), err.Error())
	})
	t.Run("cancelled request", func(t *testing.T) {
		g := newFakeGateway(t, 0)
		g.delay = time.Minute
		f := newBlocksFixture(t, map[string]*fakeGateway{"g1": g}, map[int][]string{0: {"g1"}}, BlocksStoreConfig{})
		ctx, cancel := context.WithTimeout(tenantContext(blocksTestTenant), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := f.store.Series(ctx, fullRangeRequest(storepb.PartialResponseStrategy_WARN))
		testutil.Equals(t, codes.DeadlineExceeded, status.Code(err), "%v", err)
		testutil.Assert(t, time.Since(start) < 10*time.Second, "took %s", time.Since(start))
	})
}

func TestBlocksStore_Labels(t *testing.T) {
	newStore := func(t *testing.T) *blocksFixture {
		bad := newFakeGateway(t, 0, 1, 2)
		bad.fail = status.Error(codes.Unavailable, "stopping")
		g1 := newFakeGateway(t, 0, 2)
		g1.warning = "slow bucket"
		return newBlocksFixture(t, map[string]*fakeGateway{"bad": bad, "g1": g1, "g2": newFakeGateway(t, 1)},
			map[int][]string{0: {"bad", "g1"}, 1: {"bad", "g2"}, 2: {"g1"}}, BlocksStoreConfig{})
	}
	t.Run("label names: union over the gateways, after a retry", func(t *testing.T) {
		f := newStore(t)
		resp, err := f.store.LabelNames(tenantContext(blocksTestTenant), &storepb.LabelNamesRequest{Start: 0, End: 3 * blockSpan})
		testutil.Ok(t, err)
		testutil.Equals(t, []string{"__name__", "job"}, resp.GetNames())
		testutil.Equals(t, 1, len(resp.GetWarnings()))
		testutil.Assert(t, strings.Contains(resp.GetWarnings()[0], "slow bucket"), resp.GetWarnings()[0])
		testutil.Equals(t, 2.0, f.counter("strata_querier_blocks_retried_total"))
		testutil.Equals(t, 3.0, f.counter("strata_querier_blocks_queried_total"))
		testutil.Equals(t, []string{blocksTestTenant}, f.gws["g2"].orgIDs)
	})
	t.Run("label values: union over the gateways, after a retry", func(t *testing.T) {
		f := newStore(t)
		resp, err := f.store.LabelValues(tenantContext(blocksTestTenant), &storepb.LabelValuesRequest{Label: "__name__"})
		testutil.Ok(t, err)
		testutil.Equals(t, []string{"other", "up"}, resp.GetValues())
		resp, err = f.store.LabelValues(tenantContext(blocksTestTenant), &storepb.LabelValuesRequest{Label: "job", Start: blockSpan, End: 2*blockSpan - 1})
		testutil.Ok(t, err)
		testutil.Equals(t, []string{"a", "b"}, resp.GetValues())
		testutil.Equals(t, [][]string{{blockTestID(1).String()}}, f.gws["g2"].requests()[1:])
	})
	t.Run("unqueried blocks: a warning, or an error with abort", func(t *testing.T) {
		bad := newFakeGateway(t, 1)
		bad.fail = status.Error(codes.Unavailable, "stopping")
		f := newBlocksFixture(t, map[string]*fakeGateway{"bad": bad, "g1": newFakeGateway(t, 0, 2)},
			map[int][]string{0: {"g1"}, 1: {"bad"}, 2: {"g1"}}, BlocksStoreConfig{})
		resp, err := f.store.LabelValues(tenantContext(blocksTestTenant), &storepb.LabelValuesRequest{Label: "job", PartialResponseStrategy: storepb.PartialResponseStrategy_WARN})
		testutil.Ok(t, err)
		testutil.Equals(t, []string{"a"}, resp.GetValues())
		testutil.Equals(t, 1, len(resp.GetWarnings()))
		testutil.Assert(t, strings.Contains(resp.GetWarnings()[0], blockTestID(1).String()), resp.GetWarnings()[0])

		_, err = f.store.LabelNames(tenantContext(blocksTestTenant), &storepb.LabelNamesRequest{PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT})
		testutil.Equals(t, codes.Unavailable, status.Code(err))
		testutil.Assert(t, strings.Contains(err.Error(), blockTestID(1).String()), err.Error())
	})
}

// TestBlocksStore_ThroughProxy reads the store-gateways as the querier does: through the proxy and the
// Queryable's Select, and through the proxy's own StoreAPI.
func TestBlocksStore_ThroughProxy(t *testing.T) {
	bad := newFakeGateway(t, 0, 1, 2)
	bad.fail = status.Error(codes.Unavailable, "stopping")
	g1 := newFakeGateway(t, 0, 2)
	g2 := newFakeGateway(t, 1)
	f := newBlocksFixture(t, map[string]*fakeGateway{"bad": bad, "g1": g1, "g2": g2, "down": nil},
		map[int][]string{0: {"bad", "g1"}, 1: {"down", "g2"}, 2: {"g1", "bad"}}, BlocksStoreConfig{})
	proxy := store.NewSelectingProxy(func([]string, int64, int64) []store.StoreClient { return []store.StoreClient{f.store} }, 0, log.NewNopLogger(), nil)
	ctx := tenantContext(blocksTestTenant)

	t.Run("proxy SeriesSets", func(t *testing.T) {
		sets, err := proxy.SeriesSets(ctx, []string{blocksTestTenant}, fullRangeRequest(storepb.PartialResponseStrategy_ABORT))
		testutil.Ok(t, err)
		testutil.Equals(t, 1, len(sets))
		var got []string
		for sets[0].Next() {
			cs := sets[0].At()
			it := cs.Iterator(nil)
			n := 0
			for it.Next() {
				n++
			}
			testutil.Ok(t, it.Err())
			got = append(got, cs.Labels().String()+"/"+string(rune('0'+n)))
		}
		testutil.Ok(t, sets[0].Err())
		testutil.Equals(t, 0, len(sets[0].Warnings()))
		testutil.Equals(t, []string{`{__name__="other"}/1`, `{__name__="up", job="a"}/3`, `{__name__="up", job="b"}/1`}, got)
	})

	t.Run("Queryable Select: samples of every block, in time order", func(t *testing.T) {
		q, err := NewQueryable(proxy, tenancy.NewOverrides(tenancy.DefaultLimits(), nil), nil, nil).Querier(0, 3*blockSpan)
		testutil.Ok(t, err)
		defer q.Close()
		ss := q.Select(ctx, true, &storage.SelectHints{Start: 0, End: 3*blockSpan - 1}, labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"))
		var got []string
		for ss.Next() {
			s := ss.At()
			it := s.Iterator(nil)
			n, prev := 0, int64(-1)
			for it.Next() == chunkenc.ValFloat {
				ts, v := it.At()
				testutil.Assert(t, ts > prev, "%s: samples out of order at %d", s.Labels(), ts)
				testutil.Equals(t, float64(ts)/1000, v)
				prev = ts
				n++
			}
			testutil.Ok(t, it.Err())
			got = append(got, s.Labels().String())
			want := int(3 * blockSpan / blockSampleStep)
			if s.Labels().Get("job") == "b" {
				want = int(blockSpan / blockSampleStep)
			}
			testutil.Equals(t, want, n, "samples of %s", s.Labels())
		}
		testutil.Ok(t, ss.Err())
		testutil.Equals(t, 0, len(ss.Warnings()))
		testutil.Equals(t, []string{`{__name__="up", job="a"}`, `{__name__="up", job="b"}`}, got)
	})

	t.Run("proxy LabelValues", func(t *testing.T) {
		resp, err := proxy.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "job"})
		testutil.Ok(t, err)
		testutil.Equals(t, []string{"a", "b"}, resp.GetValues())
	})

	t.Run("the tenant reached the gateways once, in metadata", func(t *testing.T) {
		for _, g := range []*fakeGateway{bad, g1, g2} {
			g.mtx.Lock()
			testutil.Assert(t, len(g.orgIDs) > 0)
			for _, id := range g.orgIDs {
				testutil.Equals(t, blocksTestTenant, id)
			}
			g.mtx.Unlock()
		}
	})

	t.Run("partial response: unqueried blocks become a warning, or fail the query", func(t *testing.T) {
		bad := newFakeGateway(t, 1)
		bad.fail = status.Error(codes.Unavailable, "stopping")
		f := newBlocksFixture(t, map[string]*fakeGateway{"bad": bad, "g1": newFakeGateway(t, 0, 2)},
			map[int][]string{0: {"g1"}, 1: {"bad"}, 2: {"g1"}}, BlocksStoreConfig{})
		proxy := store.NewSelectingProxy(func([]string, int64, int64) []store.StoreClient { return []store.StoreClient{f.store} }, 0, log.NewNopLogger(), nil)
		queryable := NewQueryable(proxy, tenancy.NewOverrides(tenancy.DefaultLimits(), nil), nil, nil)
		sel := func(partial bool) storage.SeriesSet {
			q, err := queryable.Querier(0, 3*blockSpan)
			testutil.Ok(t, err)
			t.Cleanup(func() { _ = q.Close() })
			ctx := WithRequestOptions(ctx, RequestOptions{Dedup: true, PartialResponse: partial})
			return q.Select(ctx, true, &storage.SelectHints{Start: 0, End: 3*blockSpan - 1}, labels.MustNewMatcher(labels.MatchEqual, "job", "a"))
		}

		ss := sel(true)
		n := 0
		for ss.Next() {
			n++
		}
		testutil.Ok(t, ss.Err())
		testutil.Equals(t, 1, n)
		testutil.Equals(t, 1, len(ss.Warnings()))
		for _, w := range ss.Warnings() {
			testutil.Assert(t, strings.Contains(w.Error(), blockTestID(1).String()), w.Error())
		}

		ss = sel(false)
		for ss.Next() {
		}
		testutil.NotOk(t, ss.Err())
		testutil.Assert(t, strings.Contains(ss.Err().Error(), blockTestID(1).String()), ss.Err().Error())
	})
}

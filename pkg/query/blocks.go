package query

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/hintspb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// BlockRef is a block of the bucket as the querier needs it.
type BlockRef struct {
	ID               ulid.ULID
	MinTime, MaxTime int64 // ms; MaxTime exclusive as in Prometheus block meta
}

// BlocksFinder lists the blocks of a tenant that may hold data in [minT, maxT] (partial and deletion-marked
// blocks excluded).
type BlocksFinder interface {
	Blocks(ctx context.Context, tenant string, minT, maxT int64) ([]BlockRef, error)
}

// FreshBlocksFinder is a BlocksFinder that can read a tenant's block list again at once, rather than when its
// refresh interval says. The BlocksStore uses it when blocks could not be queried on any store-gateway: those
// gone from the fresh list (deleted, lost their meta.json, marked for deletion longer ago than the delay) are
// no longer required, and blocks new in it are queried too.
type FreshBlocksFinder interface {
	BlocksFinder
	FreshBlocks(ctx context.Context, tenant string, minT, maxT int64) ([]BlockRef, error)
}

// BlockOwners returns the gRPC addresses of the store-gateways owning a block, in the order to try them.
type BlockOwners func(id ulid.ULID) ([]string, error)

// BlocksStoreConfig configures a BlocksStore.
type BlocksStoreConfig struct {
	// MaxAttempts is how many owners of a block are tried, one after the other, before the block counts as
	// unqueried (default 3).
	MaxAttempts int
	// MaxConcurrency bounds the gateway requests one request has in flight at once (0: no bound).
	MaxConcurrency int
}

const defaultMaxAttempts = 3

type blocksStoreMetrics struct {
	queried      prometheus.Counter
	requests     *prometheus.CounterVec
	retried      prometheus.Counter
	unqueried    prometheus.Counter
	checks       prometheus.Counter
	checksFailed prometheus.Counter
	replans      prometheus.Counter
	gone         prometheus.Counter
}

// Outcomes of one request to one store-gateway.
const (
	gatewaySuccess    = "success"    // answered and confirmed every block it was sent
	gatewayIncomplete = "incomplete" // answered but did not confirm some of the blocks
	gatewayError      = "error"      // failed (dial, RPC or stream error)
	gatewayCanceled   = "canceled"   // the caller gave up first
)

func newBlocksStoreMetrics(reg prometheus.Registerer) *blocksStoreMetrics {
	m := &blocksStoreMetrics{
		queried: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "strata_querier_blocks_queried_total",
			Help: "Blocks a store-gateway confirmed having queried for the querier.",
		}),
		requests: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_querier_store_gateway_requests_total",
			Help: "StoreAPI requests the querier sent to store-gateways, by outcome (success, incomplete: some blocks not confirmed, error, canceled).",
		}, []string{"outcome"}),
		retried: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "strata_querier_blocks_retried_total",
			Help: "Blocks sent again to another of their owners after a store-gateway failed or did not confirm them.",
		}),
		unqueried: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "strata_querier_blocks_unqueried_total",
			Help: "Blocks no owner could be queried for (missing from the answer: a partial response or a failed query).",
		}),
		checks: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "strata_querier_blocks_consistency_checks_total",
			Help: "Requests whose blocks were checked to have all been queried (every request with blocks).",
		}),
		checksFailed: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "strata_querier_blocks_consistency_checks_failed_total",
			Help: "Requests left with blocks expected but queried on no store-gateway, after retries and a re-plan.",
		}),
		replans: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "strata_querier_blocks_replans_total",
			Help: "Requests whose block list was read again from the bucket because blocks could not be queried.",
		}),
		gone: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "strata_querier_blocks_gone_total",
			Help: "Blocks no store-gateway had that a re-read block list no longer names (deleted, without meta.json, or marked for deletion long enough ago): not required.",
		}),
	}
	for _, o := range []string{gatewaySuccess, gatewayIncomplete, gatewayError, gatewayCanceled} {
		m.requests.WithLabelValues(o)
	}
	return m
}

// BlocksStore is a store.StoreClient whose data are the bucket's blocks, served by the store-gateways. For each
// request it lists the tenants' blocks in the request's time range, sends each block to the first of its owners
// (one request per gateway naming its blocks in a __block_id__ block matcher of the request hints), and sends
// the blocks a gateway failed or did not confirm (the queried_blocks of its response hints) to their next owner,
// up to MaxAttempts owners per block. Blocks left over make the request's answer partial: a codes.Unavailable
// error that the proxy turns into a warning or a failed query according to the partial-response strategy.
//
// Series are read to the end from every gateway before anything is returned (a failed gateway's answer is
// dropped whole, as its blocks are asked again elsewhere), merged into one stream sorted by labels.
type BlocksStore struct {
	finder  BlocksFinder
	owners  BlockOwners
	dial    func(addr string) (storepb.StoreClient, error)
	cfg     BlocksStoreConfig
	logger  log.Logger
	metrics *blocksStoreMetrics

	mtx     sync.Mutex
	clients map[string]storepb.StoreClient
	closed  bool
}

var _ store.StoreClient = (*BlocksStore)(nil)

// NewBlocksStore returns the store-gateways as one StoreClient. dial is called once per gateway address and its
// client kept until Close (which closes it if it is an io.Closer); GatewayPool.Dial is a ready-made one (its
// clients are not Closers: close the pool after the store).
func NewBlocksStore(finder BlocksFinder, owners BlockOwners, dial func(addr string) (storepb.StoreClient, error), cfg BlocksStoreConfig, logger log.Logger, reg prometheus.Registerer) *BlocksStore {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = defaultMaxAttempts
	}
	if logger == nil {
		logger = log.NewNopLogger()
	}
	return &BlocksStore{
		finder:  finder,
		owners:  owners,
		dial:    dial,
		cfg:     cfg,
		logger:  logger,
		metrics: newBlocksStoreMetrics(reg),
		clients: map[string]storepb.StoreClient{},
	}
}

// LabelSets implements store.StoreClient: unknown, so the store is always asked.
func (s *BlocksStore) LabelSets() []labels.Labels { return nil }

// TimeRange implements store.StoreClient: unknown (the finder knows per request).
func (s *BlocksStore) TimeRange() (int64, int64) { return math.MinInt64, math.MaxInt64 }

func (s *BlocksStore) String() string { return "store-gateways" }

// Close closes the gateway clients dial returned that are io.Closers. The store is unusable afterwards.
func (s *BlocksStore) Close() error {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	s.closed = true
	var firstErr error
	for addr, c := range s.clients {
		if cl, ok := c.(io.Closer); ok {
			if err := cl.Close(); err != nil && firstErr == nil {
				firstErr = errors.Wrapf(err, "close store-gateway client %s", addr)
			}
		}
	}
	s.clients = map[string]storepb.StoreClient{}
	return firstErr
}

func (s *BlocksStore) client(addr string) (storepb.StoreClient, error) {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	if s.closed {
		return nil, errors.New("blocks store closed")
	}
	if c, ok := s.clients[addr]; ok {
		return c, nil
	}
	c, err := s.dial(addr)
	if err != nil {
		return nil, errors.Wrapf(err, "dial store-gateway %s", addr)
	}
	s.clients[addr] = c
	return c, nil
}

// GatewayPool keeps one gRPC connection per store-gateway address.
type GatewayPool struct {
	opts []grpc.DialOption

	mtx     sync.Mutex
	conns   map[string]*grpc.ClientConn
	clients map[string]storepb.StoreClient
}

// NewGatewayPool returns an empty pool dialling with store.DialOptions plus opts.
func NewGatewayPool(opts ...grpc.DialOption) *GatewayPool {
	return &GatewayPool{
		opts:    append(store.DialOptions(), opts...),
		conns:   map[string]*grpc.ClientConn{},
		clients: map[string]storepb.StoreClient{},
	}
}

// Dial returns the StoreAPI client of the gateway at addr, connecting (lazily, as grpc.NewClient does) the first
// time.
func (p *GatewayPool) Dial(addr string) (storepb.StoreClient, error) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	if c, ok := p.clients[addr]; ok {
		return c, nil
	}
	conn, err := grpc.NewClient(addr, p.opts...)
	if err != nil {
		return nil, errors.Wrapf(err, "dial store-gateway %s", addr)
	}
	c := storepb.NewStoreClient(conn)
	p.conns[addr], p.clients[addr] = conn, c
	return c, nil
}

// Close closes every connection of the pool.
func (p *GatewayPool) Close() error {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	var firstErr error
	for addr, conn := range p.conns {
		if err := conn.Close(); err != nil && firstErr == nil {
			firstErr = errors.Wrapf(err, "close connection to store-gateway %s", addr)
		}
	}
	p.conns = map[string]*grpc.ClientConn{}
	p.clients = map[string]storepb.StoreClient{}
	return firstErr
}

// blocksRequestTenants returns the request's tenants and ctx with them in outgoing gRPC metadata (the proxy
// sets it already; a direct caller may not have).
func blocksRequestTenants(ctx context.Context) (context.Context, []string, error) {
	ts, ok := tenancy.TenantsFromContext(ctx)
	if !ok {
		return ctx, nil, status.Error(codes.Unauthenticated, tenancy.ErrNoTenant.Error())
	}
	if md, _ := metadata.FromOutgoingContext(ctx); len(md.Get(tenancy.MetadataOrgID)) == 0 {
		ctx = tenancy.OutgoingContext(ctx, ts...)
	}
	return ctx, ts, nil
}

func statusFromContext(err error) error {
	return status.FromContextError(err).Err()
}

// findBlocks lists the blocks of every tenant in [minT, maxT], each once; with fresh, from block lists read
// again now (the finder is a FreshBlocksFinder).
func (s *BlocksStore) findBlocks(ctx context.Context, tenants []string, minT, maxT int64, fresh bool) ([]BlockRef, error) {
	var out []BlockRef
	seen := map[ulid.ULID]bool{}
	for _, tenant := range tenants {
		var (
			refs []BlockRef
			err  error
		)
		if ff, ok := s.finder.(FreshBlocksFinder); ok && fresh {
			refs, err = ff.FreshBlocks(ctx, tenant, minT, maxT)
		} else {
			refs, err = s.finder.Blocks(ctx, tenant, minT, maxT)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, statusFromContext(ctx.Err())
			}
			return nil, status.Errorf(codes.Unavailable, "list the blocks of tenant %s: %v", tenant, err)
		}
		for _, r := range refs {
			if !seen[r.ID] {
				seen[r.ID] = true
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// blockMatchers selects exactly the blocks ids by their ULIDs (which need no regexp escaping).
func blockMatchers(ids []string) []*storepb.LabelMatcher {
	return []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: store.BlockIDLabel, Value: strings.Join(ids, "|")}}
}

// blockState is one block's progress through a request's attempts.
type blockState struct {
	ref    BlockRef
	id     string
	owners []string
	tried  []string
}

// nextOwner is the first owner not tried for this block and not failed in this request ("" if none, or if
// maxAttempts owners were tried already).
func (b *blockState) nextOwner(failed map[string]bool, maxAttempts int) string {
	if len(b.tried) >= maxAttempts {
		return ""
	}
	for _, o := range b.owners {
		if !failed[o] && !slices.Contains(b.tried, o) {
			return o
		}
	}
	return ""
}

// gatewayCall asks the gateway at addr about the blocks ids; it returns what it answered and which of the
// blocks it confirmed having queried.
type gatewayCall[T any] func(ctx context.Context, c storepb.StoreClient, addr string, ids []string) (T, []string, error)

// distribution is what a request's attempts came to.
type distribution[T any] struct {
	answers  []gatewayAnswer[T] // of the gateways that answered, in the order of the attempts
	missing  []*blockState      // blocks no gateway confirmed
	tried    []string           // every gateway asked, sorted
	failures []string           // "addr: error" of the gateways that failed, and owner look-up errors

	failed map[string]bool // gateways that failed in this request: not asked again
	asked  map[string]bool
}

func newDistribution[T any]() *distribution[T] {
	return &distribution[T]{failed: map[string]bool{}, asked: map[string]bool{}}
}

type gatewayAnswer[T any] struct {
	addr string
	val  T
}

// unqueriedError is the error of blocks left over: codes.Unavailable naming how many, a few of them, the
// gateways tried and a few of their failures.
func (d *distribution[T]) unqueriedError() error {
	if len(d.missing) == 0 {
		return nil
	}
	const show = 5
	ids := make([]string, 0, min(show, len(d.missing)))
	for _, b := range d.missing[:min(show, len(d.missing))] {
		ids = append(ids, b.id)
	}
	more := ""
	if len(d.missing) > show {
		more = fmt.Sprintf(" and %d more", len(d.missing)-show)
	}
	tried := "none"
	if len(d.tried) > 0 {
		tried = strings.Join(d.tried, ", ")
	}
	msg := fmt.Sprintf("%d blocks could not be queried on any of their store-gateways (%s%s); gateways tried: %s", len(d.missing), strings.Join(ids, ", "), more, tried)
	if len(d.failures) > 0 {
		msg += "; failures: " + strings.Join(d.failures[:min(3, len(d.failures))], "; ")
	}
	return status.Error(codes.Unavailable, msg)
}

// queryBlocks runs one request over the blocks of tenants in [minT, maxT] (nil: there are none): each block
// goes to its owners, one after the other, until one confirms having queried it. Then the consistency check
// (Mimir's): when blocks are left that no owner confirmed, the block lists are read again at once and the
// request re-planned: blocks gone from them (deleted, without meta.json, marked for deletion longer ago than the
// delay; the store-gateways may drop such a block before this querier's list does) are no longer required,
// blocks new in them are queried, and only blocks still expected and queried nowhere stay missing. The error is
// the caller's context's, or the finder's.
func queryBlocks[T any](ctx context.Context, s *BlocksStore, method string, tenants []string, minT, maxT int64, call gatewayCall[T]) (*distribution[T], error) {
	refs, err := s.findBlocks(ctx, tenants, minT, maxT, false)
	if err != nil || len(refs) == 0 {
		return nil, err
	}
	s.metrics.checks.Inc()
	d := newDistribution[T]()
	var pending []*blockState
	for _, r := range refs {
		if b := lookupOwners(s, d, &blockState{ref: r, id: r.ID.String()}); b != nil {
			pending = append(pending, b)
		}
	}
	if err := distribute(ctx, s, method, pending, d, call); err != nil {
		return nil, err
	}
	if len(d.missing) > 0 {
		if err := replan(ctx, s, method, tenants, minT, maxT, refs, d, call); err != nil {
			return nil, err
		}
	}
	for addr := range d.asked {
		d.tried = append(d.tried, addr)
	}
	sort.Strings(d.tried)
	if len(d.missing) > 0 {
		s.metrics.checksFailed.Inc()
		s.metrics.unqueried.Add(float64(len(d.missing)))
		level.Warn(s.logger).Log("msg", "blocks could not be queried on the store-gateways", "method", method, "blocks", len(d.missing), "gateways", strings.Join(d.tried, ","))
	}
	return d, nil
}

// lookupOwners sets b's owners and returns it; when they cannot be looked up, b is missing and nil returned.
func lookupOwners[T any](s *BlocksStore, d *distribution[T], b *blockState) *blockState {
	owners, err := s.owners(b.ref.ID)
	if err != nil {
		d.failures = append(d.failures, fmt.Sprintf("owners of block %s: %v", b.id, err))
		d.missing = append(d.missing, b)
		return nil
	}
	b.owners = owners
	return b
}

// replan reads the block lists again (when the finder can) and queries what they now expect and was not
// queried: the missing blocks still listed (on owners not tried yet) and the blocks new in the lists. Missing
// blocks no longer listed are dropped from d.missing.
func replan[T any](ctx context.Context, s *BlocksStore, method string, tenants []string, minT, maxT int64, planned []BlockRef, d *distribution[T], call gatewayCall[T]) error {
	if _, ok := s.finder.(FreshBlocksFinder); !ok {
		return nil
	}
	s.metrics.replans.Inc()
	fresh, err := s.findBlocks(ctx, tenants, minT, maxT, true)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		d.failures = append(d.failures, fmt.Sprintf("read the block list again: %v", err))
		return nil // the missing blocks stay missing
	}
	expected := make(map[ulid.ULID]bool, len(fresh))
	for _, r := range fresh {
		expected[r.ID] = true
	}
	missing := d.missing
	d.missing = nil
	var (
		pending []*blockState
		gone    []string
	)
	for _, b := range missing {
		if !expected[b.ref.ID] {
			gone = append(gone, b.id)
			continue
		}
		if len(b.owners) == 0 {
			if b = lookupOwners(s, d, b); b == nil {
				continue
			}
		}
		pending = append(pending, b)
	}
	known := make(map[ulid.ULID]bool, len(planned))
	for _, r := range planned {
		known[r.ID] = true
	}
	added := 0
	for _, r := range fresh {
		if !known[r.ID] {
			added++
			if b := lookupOwners(s, d, &blockState{ref: r, id: r.ID.String()}); b != nil {
				pending = append(pending, b)
			}
		}
	}
	s.metrics.gone.Add(float64(len(gone)))
	level.Debug(s.logger).Log("msg", "blocks queried nowhere: block list read again", "method", method, "missing", len(missing), "gone", len(gone), "new", added, "gone_blocks", strings.Join(gone, ","))
	return distribute(ctx, s, method, pending, d, call)
}

// distribute runs the attempts of one request over pending blocks: each not yet queried block goes to its next
// owner, one call per gateway per attempt, the gateways of an attempt in parallel; what is left goes to
// d.missing. The error is the caller's context's, only.
func distribute[T any](ctx context.Context, s *BlocksStore, method string, pending []*blockState, d *distribution[T], call gatewayCall[T]) error {
	var sem chan struct{}
	if s.cfg.MaxConcurrency > 0 {
		sem = make(chan struct{}, s.cfg.MaxConcurrency)
	}
	for attempt := 0; attempt < s.cfg.MaxAttempts && len(pending) > 0; attempt++ {
		if err := ctx.Err(); err != nil {
			return statusFromContext(err)
		}
		groups := map[string][]*blockState{}
		var addrs []string
		for _, b := range pending {
			addr := b.nextOwner(d.failed, s.cfg.MaxAttempts)
			if addr == "" {
				d.missing = append(d.missing, b) // no owner left to ask
				continue
			}
			if len(b.tried) > 0 {
				s.metrics.retried.Inc()
			}
			b.tried = append(b.tried, addr)
			if _, ok := groups[addr]; !ok {
				addrs = append(addrs, addr)
			}
			groups[addr] = append(groups[addr], b)
			d.asked[addr] = true
		}
		pending = pending[:0:0]
		if len(addrs) == 0 {
			break
		}

		type result struct {
			val     T
			queried []string
			err     error
		}
		results := make([]result, len(addrs))
		var wg sync.WaitGroup
		for i, addr := range addrs {
			ids := make([]string, 0, len(groups[addr]))
			for _, b := range groups[addr] {
				ids = append(ids, b.id)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if sem != nil {
					select {
					case sem <- struct{}{}:
						defer func() { <-sem }()
					case <-ctx.Done():
						results[i].err = ctx.Err()
						return
					}
				}
				c, err := s.client(addr)
				if err != nil {
					results[i].err = err
					return
				}
				gctx, cancel := context.WithCancel(ctx)
				defer cancel()
				results[i].val, results[i].queried, results[i].err = call(gctx, c, addr, ids)
			}()
		}
		wg.Wait()
		err := ctx.Err()
		for i := range results {
			if err == nil && callerDeadline(ctx, results[i].err) {
				err = context.DeadlineExceeded
			}
		}
		if err != nil {
			for range addrs {
				s.metrics.requests.WithLabelValues(gatewayCanceled).Inc()
			}
			return statusFromContext(err)
		}

		for i, addr := range addrs {
			res := results[i]
			if res.err != nil {
				s.metrics.requests.WithLabelValues(gatewayError).Inc()
				level.Debug(s.logger).Log("msg", "store-gateway failed; its blocks go to their next owners", "method", method, "gateway", addr, "blocks", len(groups[addr]), "err", res.err)
				d.failed[addr] = true
				d.failures = append(d.failures, fmt.Sprintf("%s: %v", addr, res.err))
				pending = append(pending, groups[addr]...)
				continue
			}
			confirmed := make(map[string]bool, len(res.queried))
			for _, id := range res.queried {
				confirmed[id] = true
			}
			outcome := gatewaySuccess
			for _, b := range groups[addr] {
				if confirmed[b.id] {
					s.metrics.queried.Inc()
					continue
				}
				outcome = gatewayIncomplete
				pending = append(pending, b)
			}
			if outcome == gatewayIncomplete {
				level.Debug(s.logger).Log("msg", "store-gateway did not confirm some blocks; they go to their next owners", "method", method, "gateway", addr, "blocks", len(groups[addr]), "confirmed", len(res.queried))
			}
			s.metrics.requests.WithLabelValues(outcome).Inc()
			d.answers = append(d.answers, gatewayAnswer[T]{addr: addr, val: res.val})
		}
	}
	d.missing = append(d.missing, pending...)
	return nil
}

// callerDeadline reports whether a gateway's error is the caller's deadline: gRPC passes the deadline on, so
// the gateway's side may reach it, and answer DeadlineExceeded, a moment before the caller's context does.
func callerDeadline(ctx context.Context, err error) bool {
	if status.Code(err) != codes.DeadlineExceeded {
		return false
	}
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < 100*time.Millisecond
}

// strictRequest reports whether a request asked for failures to fail it rather than to become warnings.
func strictRequest(strategy storepb.PartialResponseStrategy, disabled bool) bool {
	return disabled || strategy == storepb.PartialResponseStrategy_ABORT
}

// gatewaySeries is one gateway's answer to a Series request.
type gatewaySeries struct {
	series   []*storepb.Series
	warnings []string
}

// Series implements storepb.StoreClient. The blocks' series come back as one stream sorted by labels, warnings
// first. Blocks that could not be queried end the stream with a codes.Unavailable error after the series
// (a partial answer) or, when the request aborts on partial responses, fail the call itself.
func (s *BlocksStore) Series(ctx context.Context, req *storepb.SeriesRequest, opts ...grpc.CallOption) (storepb.Store_SeriesClient, error) {
	ctx, tenants, err := blocksRequestTenants(ctx)
	if err != nil {
		return nil, err
	}
	var queryStats bool
	if h := req.GetHints(); h != nil {
		var rh hintspb.SeriesRequestHints
		if h.UnmarshalTo(&rh) == nil {
			queryStats = rh.GetEnableQueryStats()
		}
	}
	d, err := queryBlocks(ctx, s, "series", tenants, req.GetMinTime(), req.GetMaxTime(), func(ctx context.Context, c storepb.StoreClient, addr string, ids []string) (gatewaySeries, []string, error) {
		var out gatewaySeries
		hints, err := anypb.New(&hintspb.SeriesRequestHints{BlockMatchers: blockMatchers(ids), EnableQueryStats: queryStats})
		if err != nil {
			return out, nil, errors.Wrap(err, "encode series request hints")
		}
		r := proto.Clone(req).(*storepb.SeriesRequest)
		r.Hints = hints
		stream, err := c.Series(ctx, r, opts...)
		if err != nil {
			return out, nil, err
		}
		var queried []string
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return out, queried, nil
			}
			if err != nil {
				return out, nil, err
			}
			switch res := resp.GetResult().(type) {
			case *storepb.SeriesResponse_Series:
				out.series = append(out.series, res.Series)
			case *storepb.SeriesResponse_Batch:
				out.series = append(out.series, res.Batch.GetSeries()...)
			case *storepb.SeriesResponse_Warning:
				out.warnings = append(out.warnings, fmt.Sprintf("store-gateway %s: %s", addr, res.Warning))
			case *storepb.SeriesResponse_Hints:
				var rh hintspb.SeriesResponseHints
				if err := res.Hints.UnmarshalTo(&rh); err != nil {
					level.Debug(s.logger).Log("msg", "store-gateway series hints of an unknown type", "gateway", addr, "type", res.Hints.GetTypeUrl())
					continue
				}
				for _, b := range rh.GetQueriedBlocks() {
					queried = append(queried, b.GetId())
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if d == nil {
		return &seriesStream{ctx: ctx}, nil
	}
	partial := d.unqueriedError()
	if partial != nil && strictRequest(req.GetPartialResponseStrategy(), req.GetPartialResponseDisabled()) {
		return nil, partial
	}

	var (
		all      []*storepb.Series
		warnings []string
	)
	for _, a := range d.answers {
		all = append(all, a.val.series...)
		warnings = append(warnings, a.val.warnings...)
	}
	merged := store.MergeSeries(all)
	if req.GetLimit() > 0 && int64(len(merged)) > req.GetLimit() {
		merged = merged[:req.GetLimit()]
	}
	return newSeriesStream(ctx, uniqueWarnings(warnings), merged, int(req.GetResponseBatchSize()), partial), nil
}

func uniqueWarnings(ss []string) []string {
	seen := make(map[string]bool, len(ss))
	out := ss[:0]
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// seriesStream is an in-memory storepb.Store_SeriesClient: the warnings, then the series (in batches when the
// request asked for them), then err or io.EOF.
type seriesStream struct {
	ctx   context.Context
	resps []*storepb.SeriesResponse
	err   error
	next  int
}

func newSeriesStream(ctx context.Context, warnings []string, series []*storepb.Series, batchSize int, err error) *seriesStream {
	s := &seriesStream{ctx: ctx, err: err}
	for _, w := range warnings {
		s.resps = append(s.resps, &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Warning{Warning: w}})
	}
	if batchSize <= 1 {
		for _, ser := range series {
			s.resps = append(s.resps, &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Series{Series: ser}})
		}
		return s
	}
	for len(series) > 0 {
		n := min(batchSize, len(series))
		s.resps = append(s.resps, &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Batch{Batch: &storepb.SeriesBatch{Series: series[:n:n]}}})
		series = series[n:]
	}
	return s
}

func (s *seriesStream) Recv() (*storepb.SeriesResponse, error) {
	if err := s.ctx.Err(); err != nil {
		return nil, statusFromContext(err)
	}
	if s.next < len(s.resps) {
		r := s.resps[s.next]
		s.resps[s.next] = nil
		s.next++
		return r, nil
	}
	if s.err != nil {
		return nil, s.err
	}
	return nil, io.EOF
}

func (s *seriesStream) RecvMsg(m any) error {
	resp, err := s.Recv()
	if err != nil {
		return err
	}
	dst, ok := m.(*storepb.SeriesResponse)
	if !ok {
		return errors.Newf("blocks store stream: cannot receive into %T", m)
	}
	proto.Reset(dst)
	proto.Merge(dst, resp)
	return nil
}

func (s *seriesStream) Header() (metadata.MD, error) { return metadata.MD{}, nil }
func (s *seriesStream) Trailer() metadata.MD         { return metadata.MD{} }
func (s *seriesStream) CloseSend() error             { return nil }
func (s *seriesStream) Context() context.Context     { return s.ctx }
func (s *seriesStream) SendMsg(any) error            { return nil }

// labelsAnswer is one gateway's answer to LabelNames or LabelValues.
type labelsAnswer struct {
	values   []string
	warnings []string
}

// labelsRange is the finder's time range of a label request (end 0: unbounded, as the proxy reads it).
func labelsRange(start, end int64) (int64, int64) {
	if end == 0 {
		end = math.MaxInt64
	}
	return start, end
}

// finishLabels unions the answers; left-over blocks fail the request or become a warning by its strategy.
func finishLabels(d *distribution[labelsAnswer], strict bool, limit int64) ([]string, []string, error) {
	var values, warnings []string
	for _, a := range d.answers {
		values = append(values, a.val.values...)
		warnings = append(warnings, a.val.warnings...)
	}
	if err := d.unqueriedError(); err != nil {
		if strict {
			return nil, nil, err
		}
		warnings = append(warnings, err.Error())
	}
	slices.Sort(values)
	values = slices.Compact(values)
	if limit > 0 && int64(len(values)) > limit {
		values = values[:limit]
	}
	return values, uniqueWarnings(warnings), nil
}

func queriedIDs(bs []*hintspb.Block) []string {
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.GetId())
	}
	return out
}

func prefixWarnings(addr string, ws []string) []string {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, fmt.Sprintf("store-gateway %s: %s", addr, w))
	}
	return out
}

// LabelNames implements storepb.StoreClient: the union of the gateways' answers over the request's blocks.
func (s *BlocksStore) LabelNames(ctx context.Context, req *storepb.LabelNamesRequest, opts ...grpc.CallOption) (*storepb.LabelNamesResponse, error) {
	ctx, tenants, err := blocksRequestTenants(ctx)
	if err != nil {
		return nil, err
	}
	minT, maxT := labelsRange(req.GetStart(), req.GetEnd())
	d, err := queryBlocks(ctx, s, "label_names", tenants, minT, maxT, func(ctx context.Context, c storepb.StoreClient, addr string, ids []string) (labelsAnswer, []string, error) {
		hints, err := anypb.New(&hintspb.LabelNamesRequestHints{BlockMatchers: blockMatchers(ids)})
		if err != nil {
			return labelsAnswer{}, nil, errors.Wrap(err, "encode label names request hints")
		}
		r := proto.Clone(req).(*storepb.LabelNamesRequest)
		r.Hints = hints
		resp, err := c.LabelNames(ctx, r, opts...)
		if err != nil {
			return labelsAnswer{}, nil, err
		}
		var rh hintspb.LabelNamesResponseHints
		if h := resp.GetHints(); h != nil {
			if err := h.UnmarshalTo(&rh); err != nil {
				level.Debug(s.logger).Log("msg", "store-gateway label names hints of an unknown type", "gateway", addr, "type", h.GetTypeUrl())
			}
		}
		return labelsAnswer{values: resp.GetNames(), warnings: prefixWarnings(addr, resp.GetWarnings())}, queriedIDs(rh.GetQueriedBlocks()), nil
	})
	if err != nil || d == nil {
		return &storepb.LabelNamesResponse{}, err
	}
	names, warnings, err := finishLabels(d, strictRequest(req.GetPartialResponseStrategy(), req.GetPartialResponseDisabled()), req.GetLimit())
	if err != nil {
		return nil, err
	}
	return &storepb.LabelNamesResponse{Names: names, Warnings: warnings}, nil
}

// LabelValues implements storepb.StoreClient: the union of the gateways' answers over the request's blocks.
func (s *BlocksStore) LabelValues(ctx context.Context, req *storepb.LabelValuesRequest, opts ...grpc.CallOption) (*storepb.LabelValuesResponse, error) {
	ctx, tenants, err := blocksRequestTenants(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetLabel() == "" {
		return nil, status.Error(codes.InvalidArgument, "label name parameter cannot be empty")
	}
	minT, maxT := labelsRange(req.GetStart(), req.GetEnd())
	d, err := queryBlocks(ctx, s, "label_values", tenants, minT, maxT, func(ctx context.Context, c storepb.StoreClient, addr string, ids []string) (labelsAnswer, []string, error) {
		hints, err := anypb.New(&hintspb.LabelValuesRequestHints{BlockMatchers: blockMatchers(ids)})
		if err != nil {
			return labelsAnswer{}, nil, errors.Wrap(err, "encode label values request hints")
		}
		r := proto.Clone(req).(*storepb.LabelValuesRequest)
		r.Hints = hints
		resp, err := c.LabelValues(ctx, r, opts...)
		if err != nil {
			return labelsAnswer{}, nil, err
		}
		var rh hintspb.LabelValuesResponseHints
		if h := resp.GetHints(); h != nil {
			if err := h.UnmarshalTo(&rh); err != nil {
				level.Debug(s.logger).Log("msg", "store-gateway label values hints of an unknown type", "gateway", addr, "type", h.GetTypeUrl())
			}
		}
		return labelsAnswer{values: resp.GetValues(), warnings: prefixWarnings(addr, resp.GetWarnings())}, queriedIDs(rh.GetQueriedBlocks()), nil
	})
	if err != nil || d == nil {
		return &storepb.LabelValuesResponse{}, err
	}
	values, warnings, err := finishLabels(d, strictRequest(req.GetPartialResponseStrategy(), req.GetPartialResponseDisabled()), req.GetLimit())
	if err != nil {
		return nil, err
	}
	return &storepb.LabelValuesResponse{Values: values, Warnings: warnings}, nil
}

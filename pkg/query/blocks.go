package query

import (
	"context"
	"io"
	"math"
	"sync"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store"
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

// strictRequest reports whether a request asked for failures to fail it rather than to become warnings.
func strictRequest(strategy storepb.PartialResponseStrategy, disabled bool) bool {
	return disabled || strategy == storepb.PartialResponseStrategy_ABORT
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

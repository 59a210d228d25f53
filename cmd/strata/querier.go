package main

import (
	"context"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/oklog/run"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/query"
	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

type querierConfig struct {
	Engine query.EngineConfig `yaml:"engine"`
	// Endpoints are static StoreAPI endpoints: "addr" (asked for every tenant) or "tenant=addr".
	Endpoints     []string `yaml:"endpoints"`
	ReplicaLabels []string `yaml:"replica_labels"`
	// QueryIngestersWithin: requests that end earlier than this before now do not ask the ingesters.
	QueryIngestersWithin time.Duration `yaml:"query_ingesters_within"`
	PartialResponse      bool          `yaml:"partial_response"`
	StoreTimeout         time.Duration `yaml:"store_timeout"`
	InfoRefreshInterval  time.Duration `yaml:"info_refresh_interval"`
	// BlocksRefreshInterval is how often a tenant's block list is read again from the bucket (and at once when a
	// query finds blocks no store-gateway has).
	BlocksRefreshInterval time.Duration `yaml:"blocks_refresh_interval"`
	// BlocksUploadGracePeriod: blocks uploaded less than this ago are not asked of the store-gateways, which may
	// not have synced them (their data is still in the ingesters). 0: twice the store-gateway sync interval.
	BlocksUploadGracePeriod time.Duration `yaml:"blocks_upload_grace_period"`
}

func defaultQuerierConfig() querierConfig {
	return querierConfig{
		Engine:               query.DefaultEngineConfig(),
		QueryIngestersWithin: 13 * time.Hour,
		PartialResponse:      true,
		StoreTimeout:         0,
		InfoRefreshInterval:  30 * time.Second,

		BlocksRefreshInterval: time.Minute,
	}
}

// Validate checks the querier's config.
func (c querierConfig) Validate() error {
	for _, e := range c.Endpoints {
		if _, err := query.ParseEndpoint(e); err != nil {
			return err
		}
	}
	if c.Engine.LookbackDelta <= 0 || c.Engine.Timeout <= 0 || c.InfoRefreshInterval <= 0 {
		return errors.New("querier: lookback delta, timeout and info refresh interval must be positive")
	}
	if c.Engine.Expression.MaxDepth <= 0 || c.Engine.Expression.MaxTokens <= 0 {
		return errors.New("querier: max_expression_depth and max_expression_tokens must be positive (they keep a query from crashing the process)")
	}
	return nil
}

// registerQuerierFlags registers the flags of the querier (strata querier, strata all).
func registerQuerierFlags(cmd *kingpin.CmdClause, b *binder, cfg *Config) {
	q := &cfg.Querier
	b.Strings(cmd.Flag("endpoint", "StoreAPI endpoint to query (sidecar, external Thanos store): addr, or tenant=addr to ask it only for that tenant's queries. Repeatable."), &q.Endpoints)
	b.Strings(cmd.Flag("query.replica-label", "Label whose values name replicas of the same series (HA pairs); series differing only in these are deduplicated. Repeatable; a tenant's query_replica_labels override it."), &q.ReplicaLabels)
	b.Duration(cmd.Flag("querier.query-ingesters-within", "Ask the ingesters only for queries that reach into this last period (0: always)."), &q.QueryIngestersWithin)
	b.Bool(cmd.Flag("query.partial-response", "Default of the partial_response parameter: a failing store becomes a warning instead of an error."), &q.PartialResponse)
	b.Duration(cmd.Flag("query.lookback-delta", "PromQL lookback delta."), &q.Engine.LookbackDelta)
	b.Int(cmd.Flag("query.max-samples", "Most samples one query may hold in memory (a tenant's max_samples overrides it)."), &q.Engine.MaxSamples)
	b.Duration(cmd.Flag("query.timeout", "Longest a query may run."), &q.Engine.Timeout)
	b.Int(cmd.Flag("query.max-expression-depth", "Deepest nesting of (), {} and [] a query expression may have; deeper ones are refused before parsing."), &q.Engine.Expression.MaxDepth)
	b.Int(cmd.Flag("query.max-expression-tokens", "Most tokens (names, numbers, strings, operators, brackets) a query expression may have; longer ones are refused before parsing."), &q.Engine.Expression.MaxTokens)
	b.Duration(cmd.Flag("query.default-evaluation-interval", "Step of subqueries that name none."), &q.Engine.DefaultEvaluationInterval)
	b.Duration(cmd.Flag("querier.blocks-refresh-interval", "How often a tenant's block list is read again from the bucket (and at once when a query finds blocks no store-gateway has)."), &q.BlocksRefreshInterval)
	b.Duration(cmd.Flag("querier.blocks-upload-grace-period", "Blocks uploaded less than this ago are not asked of the store-gateways (0: twice the store-gateway sync interval)."), &q.BlocksUploadGracePeriod)
	b.Duration(cmd.Flag("querier.store-timeout", "Longest one store may take to answer (0: the query's own timeout)."), &q.StoreTimeout)
}

// runQuerier runs `strata querier`: PromQL over the ingesters of the ring and the static endpoints. Its own
// StoreAPI (the merged view) is served on its gRPC port, for Thanos-style tiering.
func runQuerier(g *run.Group, logger log.Logger, reg *prometheus.Registry, cfg *Config) error {
	p, err := newProcess(g, logger, reg, cfg)
	if err != nil {
		return err
	}
	bkt, err := newBucket(g, p, cfg, logger, reg)
	if err != nil {
		return err
	}
	r, err := newIngesterRing(g, p, cfg, logger, reg)
	if err != nil {
		return err
	}
	gw, err := newGatewayRing(g, p, r, cfg, logger, reg)
	if err != nil {
		return err
	}
	proxy, err := setupQuerier(g, p, r, gw, bkt, nil, cfg, logger, reg)
	if err != nil {
		return err
	}
	storepb.RegisterStoreServer(p.srv.GRPC(), proxy)
	infopb.RegisterInfoServer(p.srv.GRPC(), proxy)
	return nil
}

// setupQuerier serves the Prometheus HTTP API under /api/v1/ and /prometheus/api/v1/, over the ingesters, the
// static endpoints and, with a store-gateway ring, the bucket's blocks.
func setupQuerier(g *run.Group, p *process, r *ingesterRing, gw *dskitring.Ring, bkt objstore.Bucket, local *localGateway, cfg *Config, logger log.Logger, reg prometheus.Registerer) (*store.Proxy, error) {
	logger = log.With(logger, "component", "querier")
	var specs []query.EndpointSpec
	for _, e := range cfg.Querier.Endpoints {
		spec, err := query.ParseEndpoint(e)
		if err != nil {
			return nil, errSetup(err, "querier endpoints")
		}
		specs = append(specs, spec)
	}
	var ingesters func() ([]string, error)
	if r != nil {
		ingesters = func() ([]string, error) { return ingesterAddrs(r.client) }
	}
	endpoints, err := query.NewEndpoints(specs, ingesters, cfg.IngesterRing.ReplicationFactor, cfg.Querier.QueryIngestersWithin, logger)
	if err != nil {
		return nil, errSetup(err, "querier endpoints")
	}
	addContextActor(g, func(ctx context.Context) error {
		endpoints.RefreshInfo(ctx, cfg.Querier.InfoRefreshInterval)
		return endpoints.Close()
	})
	selector := endpoints.Select
	if gw != nil && bkt != nil {
		blocks := newBlocksStore(g, gw, bkt, local, cfg, logger, reg)
		selector = func(tenants []string, minT, maxT int64) []store.StoreClient {
			return append(endpoints.Select(tenants, minT, maxT), blocks)
		}
	}
	proxy := store.NewSelectingProxy(selector, cfg.Querier.StoreTimeout, logger, reg)
	queryable := query.NewQueryable(proxy, p.overrides, cfg.Querier.ReplicaLabels, reg)
	api := cfg.Auth.HTTPMiddleware(false)(query.NewAPI(queryable, p.overrides,
		query.APIConfig{Engine: cfg.Querier.Engine, PartialResponse: cfg.Querier.PartialResponse, Metadata: newMetadataQuerier(g, r, cfg.IngesterRing)}, logger, reg))
	p.srv.Handle("/api/v1/", api)
	p.srv.Handle("/prometheus/api/v1/", api)
	p.srv.AddLinks("Querier",
		server.Link{Path: "/prometheus/api/v1/query?query=up", Desc: "Prometheus HTTP API (also under /api/v1/); needs X-Scope-OrgID"},
		server.Link{Path: "/prometheus/api/v1/status/buildinfo", Desc: "Build information"})
	return proxy, nil
}

// newBlocksStore returns the store of the bucket's blocks: each asked of its owners in the store-gateway ring.
func newBlocksStore(g *run.Group, gw *dskitring.Ring, bkt objstore.Bucket, local *localGateway, cfg *Config, logger log.Logger, reg prometheus.Registerer) *query.BlocksStore {
	grace := cfg.Querier.BlocksUploadGracePeriod
	if grace <= 0 {
		grace = 2 * cfg.StoreGateway.SyncInterval
	}
	finder := query.NewBucketBlocksFinder(bkt, cfg.Querier.BlocksRefreshInterval, grace, cfg.StoreGateway.IgnoreDeletionMarkDelay, time.Now)
	owners := func(id ulid.ULID) ([]string, error) { return ring.BlockOwners(gw, id, ring.BlocksRead) }
	pool := query.NewGatewayPool()
	dial := pool.Dial
	if local != nil {
		localPool := query.NewGatewayPool(grpc.WithContextDialer(local.dial))
		dial = func(addr string) (storepb.StoreClient, error) {
			if addr == local.addr {
				return localPool.Dial(addr)
			}
			return pool.Dial(addr)
		}
		defer addContextActor(g, func(ctx context.Context) error { <-ctx.Done(); return localPool.Close() })
	}
	blocks := query.NewBlocksStore(finder, owners, dial, query.BlocksStoreConfig{}, logger, reg)
	addContextActor(g, func(ctx context.Context) error {
		<-ctx.Done()
		_ = blocks.Close()
		return pool.Close()
	})
	return blocks
}

// ingesterAddrs lists the gRPC addresses of the healthy ingesters in the ring (none when the ring is empty).
func ingesterAddrs(r *dskitring.Ring) ([]string, error) {
	rs, err := r.GetAllHealthy(dskitring.Read)
	if errors.Is(err, dskitring.ErrEmptyRing) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return rs.GetAddresses(), nil
}

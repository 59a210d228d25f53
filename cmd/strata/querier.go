package main

import (
	"context"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/oklog/ulid/v2"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/query"
	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// registerQuerierFlags registers the flags of the querier (strata querier, strata all).
func registerQuerierFlags(cmd *kingpin.CmdClause, b *binder, cfg *Config) {
	q := &cfg.Querier
	b.Strings(cmd.Flag("endpoint", "StoreAPI endpoint to query (sidecar, external Thanos store): addr, or tenant=addr to ask it only for that tenant's queries. Repeatable."), &q.Endpoints)
	b.Strings(cmd.Flag("query.replica-label", "Label whose values name replicas of the same series (HA pairs); series differing only in these are deduplicated. Repeatable; a tenant's query_replica_labels override it."), &q.ReplicaLabels)
	b.Duration(cmd.Flag("querier.query-ingesters-within", "Ask the ingesters only for queries that reach into this last period (0: always)."), &q.QueryIngestersWithin)
	b.Bool(cmd.Flag("querier.shuffle-sharding-ingesters-enabled", "Read a tenant with an ingestion_tenant_shard_size from its shuffle shard of the ingesters only."), &q.ShuffleShardingIngestersEnabled)
	b.Duration(cmd.Flag("querier.shuffle-sharding-ingesters-lookback-period", "A tenant's shard read also asks the ingesters that were in its shard within this period (0: querier.query-ingesters-within)."), &q.ShuffleShardingIngestersLookbackPeriod)
	b.Bool(cmd.Flag("query.partial-response", "Default of the partial_response parameter: a failing store becomes a warning instead of an error."), &q.PartialResponse)
	b.Bool(cmd.Flag("query.auto-downsampling", "Requests without max_source_resolution read downsampled data as if they said auto: the coarsest resolution not above a fifth of the step (Thanos)."), &q.AutoDownsampling)
	b.Duration(cmd.Flag("query.lookback-delta", "PromQL lookback delta."), &q.Engine.LookbackDelta)
	b.Int(cmd.Flag("query.max-samples", "Most samples one query may hold in memory (a tenant's max_samples overrides it)."), &q.Engine.MaxSamples)
	b.Duration(cmd.Flag("query.timeout", "Longest a query may run."), &q.Engine.Timeout)
	b.Int(cmd.Flag("query.max-expression-depth", "Deepest nesting of (), {} and [] a query expression may have; deeper ones are refused before parsing."), &q.Engine.Expression.MaxDepth)
	b.Int(cmd.Flag("query.max-expression-tokens", "Most tokens (names, numbers, strings, operators, brackets) a query expression may have; longer ones are refused before parsing."), &q.Engine.Expression.MaxTokens)
	b.Duration(cmd.Flag("query.default-evaluation-interval", "Step of subqueries that name none."), &q.Engine.DefaultEvaluationInterval)
	b.Duration(cmd.Flag("querier.blocks-refresh-interval", "How often a tenant's block list is read again from the bucket (and at once when a query finds blocks no store-gateway has)."), &q.BlocksRefreshInterval)
	b.Duration(cmd.Flag("querier.blocks-upload-grace-period", "Blocks uploaded less than this ago are not asked of the store-gateways (0: twice the store-gateway sync interval)."), &q.BlocksUploadGracePeriod)
	b.Duration(cmd.Flag("querier.store-timeout", "Longest one store may take to answer (0: the query's own timeout)."), &q.StoreTimeout)
	registerCardinalityFlags(cmd, b, cfg)
}

// runQuerier runs `strata querier`: PromQL over the ingesters of the ring and the static endpoints. Its own
// StoreAPI (the merged view) is served on its gRPC port, for Thanos-style tiering.
func runQuerier(p *process) error {
	if err := setupAll(p, setupServers, setupBucket, setupIngesterRing, setupGatewayRing, setupQuerier); err != nil {
		return err
	}
	storepb.RegisterStoreServer(p.srv.GRPC(), p.proxy)
	infopb.RegisterInfoServer(p.srv.GRPC(), p.proxy)
	return nil
}

// setupQuerier serves the Prometheus HTTP API under /api/v1/ and /prometheus/api/v1/, over the ingesters, the
// static endpoints and, with a store-gateway ring, the bucket's blocks (a store-gateway of the process through
// p.localGateway). p.proxy is then the merged view of all the stores, for the process's StoreAPI.
func setupQuerier(p *process) error {
	cfg, g := p.cfg, p.g
	logger := log.With(p.logger, "component", "querier")
	var specs []query.EndpointSpec
	for _, e := range cfg.Querier.Endpoints {
		spec, err := query.ParseEndpoint(e)
		if err != nil {
			return errSetup(err, "querier endpoints")
		}
		specs = append(specs, spec)
	}
	r := p.ingesterRing
	var ingesters func() ([]string, error)
	var shards query.ShardRing
	if r != nil && r.client != nil {
		ingesters = func() ([]string, error) { return ingesterAddrs(r.client) }
		shards = r.client
	}
	endpoints, err := query.NewEndpoints(specs, ingesters, cfg.IngesterRing.ReplicationFactor, cfg.Querier.QueryIngestersWithin, logger, p.dialOpts...)
	if err != nil {
		return errSetup(err, "querier endpoints")
	}
	endpoints.WithShuffleSharding(shards, p.overrides.IngestionTenantShardSize, cfg.Querier.IngestersLookback())
	addContextActor(g, func(ctx context.Context) error {
		endpoints.RefreshInfo(ctx, cfg.Querier.InfoRefreshInterval)
		return endpoints.Close()
	})
	selector := endpoints.Select
	if p.gatewayRing != nil && p.bkt != nil {
		blocks := newBlocksStore(p, logger)
		selector = func(tenants []string, minT, maxT int64) []store.StoreClient {
			return append(endpoints.Select(tenants, minT, maxT), blocks)
		}
	}
	proxy := store.NewSelectingProxy(selector, cfg.Querier.StoreTimeout, logger, p.reg)
	queryable := query.NewQueryable(proxy, p.overrides, cfg.Querier.ReplicaLabels, p.reg)
	api := cfg.Auth.HTTPMiddleware(true)(query.NewAPI(queryable, p.overrides,
		query.APIConfig{Engine: cfg.Querier.Engine, PartialResponse: cfg.Querier.PartialResponse, AutoDownsampling: cfg.Querier.AutoDownsampling, Metadata: newMetadataQuerier(p),
			Cardinality: newCardinalityQuerier(p)}, logger, p.reg))
	p.querierAPI, p.proxy = api, proxy
	if p.frontInProcess {
		return nil
	}
	p.srv.Handle("/api/v1/", api)
	p.srv.Handle("/prometheus/api/v1/", api)
	p.srv.AddLinks("Querier",
		server.Link{Path: "/prometheus/api/v1/query?query=up", Desc: "Prometheus HTTP API (also under /api/v1/); needs X-Scope-OrgID"},
		server.Link{Path: "/prometheus/api/v1/status/buildinfo", Desc: "Build information"})
	return nil
}

// newBlocksStore returns the store of the bucket's blocks: each asked of its owners in the store-gateway ring.
func newBlocksStore(p *process, logger log.Logger) *query.BlocksStore {
	cfg, g, gw, local := p.cfg, p.g, p.gatewayRing, p.localGateway
	grace := cfg.Querier.BlocksUploadGracePeriod
	if grace <= 0 {
		grace = 2 * cfg.StoreGateway.SyncInterval
	}
	finder := query.NewBucketBlocksFinder(p.bkt, cfg.Querier.BlocksRefreshInterval, grace, cfg.StoreGateway.IgnoreDeletionMarkDelay, time.Now)
	owners := func(id ulid.ULID) ([]string, error) { return ring.BlockOwners(gw, id, ring.BlocksRead) }
	pool := query.NewGatewayPool(p.dialOpts...)
	dial := pool.Dial
	if local != nil {
		localPool := query.NewGatewayPool(append(p.secretDialOpts, grpc.WithContextDialer(local.Dial))...)
		dial = func(addr string) (storepb.StoreClient, error) {
			if addr == local.Addr {
				return localPool.Dial(addr)
			}
			return pool.Dial(addr)
		}
		defer addContextActor(g, func(ctx context.Context) error { <-ctx.Done(); return localPool.Close() })
	}
	blocks := query.NewBlocksStore(finder, owners, dial, query.BlocksStoreConfig{}, logger, p.reg)
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

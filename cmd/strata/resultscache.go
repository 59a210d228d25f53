package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/stratametrics/strata/pkg/cache"
	"github.com/stratametrics/strata/pkg/query"
	"github.com/stratametrics/strata/pkg/query/frontend"
)

// newResultsCache returns the query-frontend's results cache middleware, or nil (no results cache) when the
// backend is none or when the frontend cannot see every change of the data: it needs the bucket (setupBucket)
// and every ingester's late writes (the ingesters of this process in `strata all`, else
// query_frontend.results_cache.ingester_urls).
func newResultsCache(p *process, logger log.Logger) (frontend.Middleware, error) {
	cfg := p.cfg.QueryFrontend.ResultsCache
	if cfg.Backend == cache.BackendNone {
		return nil, nil
	}
	logs := ingesterLogs(p)
	if logs == nil || p.bkt == nil {
		level.Warn(logger).Log("msg", "results cache disabled: set query_frontend.results_cache.ingester_urls (every ingester's HTTP URL) and the bucket, so that late writes and block changes invalidate cached answers")
		return nil, nil
	}
	qc := p.cfg.Querier
	grace := qc.BlocksUploadGracePeriod
	if grace <= 0 {
		grace = 2 * p.cfg.StoreGateway.SyncInterval
	}
	// The queriers' own view of the bucket: same refresh, upload grace period and deletion-mark delay. Views are
	// equal only while a block list is always fresher than the grace period and the delay (a block or a mark is
	// then in every list by the time it counts); otherwise the cache could store an answer of an older view.
	markDelay := p.cfg.StoreGateway.IgnoreDeletionMarkDelay
	if qc.BlocksRefreshInterval >= grace || qc.BlocksRefreshInterval >= markDelay {
		level.Warn(logger).Log("msg", "results cache disabled: querier.blocks_refresh_interval must be below the blocks upload grace period and store_gateway.ignore_deletion_mark_delay",
			"refresh", qc.BlocksRefreshInterval, "grace", grace, "mark_delay", markDelay)
		return nil, nil
	}
	// A frontend on another host may have a clock ahead of the queriers': it would see a block (or a mark)
	// count before they do and store their older answer under the newer view. It looks a minute back instead;
	// lagging only keeps an extent up to that minute (plus the skew) after a new block's grace period ends.
	now := time.Now
	if !p.frontInProcess {
		now = func() time.Time { return time.Now().Add(-time.Minute) }
	}
	finder := query.NewBucketBlocksFinder(p.bkt, qc.BlocksRefreshInterval, grace, markDelay, now)
	c, err := cache.New("query-frontend-results", cfg.Config, logger, p.reg)
	if err != nil {
		return nil, errors.Wrap(err, "results cache")
	}
	addContextActor(p.g, func(ctx context.Context) error { <-ctx.Done(); cache.Close(c); return nil })
	// The querier settings that change answers are part of every key: changing them starts a new cache.
	salt, err := json.Marshal(struct {
		Engine                            query.EngineConfig
		PartialResponse, AutoDownsampling bool
		ReplicaLabels                     []string
		QueryIngestersWithin              time.Duration
	}{qc.Engine, qc.PartialResponse, qc.AutoDownsampling, qc.ReplicaLabels, qc.QueryIngestersWithin})
	if err != nil {
		return nil, errors.Wrap(err, "results cache key salt")
	}
	sum := sha256.Sum256(salt)
	// The querier's static endpoints (sidecars, external stores) change in ways the cache cannot see: their
	// tenants are not cached.
	var endpointTenants []string
	for _, e := range qc.Endpoints {
		spec, err := query.ParseEndpoint(e)
		if err != nil {
			return nil, errors.Wrap(err, "results cache: querier endpoints")
		}
		endpointTenants = append(endpointTenants, spec.Tenant)
	}
	sources := []frontend.GenerationSource{frontend.NewExternalStores(endpointTenants), frontend.NewBucketGeneration(finder), frontend.NewIngesterGeneration(logs)}
	return frontend.NewResultsCache(c, sources,
		p.overrides, frontend.ResultsCacheOptions{
			SplitInterval: p.cfg.QueryFrontend.SplitQueriesByInterval, LookbackDelta: qc.Engine.LookbackDelta, Salt: sum[:], TTL: cfg.TTL,
		}, logger, p.reg), nil
}

// ingesterLogs reads the late-write logs of every ingester: over HTTP from the configured URLs, or, in
// `strata all`, from the ingesters of this process, provided the ring holds no other (else an error: the cache
// is then bypassed). nil when neither is available.
func ingesterLogs(p *process) frontend.IngesterLogs {
	if urls := p.cfg.QueryFrontend.ResultsCache.IngesterURLs; len(urls) > 0 {
		byID := make(map[string]string, len(urls))
		for _, u := range urls {
			byID[u] = u
		}
		return frontend.IngesterLogsOverHTTP(p.internalClient(10*time.Second, nil), func() (map[string]string, error) { return byID, nil })
	}
	r := p.ingesterRing
	if r == nil || len(r.local) == 0 {
		return nil
	}
	return func(_ context.Context, tenant string) (map[string]frontend.IngesterLog, error) {
		addrs, err := ingesterAddrs(r.client)
		if err != nil {
			return nil, errors.Wrap(err, "list the ingesters")
		}
		out := make(map[string]frontend.IngesterLog, len(addrs))
		for _, a := range addrs {
			ing, ok := r.local[a]
			if !ok {
				return nil, errors.Newf("ingester %s is not in this process: set query_frontend.results_cache.ingester_urls", a)
			}
			b, err := json.Marshal(ing.LateWrites(tenant))
			if err != nil {
				return nil, errors.Wrap(err, "encode late writes")
			}
			var l frontend.IngesterLog
			if err := json.Unmarshal(b, &l); err != nil {
				return nil, errors.Wrap(err, "decode late writes")
			}
			out[a] = l
		}
		return out, nil
	}
}

// setupResultsCacheBucket opens the bucket for a standalone query-frontend whose results cache is configured
// (ingester_urls set): the cache hashes the blocks under each cached range.
func setupResultsCacheBucket(p *process) error {
	if rc := p.cfg.QueryFrontend.ResultsCache; rc.Backend == cache.BackendNone || len(rc.IngesterURLs) == 0 {
		return nil
	}
	return setupBucket(p)
}

// registerResultsCacheFlags registers the results cache's flags (strata query-frontend, strata all).
func registerResultsCacheFlags(cmd *kingpin.CmdClause, b *binder, cfg *Config, standalone bool) {
	rc := &cfg.QueryFrontend.ResultsCache
	b.String(cmd.Flag("query-frontend.results-cache.backend", "Results cache backend: inmemory, memcached (with --query-frontend.results-cache.memcached-address) or none."), &rc.Backend)
	b.Strings(cmd.Flag("query-frontend.results-cache.memcached-address", "memcached host:port of the results cache; repeatable."), &rc.Memcached.Addresses)
	if standalone {
		// The frontend's view of the bucket must be the queriers': the same settings as theirs.
		q := &cfg.Querier
		b.Duration(cmd.Flag("querier.blocks-refresh-interval", "The queriers' setting (the results cache reads the block list as they do)."), &q.BlocksRefreshInterval)
		b.Duration(cmd.Flag("querier.blocks-upload-grace-period", "The queriers' setting (the results cache reads the block list as they do)."), &q.BlocksUploadGracePeriod)
		b.Strings(cmd.Flag("query-frontend.results-cache.ingester-url", "HTTP base URL of an ingester (its /ingester/late_writes); repeatable, and it must list every ingester: without any, a standalone frontend caches nothing."), &rc.IngesterURLs)
	}
}

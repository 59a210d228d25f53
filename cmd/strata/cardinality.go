package main

import (
	"context"
	"sync"

	"github.com/alecthomas/kingpin/v2"
	"github.com/efficientgo/core/errors"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/query"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/cardinalitypb"
)

// registerCardinalityFlags registers the flags of the cardinality API (strata querier, strata all).
func registerCardinalityFlags(cmd *kingpin.CmdClause, b *binder, cfg *Config) {
	c := &cfg.Querier.Cardinality
	b.Bool(cmd.Flag("querier.cardinality-analysis-enabled", "Serve /api/v1/cardinality/label_names, /api/v1/cardinality/label_values and /api/v1/status/tsdb from the ingesters' heads."), &c.Enabled)
	b.Int(cmd.Flag("querier.label-values-max-cardinality-label-names-per-request", "Most label_names[] one /api/v1/cardinality/label_values request may name."), &c.MaxLabelNamesPerRequest)
	b.Int(cmd.Flag("querier.cardinality-max-label-values", "Most label name and value pairs one ingester may answer a cardinality request with; more is refused (422)."), &c.MaxLabelValues)
	b.Duration(cmd.Flag("querier.cardinality-timeout", "Longest a cardinality request may wait for the ingesters."), &c.Timeout)
}

// newCardinalityQuerier returns the querier of the label cardinality of the ring's ingesters' heads: each asked
// over its strata.Cardinality gRPC service, or directly for an ingester of this process (strata all). Nil
// without an ingester ring.
func newCardinalityQuerier(p *process) *query.CardinalityQuerier {
	g, r := p.g, p.ingesterRing
	if r == nil {
		return nil
	}
	var (
		mtx   sync.Mutex
		conns = map[string]*grpc.ClientConn{}
	)
	dial := func(addr string) (query.CardinalityReader, error) {
		if ing, ok := r.local[addr]; ok {
			return ing, nil
		}
		mtx.Lock()
		defer mtx.Unlock()
		c, ok := conns[addr]
		if !ok {
			var err error
			if c, err = grpc.NewClient(addr, append(store.DialOptions(), p.dialOpts...)...); err != nil {
				return nil, errors.Wrapf(err, "dial ingester %s", addr)
			}
			conns[addr] = c
		}
		return query.GRPCCardinalityReader(cardinalitypb.NewCardinalityClient(c)), nil
	}
	addContextActor(g, func(ctx context.Context) error {
		<-ctx.Done()
		mtx.Lock()
		defer mtx.Unlock()
		for addr, c := range conns {
			_ = c.Close()
			delete(conns, addr)
		}
		return nil
	})
	q := query.NewCardinalityQuerier(p.cfg.Querier.Cardinality, ingesterReadReplicas(p), p.cfg.IngesterRing.ReplicationFactor, dial)
	if r.client != nil {
		q.WithShuffleSharding(r.client, p.overrides.IngestionTenantShardSize, p.cfg.Querier.IngestersLookback())
	}
	return q
}

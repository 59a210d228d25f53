package main

import (
	"github.com/alecthomas/kingpin/v2"

	"github.com/stratametrics/strata/pkg/query"
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
	r := p.ingesterRing
	if r == nil {
		return nil
	}
	conn := ingesterConns(p)
	dial := func(addr string) (query.CardinalityReader, error) {
		if ing, ok := r.local[addr]; ok {
			return ing, nil
		}
		c, err := conn(addr)
		if err != nil {
			return nil, err
		}
		return query.GRPCCardinalityReader(cardinalitypb.NewCardinalityClient(c)), nil
	}
	q := query.NewCardinalityQuerier(p.cfg.Querier.Cardinality, ingesterReadReplicas(p), p.cfg.IngesterRing.ReplicationFactor, dial)
	if r.client != nil {
		q.WithShuffleSharding(r.client, p.overrides.IngestionTenantShardSize, p.cfg.Querier.IngestersLookback())
	}
	return q
}

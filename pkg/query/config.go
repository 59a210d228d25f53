package query

import (
	"time"

	"github.com/efficientgo/core/errors"
)

// Config is the querier's config (the querier section of the config file).
type Config struct {
	Engine EngineConfig `yaml:"engine"`
	// Endpoints are static StoreAPI endpoints: "addr" (asked for every tenant) or "tenant=addr".
	Endpoints     []string `yaml:"endpoints"`
	ReplicaLabels []string `yaml:"replica_labels"`
	// QueryIngestersWithin: requests that end earlier than this before now do not ask the ingesters.
	QueryIngestersWithin time.Duration `yaml:"query_ingesters_within"`
	// ShuffleShardingIngestersEnabled: a tenant with an ingestion_tenant_shard_size is read from its shuffle shard
	// of the ingesters only (Mimir's -querier.shuffle-sharding-ingesters-enabled).
	ShuffleShardingIngestersEnabled bool `yaml:"shuffle_sharding_ingesters_enabled"`
	// ShuffleShardingIngestersLookbackPeriod: the shard read also holds the ingesters that were in the tenant's
	// shard within this period (an ingester that joined since moved the shard). 0: query_ingesters_within.
	ShuffleShardingIngestersLookbackPeriod time.Duration `yaml:"shuffle_sharding_ingesters_lookback_period"`
	PartialResponse                        bool          `yaml:"partial_response"`
	// AutoDownsampling: a request without max_source_resolution reads as `auto` (--query.auto-downsampling).
	AutoDownsampling    bool          `yaml:"auto_downsampling"`
	StoreTimeout        time.Duration `yaml:"store_timeout"`
	InfoRefreshInterval time.Duration `yaml:"info_refresh_interval"`
	// BlocksRefreshInterval is how often a tenant's block list is read again from the bucket (and at once when a
	// query finds blocks no store-gateway has).
	BlocksRefreshInterval time.Duration `yaml:"blocks_refresh_interval"`
	// BlocksUploadGracePeriod: blocks uploaded less than this ago are not asked of the store-gateways, which may
	// not have synced them (their data is still in the ingesters). 0: twice the store-gateway sync interval.
	BlocksUploadGracePeriod time.Duration `yaml:"blocks_upload_grace_period"`
	// Cardinality configures the cardinality API (cardinality.go).
	Cardinality CardinalityConfig `yaml:"cardinality"`
}

// DefaultConfig returns the querier's defaults.
func DefaultConfig() Config {
	return Config{
		Engine:               DefaultEngineConfig(),
		QueryIngestersWithin: 13 * time.Hour,

		ShuffleShardingIngestersEnabled: true,
		PartialResponse:                 true,
		StoreTimeout:                    0,
		InfoRefreshInterval:             30 * time.Second,

		BlocksRefreshInterval: time.Minute,
		Cardinality:           DefaultCardinalityConfig(),
	}
}

// Validate checks the querier's config.
func (c Config) Validate() error {
	for _, e := range c.Endpoints {
		if _, err := ParseEndpoint(e); err != nil {
			return err
		}
	}
	if c.Engine.LookbackDelta <= 0 || c.Engine.Timeout <= 0 || c.InfoRefreshInterval <= 0 {
		return errors.New("querier: lookback delta, timeout and info refresh interval must be positive")
	}
	if c.Engine.Expression.MaxDepth <= 0 || c.Engine.Expression.MaxTokens <= 0 {
		return errors.New("querier: max_expression_depth and max_expression_tokens must be positive (they keep a query from crashing the process)")
	}
	if err := c.Cardinality.Validate(); err != nil {
		return err
	}
	if c.ShuffleShardingIngestersLookbackPeriod < 0 || (c.ShuffleShardingIngestersLookbackPeriod > 0 && c.ShuffleShardingIngestersLookbackPeriod < c.QueryIngestersWithin) {
		return errors.Newf("querier: shuffle_sharding_ingesters_lookback_period (%s) must be 0 (query_ingesters_within) or at least query_ingesters_within (%s): a shorter one misses ingesters that still hold a tenant's recent samples",
			c.ShuffleShardingIngestersLookbackPeriod, c.QueryIngestersWithin)
	}
	return nil
}

// IngestersLookback is how far back a tenant's shuffle shard of the ingesters is read (0: the tenant is read from
// every ingester).
func (c Config) IngestersLookback() time.Duration {
	switch {
	case !c.ShuffleShardingIngestersEnabled:
		return 0
	case c.ShuffleShardingIngestersLookbackPeriod > 0:
		return c.ShuffleShardingIngestersLookbackPeriod
	}
	return c.QueryIngestersWithin
}

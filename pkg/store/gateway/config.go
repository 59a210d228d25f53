package gateway

import (
	"time"

	"github.com/efficientgo/core/errors"

	"github.com/stratametrics/strata/pkg/cache"
	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/store"
)

// Config is the store-gateway's config (the store_gateway section of the config file).
type Config struct {
	// SyncInterval is how often the bucket is scanned for new and deleted blocks (and on every ring change).
	SyncInterval time.Duration `yaml:"sync_interval"`
	// IndexHeaderIdleTimeout unloads an index-header from memory after this long without a query (0: never).
	IndexHeaderIdleTimeout time.Duration `yaml:"index_header_idle_timeout"`
	// IgnoreDeletionMarkDelay: a block marked for deletion is still served by the store-gateways, and queried by
	// the queriers, until its mark is older than this (Mimir's ignore_deletion_mark_delay). Keep it well below
	// the compactor's deletion delay.
	IgnoreDeletionMarkDelay time.Duration       `yaml:"ignore_deletion_mark_delay"`
	MetaSyncConcurrency     int                 `yaml:"meta_sync_concurrency"`
	BlockQueryConcurrency   int                 `yaml:"block_query_concurrency"`
	IndexCache              cache.Config        `yaml:"index_cache"`
	ChunksCache             cache.Config        `yaml:"chunks_cache"`
	Instance                ring.InstanceConfig `yaml:"ring"`
}

// DefaultConfig returns the store-gateway's defaults.
func DefaultConfig() Config {
	d := store.DefaultBucketStoreConfig()
	return Config{
		SyncInterval:            15 * time.Minute,
		IndexHeaderIdleTimeout:  d.IndexHeaderIdleTimeout,
		IgnoreDeletionMarkDelay: d.IgnoreDeletionMarkDelay,
		MetaSyncConcurrency:     d.MetaSyncConcurrency,
		BlockQueryConcurrency:   d.BlockQueryConcurrency,
		IndexCache:              cache.Config{Backend: "inmemory", InMemory: cache.InMemoryConfig{MaxSizeBytes: 256 << 20}},
		ChunksCache:             cache.Config{Backend: "inmemory", InMemory: cache.InMemoryConfig{MaxSizeBytes: 512 << 20}},
		Instance:                ring.InstanceConfig{ID: ring.DefaultInstanceID()},
	}
}

// Validate checks the store-gateway's config.
func (c Config) Validate() error {
	if c.SyncInterval <= 0 {
		return errors.New("store_gateway: sync_interval must be positive")
	}
	if c.IgnoreDeletionMarkDelay < 0 {
		return errors.Newf("store_gateway: ignore_deletion_mark_delay must not be negative; got %s", c.IgnoreDeletionMarkDelay)
	}
	if err := c.IndexCache.Validate(); err != nil {
		return errors.Wrap(err, "store_gateway.index_cache")
	}
	return errors.Wrap(c.ChunksCache.Validate(), "store_gateway.chunks_cache")
}

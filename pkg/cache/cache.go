// Package cache provides byte caches for the store-gateway (index and chunks caches): a size-bounded in-memory LRU
// and a memcached client. Callers use the Cache interface; a cache never returns errors, failures are logged,
// counted in metrics and behave as misses.
package cache

import (
	"context"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
)

// Backend names accepted in Config.Backend.
const (
	BackendInMemory  = "inmemory"
	BackendMemcached = "memcached"
	BackendNone      = "none"
)

// Cache is a byte cache. Implementations are safe for concurrent use; failures are logged and counted, never
// returned (a cache miss).
type Cache interface {
	// Fetch returns the values found for keys; missing keys are absent from the map.
	// The returned slices must not be modified by the caller.
	Fetch(ctx context.Context, keys []string) map[string][]byte
	// Store adds items (best effort; a remote backend may do it asynchronously). ttl 0 = no expiry.
	// Store does not keep references to the items' slices after it returns, so callers may reuse them.
	Store(items map[string][]byte, ttl time.Duration)
	// Name names the cache in metrics and logs (e.g. "index", "chunks").
	Name() string
}

// Config selects and configures a cache backend.
type Config struct {
	// Backend: "inmemory" (default when empty), "memcached", or "none".
	Backend   string          `yaml:"backend"`
	InMemory  InMemoryConfig  `yaml:"inmemory"`
	Memcached MemcachedConfig `yaml:"memcached"`
}

// Validate checks the configuration of the selected backend.
func (c Config) Validate() error {
	switch c.Backend {
	case "", BackendInMemory:
		if err := c.InMemory.Validate(); err != nil {
			return errors.Wrap(err, "validating the in-memory cache configuration")
		}
		return nil
	case BackendMemcached:
		if err := c.Memcached.Validate(); err != nil {
			return errors.Wrap(err, "validating the memcached cache configuration")
		}
		return nil
	case BackendNone:
		return nil
	default:
		return errors.Newf("unknown cache backend %q: want %q, %q or %q", c.Backend, BackendInMemory, BackendMemcached, BackendNone)
	}
}

// New builds the cache named name (the "name" label of the metrics), or returns a nil Cache with backend "none".
// Caches with a memcached backend hold connections and goroutines: release them with Close.
// Several caches (with different names) may be created on the same registerer.
func New(name string, cfg Config, logger log.Logger, reg prometheus.Registerer) (Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, errors.Wrapf(err, "creating cache %q", name)
	}
	switch cfg.Backend {
	case BackendNone:
		return nil, nil
	case BackendMemcached:
		c, err := NewMemcached(name, cfg.Memcached, logger, reg)
		if err != nil {
			return nil, errors.Wrapf(err, "creating memcached cache %q", name)
		}
		return c, nil
	default:
		m, err := newMetrics(reg)
		if err != nil {
			return nil, errors.Wrapf(err, "registering the metrics of in-memory cache %q", name)
		}
		return newInMemory(name, cfg.InMemory, logger, m), nil
	}
}

// Close releases the resources of c if its backend holds any (the memcached backend's connections and
// goroutines; pending asynchronous stores are dropped). It is a no-op for a nil Cache and the in-memory backend.
func Close(c Cache) {
	if s, ok := c.(interface{ Stop() }); ok && s != nil {
		s.Stop()
	}
}

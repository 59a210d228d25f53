package cache

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultInMemoryMaxSizeBytes is the size of an in-memory cache whose MaxSizeBytes is 0.
const DefaultInMemoryMaxSizeBytes = 256 << 20

// InMemoryConfig configures the in-memory backend.
type InMemoryConfig struct {
	// MaxSizeBytes bounds the bytes of keys and values held; 0 means DefaultInMemoryMaxSizeBytes (256MiB).
	MaxSizeBytes int64 `yaml:"max_size_bytes"`
	// MaxItemBytes: items (key and value) larger than this are not stored; 0 means MaxSizeBytes/8.
	MaxItemBytes int64 `yaml:"max_item_size_bytes"`
}

// Validate rejects negative sizes and an item size above the cache size.
func (c InMemoryConfig) Validate() error {
	if c.MaxSizeBytes < 0 {
		return errors.Newf("max_size_bytes must not be negative, got %d", c.MaxSizeBytes)
	}
	if c.MaxItemBytes < 0 {
		return errors.Newf("max_item_size_bytes must not be negative, got %d", c.MaxItemBytes)
	}
	if maxSize, _ := c.limits(); c.MaxItemBytes > maxSize {
		return errors.Newf("max_item_size_bytes (%d) must not exceed max_size_bytes (%d)", c.MaxItemBytes, maxSize)
	}
	return nil
}

// limits returns the effective cache and item size limits, defaults applied and the item size clamped.
func (c InMemoryConfig) limits() (maxSize, maxItem int64) {
	maxSize = c.MaxSizeBytes
	if maxSize <= 0 {
		maxSize = DefaultInMemoryMaxSizeBytes
	}
	maxItem = c.MaxItemBytes
	if maxItem <= 0 {
		maxItem = maxSize / 8
	}
	return maxSize, min(maxItem, maxSize)
}

// InMemory is a Cache holding at most MaxSizeBytes of keys and values in memory, evicting the least recently used
// items first. Expired items are dropped when next looked up or when evicted. It is safe for concurrent use.
// Fetch returns the stored slices themselves: callers must not modify them.
type InMemory struct {
	name    string
	logger  log.Logger
	maxSize int64
	maxItem int64
	metrics cacheMetrics
	now     func() time.Time // Injected by tests.

	mtx     sync.Mutex
	lru     *list.List // Of *entry, most recently used first.
	entries map[string]*list.Element
	size    int64
}

type entry struct {
	key     string
	value   []byte
	expires time.Time // Zero: never.
}

func (e *entry) size() int64 { return int64(len(e.key) + len(e.value)) }

var _ Cache = (*InMemory)(nil)

// NewInMemory returns an in-memory cache named name. Like promauto, it panics if its metrics cannot be registered
// on reg (which may be nil); registering several caches on the same registry is fine. Invalid sizes are replaced by
// the defaults (use InMemoryConfig.Validate or New to reject them instead).
func NewInMemory(name string, cfg InMemoryConfig, logger log.Logger, reg prometheus.Registerer) *InMemory {
	m, err := newMetrics(reg)
	if err != nil {
		panic(err)
	}
	return newInMemory(name, cfg, logger, m)
}

func newInMemory(name string, cfg InMemoryConfig, logger log.Logger, m *metrics) *InMemory {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	maxSize, maxItem := cfg.limits()
	return &InMemory{
		name:    name,
		logger:  log.With(logger, "cache", name, "backend", BackendInMemory),
		maxSize: maxSize,
		maxItem: maxItem,
		metrics: m.forCache(name, BackendInMemory),
		now:     time.Now,
		lru:     list.New(),
		entries: map[string]*list.Element{},
	}
}

// Name implements Cache.
func (c *InMemory) Name() string { return c.name }

// Fetch implements Cache.
func (c *InMemory) Fetch(_ context.Context, keys []string) map[string][]byte {
	start := time.Now()
	found := make(map[string][]byte, len(keys))
	hits := 0
	now := c.now()

	c.mtx.Lock()
	for _, k := range keys {
		el, ok := c.entries[k]
		if !ok {
			continue
		}
		e := el.Value.(*entry)
		if !e.expires.IsZero() && !now.Before(e.expires) {
			c.remove(el)
			continue
		}
		c.lru.MoveToFront(el)
		found[k] = e.value
		hits++
	}
	c.mtx.Unlock()

	c.metrics.requests.Add(float64(len(keys)))
	c.metrics.hits.Add(float64(hits))
	c.metrics.fetchDuration.Observe(time.Since(start).Seconds())
	return found
}

// Store implements Cache. Items larger than the maximum item size are skipped; a negative ttl stores nothing.
func (c *InMemory) Store(items map[string][]byte, ttl time.Duration) {
	if ttl < 0 {
		level.Debug(c.logger).Log("msg", "not storing items with a negative TTL", "items", len(items), "ttl", ttl)
		return
	}
	var expires time.Time
	if ttl > 0 {
		expires = c.now().Add(ttl)
	}

	c.mtx.Lock()
	defer c.mtx.Unlock()
	for k, v := range items {
		if size := int64(len(k) + len(v)); size > c.maxItem {
			level.Debug(c.logger).Log("msg", "not storing an item larger than the maximum item size", "key", k, "size", size, "max_item_size", c.maxItem)
			continue
		}
		if el, ok := c.entries[k]; ok {
			c.remove(el)
		}
		e := &entry{key: k, value: append(make([]byte, 0, len(v)), v...), expires: expires}
		c.entries[k] = c.lru.PushFront(e)
		c.size += e.size()
		c.metrics.items.Inc()
		c.metrics.sizeBytes.Add(float64(e.size()))

		for c.size > c.maxSize {
			c.remove(c.lru.Back())
			c.metrics.evicted.Inc()
		}
	}
}

// remove drops el from the cache. c.mtx must be held.
func (c *InMemory) remove(el *list.Element) {
	e := c.lru.Remove(el).(*entry)
	delete(c.entries, e.key)
	c.size -= e.size()
	c.metrics.items.Dec()
	c.metrics.sizeBytes.Sub(float64(e.size()))
}

package cache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	dskitcache "github.com/grafana/dskit/cache"
	"github.com/grafana/dskit/flagext"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of MemcachedConfig, applied to fields left at 0 (Mimir's defaults).
const (
	DefaultMemcachedTimeout              = 200 * time.Millisecond
	DefaultMemcachedMaxIdleConnections   = 100
	DefaultMemcachedMaxAsyncConcurrency  = 50
	DefaultMemcachedMaxAsyncBufferSize   = 25000
	DefaultMemcachedMaxGetMultiBatchSize = 100
	DefaultMemcachedMaxItemSize          = 1 << 20

	// memcachedMaxGetMultiConcurrency bounds the get batches in flight per client.
	memcachedMaxGetMultiConcurrency = 100
	// memcachedAddressesLookupPeriod is how often dns+ and dnssrv+ addresses are resolved again.
	memcachedAddressesLookupPeriod = 30 * time.Second
	// memcachedMaxTTL is the longest TTL memcached takes as a duration (longer ones are read as Unix times).
	memcachedMaxTTL = 30 * 24 * time.Hour
	// memcachedMaxKeyLen is memcached's key length limit.
	memcachedMaxKeyLen = 250
	// hashedKeyPrefix starts the memcached key of every key that is hashed: the keys that memcached cannot take as
	// they are, and the keys that start with this prefix themselves, so that a key used as is never equals a hashed one.
	hashedKeyPrefix = "strata:sha256:"
)

// MemcachedConfig configures the memcached backend. Fields left at 0 take the Default* values.
type MemcachedConfig struct {
	// Addresses of the memcached servers, host:port; keys are spread over them by a jump hash.
	// dns+host:port (A/AAAA lookup) and dnssrv+_service._proto.name (SRV lookup) are resolved every 30s.
	Addresses []string `yaml:"addresses"`
	// Timeout bounds connecting to a server and each socket read or write.
	Timeout time.Duration `yaml:"timeout"`
	// MaxIdleConnections is the number of idle connections kept per server.
	MaxIdleConnections int `yaml:"max_idle_connections"`
	// MaxAsyncConcurrency is the number of goroutines storing items.
	MaxAsyncConcurrency int `yaml:"max_async_concurrency"`
	// MaxAsyncBufferSize is the number of items waiting to be stored; items stored when it is full are dropped.
	MaxAsyncBufferSize int `yaml:"max_async_buffer_size"`
	// MaxGetMultiBatchSize is the number of keys per get request; a Fetch of more keys sends batches concurrently.
	MaxGetMultiBatchSize int `yaml:"max_get_multi_batch_size"`
	// MaxItemSize: items larger than this (value plus, for hashed keys, the original key) are not stored.
	// Memcached's own limit (its -I flag) is 1MiB by default and includes its item header and the key.
	MaxItemSize int `yaml:"max_item_size"`
}

// Validate requires at least one address and no negative values.
func (c MemcachedConfig) Validate() error {
	if len(c.Addresses) == 0 {
		return errors.New("no memcached addresses configured")
	}
	for _, a := range c.Addresses {
		if strings.TrimSpace(a) == "" {
			return errors.New("empty memcached address configured")
		}
	}
	for _, f := range []struct {
		name  string
		value int64
	}{
		{"timeout", int64(c.Timeout)},
		{"max_idle_connections", int64(c.MaxIdleConnections)},
		{"max_async_concurrency", int64(c.MaxAsyncConcurrency)},
		{"max_async_buffer_size", int64(c.MaxAsyncBufferSize)},
		{"max_get_multi_batch_size", int64(c.MaxGetMultiBatchSize)},
		{"max_item_size", int64(c.MaxItemSize)},
	} {
		if f.value < 0 {
			return errors.Newf("memcached %s must not be negative, got %d", f.name, f.value)
		}
	}
	return nil
}

func (c MemcachedConfig) withDefaults() MemcachedConfig {
	setDefault := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultMemcachedTimeout
	}
	setDefault(&c.MaxIdleConnections, DefaultMemcachedMaxIdleConnections)
	setDefault(&c.MaxAsyncConcurrency, DefaultMemcachedMaxAsyncConcurrency)
	setDefault(&c.MaxAsyncBufferSize, DefaultMemcachedMaxAsyncBufferSize)
	setDefault(&c.MaxGetMultiBatchSize, DefaultMemcachedMaxGetMultiBatchSize)
	setDefault(&c.MaxItemSize, DefaultMemcachedMaxItemSize)
	return c
}

// Memcached is a Cache backed by memcached servers, through dskit's memcached client (connection pool, jump hash
// server selection, batched concurrent gets). Store is asynchronous: items are queued and set by a pool of
// goroutines. Keys memcached cannot take (longer than 250 bytes, with spaces or control characters, or empty) are
// replaced by a SHA-256 digest and the original key is stored in the value and checked on Fetch, so a key never
// returns another key's value. Stop releases its connections and goroutines.
//
// Besides the strata_cache_* metrics, the client's own metrics are exported as strata_memcached_cache_*
// (per-operation durations, failures by reason, data sizes).
type Memcached struct {
	name        string
	logger      log.Logger
	client      *dskitcache.MemcachedClient
	maxItemSize int
	metrics     cacheMetrics

	queue    chan memcachedStoreOp
	stop     chan struct{}
	stopOnce sync.Once
	workers  sync.WaitGroup
}

type memcachedStoreOp struct {
	key   string
	value []byte
	ttl   time.Duration
}

var _ Cache = (*Memcached)(nil)

// NewMemcached returns a memcached cache named name. It does not connect to the servers: connections are made when
// needed, and unreachable servers make fetches miss. Call Stop (or Close) to release it.
func NewMemcached(name string, cfg MemcachedConfig, logger log.Logger, reg prometheus.Registerer) (*Memcached, error) {
	if err := cfg.Validate(); err != nil {
		return nil, errors.Wrap(err, "validating the memcached configuration")
	}
	if logger == nil {
		logger = log.NewNopLogger()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, errors.Wrap(err, "registering the cache metrics")
	}
	cfg = cfg.withDefaults()
	logger = log.With(logger, "cache", name, "backend", BackendMemcached)

	var clientReg prometheus.Registerer
	if reg != nil {
		clientReg = tolerantRegisterer{prometheus.WrapRegistererWithPrefix("strata_memcached_", reg)}
	}
	client, err := dskitcache.NewMemcachedClientWithConfig(logger, name, dskitcache.MemcachedClientConfig{
		Addresses:                            flagext.StringSliceCSV(cfg.Addresses),
		AddressesLookupPeriod:                memcachedAddressesLookupPeriod,
		Timeout:                              cfg.Timeout,
		ConnectTimeout:                       cfg.Timeout,
		MinIdleConnectionsHeadroomPercentage: -1, // Keep idle connections (up to MaxIdleConnections).
		MaxIdleConnections:                   cfg.MaxIdleConnections,
		// The client's own asynchronous queue is not used (Store has its own, to count failures); dskit requires >0.
		MaxAsyncConcurrency:    1,
		MaxAsyncBufferSize:     1,
		MaxGetMultiConcurrency: memcachedMaxGetMultiConcurrency,
		MaxGetMultiBatchSize:   cfg.MaxGetMultiBatchSize,
		MaxItemSize:            cfg.MaxItemSize,
	}, clientReg)
	if err != nil {
		return nil, errors.Wrapf(err, "creating the memcached client for %v", cfg.Addresses)
	}

	c := &Memcached{
		name:        name,
		logger:      logger,
		client:      client,
		maxItemSize: cfg.MaxItemSize,
		metrics:     m.forCache(name, BackendMemcached),
		queue:       make(chan memcachedStoreOp, cfg.MaxAsyncBufferSize),
		stop:        make(chan struct{}),
	}
	for range cfg.MaxAsyncConcurrency {
		c.workers.Go(c.storeLoop)
	}
	return c, nil
}

// Name implements Cache.
func (c *Memcached) Name() string { return c.name }

// Stop drops the items waiting to be stored, waits for the stores in progress and closes the connections.
// It may be called more than once; the cache must not be used afterwards.
func (c *Memcached) Stop() {
	c.stopOnce.Do(func() {
		close(c.stop)
		c.workers.Wait()
		c.client.Stop()
	})
}

// Fetch implements Cache. Servers that fail or time out make their keys miss; the failure is logged and counted.
func (c *Memcached) Fetch(ctx context.Context, keys []string) map[string][]byte {
	found := make(map[string][]byte, len(keys))
	if len(keys) == 0 {
		return found
	}
	start := time.Now()

	// Memcached key → requested key; duplicate requested keys are fetched once.
	requested := make(map[string]string, len(keys))
	mkeys := make([]string, 0, len(keys))
	for _, k := range keys {
		mk := memcachedKey(k)
		if _, ok := requested[mk]; ok {
			continue
		}
		requested[mk] = k
		mkeys = append(mkeys, mk)
	}

	res, err := c.client.GetMultiWithError(ctx, mkeys)
	if err != nil && !errors.Is(err, context.Canceled) {
		c.metrics.fetchFailures.Inc()
		level.Warn(c.logger).Log("msg", "failed to fetch items from memcached, treating them as misses", "keys", len(mkeys), "found", len(res), "err", err)
	}
	for mk, v := range res {
		k, ok := requested[mk]
		if !ok {
			continue
		}
		if strings.HasPrefix(mk, hashedKeyPrefix) {
			if v, ok = decodeHashedValue(k, v); !ok {
				level.Debug(c.logger).Log("msg", "memcached value under a hashed key does not hold the requested key, treating it as a miss", "key", k)
				continue
			}
		}
		found[k] = v
	}

	hits := 0
	for _, k := range keys {
		if _, ok := found[k]; ok {
			hits++
		}
	}
	c.metrics.requests.Add(float64(len(keys)))
	c.metrics.hits.Add(float64(hits))
	c.metrics.fetchDuration.Observe(time.Since(start).Seconds())
	return found
}

// Store implements Cache. Items are queued and stored asynchronously; items larger than MaxItemSize, and items
// arriving while the queue is full, are dropped (the latter counted as store failures). ttl is rounded down to whole
// seconds, at least 1s and at most 30 days; a negative ttl stores nothing.
func (c *Memcached) Store(items map[string][]byte, ttl time.Duration) {
	if ttl < 0 {
		level.Debug(c.logger).Log("msg", "not storing items with a negative TTL", "items", len(items), "ttl", ttl)
		return
	}
	switch {
	case ttl > 0 && ttl < time.Second:
		ttl = time.Second
	case ttl > memcachedMaxTTL:
		ttl = memcachedMaxTTL
	}

	for k, v := range items {
		select {
		case <-c.stop:
			return
		default:
		}

		op := memcachedStoreOp{key: memcachedKey(k), ttl: ttl}
		if strings.HasPrefix(op.key, hashedKeyPrefix) {
			op.value = encodeHashedValue(k, v)
		} else {
			op.value = append(make([]byte, 0, len(v)), v...)
		}
		if len(op.value) > c.maxItemSize {
			level.Debug(c.logger).Log("msg", "not storing an item larger than the maximum item size", "key", k, "size", len(op.value), "max_item_size", c.maxItemSize)
			continue
		}

		select {
		case c.queue <- op:
		default:
			c.metrics.storeFails.Inc()
			level.Debug(c.logger).Log("msg", "not storing an item: the asynchronous store buffer is full", "key", k, "buffer_size", cap(c.queue))
		}
	}
}

func (c *Memcached) storeLoop() {
	for {
		select {
		case <-c.stop:
			return
		case op := <-c.queue:
			// The client logs the error with the reason (and counts it in strata_memcached_cache_*).
			if err := c.client.Set(context.Background(), op.key, op.value, op.ttl); err != nil {
				c.metrics.storeFails.Inc()
			}
		}
	}
}

// memcachedKey returns the key under which key is kept in memcached: key itself when memcached accepts it, else
// a prefixed SHA-256 digest of it.
func memcachedKey(key string) string {
	if !needsHashing(key) {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return hashedKeyPrefix + hex.EncodeToString(sum[:])
}

func needsHashing(key string) bool {
	if len(key) == 0 || len(key) > memcachedMaxKeyLen || strings.HasPrefix(key, hashedKeyPrefix) {
		return true
	}
	for i := 0; i < len(key); i++ {
		// Control characters, space and DEL are not allowed; bytes above 0x7f are hashed too, to be safe.
		if key[i] <= ' ' || key[i] >= 0x7f {
			return true
		}
	}
	return false
}

// encodeHashedValue returns the value kept under a hashed key: the length of key (uvarint), key, then value.
func encodeHashedValue(key string, value []byte) []byte {
	b := make([]byte, 0, binary.MaxVarintLen64+len(key)+len(value))
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	return append(b, value...)
}

// decodeHashedValue returns the value of a value kept under a hashed key, if it was stored for key.
func decodeHashedValue(key string, b []byte) ([]byte, bool) {
	n, l := binary.Uvarint(b)
	if l <= 0 || n != uint64(len(key)) || uint64(len(b)-l) < n {
		return nil, false
	}
	if string(b[l:l+len(key)]) != key {
		return nil, false
	}
	return b[l+len(key):], true
}

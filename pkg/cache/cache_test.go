package cache

import (
	"context"
	"strings"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
)

func TestConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "empty is in-memory", cfg: Config{}},
		{name: "in-memory", cfg: Config{Backend: BackendInMemory, InMemory: InMemoryConfig{MaxSizeBytes: 1 << 20, MaxItemBytes: 1 << 10}}},
		{name: "none", cfg: Config{Backend: BackendNone}},
		{name: "memcached", cfg: Config{Backend: BackendMemcached, Memcached: MemcachedConfig{Addresses: []string{"127.0.0.1:11211"}}}},
		{name: "unknown backend", cfg: Config{Backend: "redis"}, wantErr: `unknown cache backend "redis"`},
		{name: "memcached without addresses", cfg: Config{Backend: BackendMemcached}, wantErr: "no memcached addresses"},
		{name: "memcached with an empty address", cfg: Config{Backend: BackendMemcached, Memcached: MemcachedConfig{Addresses: []string{" "}}}, wantErr: "empty memcached address"},
		{name: "memcached negative timeout", cfg: Config{Backend: BackendMemcached, Memcached: MemcachedConfig{Addresses: []string{"a:1"}, Timeout: -1}}, wantErr: "timeout must not be negative"},
		{name: "memcached settings ignored with in-memory", cfg: Config{Backend: BackendInMemory, Memcached: MemcachedConfig{Timeout: -1}}},
		{name: "negative in-memory size", cfg: Config{InMemory: InMemoryConfig{MaxSizeBytes: -1}}, wantErr: "max_size_bytes must not be negative"},
		{name: "negative in-memory item size", cfg: Config{InMemory: InMemoryConfig{MaxItemBytes: -1}}, wantErr: "max_item_size_bytes must not be negative"},
		{name: "item larger than the cache", cfg: Config{InMemory: InMemoryConfig{MaxSizeBytes: 10, MaxItemBytes: 11}}, wantErr: "must not exceed"},
		{name: "item larger than the default cache", cfg: Config{InMemory: InMemoryConfig{MaxItemBytes: DefaultInMemoryMaxSizeBytes + 1}}, wantErr: "must not exceed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				testutil.Ok(t, err)
				return
			}
			testutil.NotOk(t, err)
			testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q does not contain %q", err, tc.wantErr)
		})
	}
}

func TestNew(t *testing.T) {
	t.Run("none gives a nil cache", func(t *testing.T) {
		c, err := New("index", Config{Backend: BackendNone}, log.NewNopLogger(), prometheus.NewRegistry())
		testutil.Ok(t, err)
		testutil.Assert(t, c == nil, "want a nil cache, got %T", c)
		Close(c) // A no-op.
	})
	t.Run("invalid config", func(t *testing.T) {
		_, err := New("index", Config{Backend: "bogus"}, log.NewNopLogger(), prometheus.NewRegistry())
		testutil.NotOk(t, err)
		testutil.Assert(t, strings.Contains(err.Error(), `creating cache "index"`), "error: %v", err)
	})
	t.Run("default is in-memory with 256MiB", func(t *testing.T) {
		c, err := New("index", Config{}, log.NewNopLogger(), nil)
		testutil.Ok(t, err)
		im, ok := c.(*InMemory)
		testutil.Assert(t, ok, "want *InMemory, got %T", c)
		testutil.Equals(t, int64(256<<20), im.maxSize)
		testutil.Equals(t, int64(32<<20), im.maxItem)
		testutil.Equals(t, "index", c.Name())
		Close(c) // A no-op.
	})
	t.Run("caches share a registry", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		index, err := New("index", Config{}, log.NewNopLogger(), reg)
		testutil.Ok(t, err)
		chunks, err := New("chunks", Config{Backend: BackendInMemory}, log.NewNopLogger(), reg)
		testutil.Ok(t, err)
		// Memcached caches on the same registry too; no connection is made until used.
		mc1, err := New("index-mc", Config{Backend: BackendMemcached, Memcached: MemcachedConfig{Addresses: []string{"127.0.0.1:1"}}}, log.NewNopLogger(), reg)
		testutil.Ok(t, err)
		defer Close(mc1)
		mc2, err := New("chunks-mc", Config{Backend: BackendMemcached, Memcached: MemcachedConfig{Addresses: []string{"127.0.0.1:1"}}}, log.NewNopLogger(), reg)
		testutil.Ok(t, err)
		defer Close(mc2)
		// Even the same name twice does not panic: the series are shared.
		again := NewInMemory("index", InMemoryConfig{}, log.NewNopLogger(), reg)
		mc3, err := New("index-mc", Config{Backend: BackendMemcached, Memcached: MemcachedConfig{Addresses: []string{"127.0.0.1:1"}}}, log.NewNopLogger(), reg)
		testutil.Ok(t, err)
		defer Close(mc3)

		index.Store(map[string][]byte{"a": []byte("1")}, 0)
		index.Fetch(context.Background(), []string{"a", "b"})
		chunks.Fetch(context.Background(), []string{"a"})
		again.Fetch(context.Background(), []string{"a"})

		testutil.Ok(t, promtestutil.GatherAndCompare(reg, strings.NewReader(`
# HELP strata_cache_requests_total Number of keys requested from the cache.
# TYPE strata_cache_requests_total counter
strata_cache_requests_total{backend="inmemory",name="chunks"} 1
strata_cache_requests_total{backend="inmemory",name="index"} 3
strata_cache_requests_total{backend="memcached",name="chunks-mc"} 0
strata_cache_requests_total{backend="memcached",name="index-mc"} 0
# HELP strata_cache_hits_total Number of keys requested from the cache that were found.
# TYPE strata_cache_hits_total counter
strata_cache_hits_total{backend="inmemory",name="chunks"} 0
strata_cache_hits_total{backend="inmemory",name="index"} 1
strata_cache_hits_total{backend="memcached",name="chunks-mc"} 0
strata_cache_hits_total{backend="memcached",name="index-mc"} 0
`), "strata_cache_requests_total", "strata_cache_hits_total"))
		// The memcached client's own metrics are there, per cache.
		testutil.Assert(t, promtestutil.CollectAndCount(reg, "strata_memcached_cache_client_info") == 2)
	})
	t.Run("conflicting registration is an error", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_cache_hits_total", Help: "Something else."}))
		_, err := New("index", Config{}, log.NewNopLogger(), reg)
		testutil.NotOk(t, err)
	})
}

package cache

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
)

func TestInMemory_FetchStore(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stored map[string][]byte
		fetch  []string
		want   map[string][]byte
	}{
		{
			name:  "empty cache",
			fetch: []string{"a", "b"},
			want:  map[string][]byte{},
		},
		{
			name:   "hits and misses",
			stored: map[string][]byte{"a": []byte("1"), "b": []byte("2")},
			fetch:  []string{"a", "c", "b"},
			want:   map[string][]byte{"a": []byte("1"), "b": []byte("2")},
		},
		{
			name:   "empty value and binary value",
			stored: map[string][]byte{"empty": {}, "bin": {0, 0xff, '\r', '\n', 0}},
			fetch:  []string{"empty", "bin"},
			want:   map[string][]byte{"empty": {}, "bin": {0, 0xff, '\r', '\n', 0}},
		},
		{
			name:   "no keys",
			stored: map[string][]byte{"a": []byte("1")},
			want:   map[string][]byte{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewInMemory("test", InMemoryConfig{}, log.NewNopLogger(), nil)
			c.Store(tc.stored, 0)
			testutil.Equals(t, tc.want, c.Fetch(context.Background(), tc.fetch))
		})
	}
}

func TestInMemory_StoreCopiesAndOverwrites(t *testing.T) {
	c := NewInMemory("test", InMemoryConfig{MaxSizeBytes: 1000}, log.NewNopLogger(), nil)
	buf := []byte("first")
	c.Store(map[string][]byte{"k": buf}, 0)
	copy(buf, "XXXXX") // The caller reuses its buffer.
	testutil.Equals(t, map[string][]byte{"k": []byte("first")}, c.Fetch(context.Background(), []string{"k"}))

	c.Store(map[string][]byte{"k": []byte("second value")}, 0)
	testutil.Equals(t, map[string][]byte{"k": []byte("second value")}, c.Fetch(context.Background(), []string{"k"}))
	testutil.Equals(t, int64(len("k")+len("second value")), c.size)
	testutil.Equals(t, 1, c.lru.Len())
}

func TestInMemory_LRUEviction(t *testing.T) {
	// Every item is 10 bytes (1-byte key, 9-byte value); the cache holds 3.
	val := func(k string) []byte { return []byte(strings.Repeat(k, 9)) }
	for _, tc := range []struct {
		name string
		ops  func(c *InMemory)
		want []string // Keys left among a..e.
	}{
		{
			name: "oldest evicted",
			ops: func(c *InMemory) {
				for _, k := range []string{"a", "b", "c", "d"} {
					c.Store(map[string][]byte{k: val(k)}, 0)
				}
			},
			want: []string{"b", "c", "d"},
		},
		{
			name: "fetch refreshes",
			ops: func(c *InMemory) {
				for _, k := range []string{"a", "b", "c"} {
					c.Store(map[string][]byte{k: val(k)}, 0)
				}
				c.Fetch(context.Background(), []string{"a"})
				c.Store(map[string][]byte{"d": val("d")}, 0)
			},
			want: []string{"a", "c", "d"},
		},
		{
			name: "store refreshes",
			ops: func(c *InMemory) {
				for _, k := range []string{"a", "b", "c", "a", "d", "e"} {
					c.Store(map[string][]byte{k: val(k)}, 0)
				}
			},
			want: []string{"a", "d", "e"},
		},
		{
			name: "larger item evicts several",
			ops: func(c *InMemory) {
				for _, k := range []string{"a", "b", "c"} {
					c.Store(map[string][]byte{k: val(k)}, 0)
				}
				c.Store(map[string][]byte{"e": []byte(strings.Repeat("e", 19))}, 0) // 20 bytes.
			},
			want: []string{"c", "e"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewInMemory("test", InMemoryConfig{MaxSizeBytes: 30, MaxItemBytes: 30}, log.NewNopLogger(), nil)
			tc.ops(c)
			got := c.Fetch(context.Background(), []string{"a", "b", "c", "d", "e"})
			var keys []string
			for _, k := range []string{"a", "b", "c", "d", "e"} {
				if _, ok := got[k]; ok {
					keys = append(keys, k)
				}
			}
			testutil.Equals(t, tc.want, keys)
			testutil.Assert(t, c.size <= 30, "size %d exceeds the maximum", c.size)
		})
	}
}

func TestInMemory_ItemSizeLimit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       InMemoryConfig
		valueLen  int
		wantFound bool
	}{
		{name: "fits", cfg: InMemoryConfig{MaxSizeBytes: 100, MaxItemBytes: 20}, valueLen: 19, wantFound: true},
		{name: "one byte too large", cfg: InMemoryConfig{MaxSizeBytes: 100, MaxItemBytes: 20}, valueLen: 20},
		{name: "default item limit is an eighth of the size", cfg: InMemoryConfig{MaxSizeBytes: 800}, valueLen: 100},
		{name: "default item limit fits", cfg: InMemoryConfig{MaxSizeBytes: 800}, valueLen: 99, wantFound: true},
		{name: "item limit clamped to the size", cfg: InMemoryConfig{MaxSizeBytes: 50, MaxItemBytes: 1000}, valueLen: 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewInMemory("test", tc.cfg, log.NewNopLogger(), nil)
			c.Store(map[string][]byte{"k": make([]byte, tc.valueLen), "small": []byte("v")}, 0)
			got := c.Fetch(context.Background(), []string{"k", "small"})
			_, found := got["k"]
			testutil.Equals(t, tc.wantFound, found)
			testutil.Equals(t, []byte("v"), got["small"])
		})
	}
}

func TestInMemory_TTL(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewInMemory("test", InMemoryConfig{}, log.NewNopLogger(), nil)
	c.now = func() time.Time { return now }

	c.Store(map[string][]byte{"short": []byte("1")}, time.Second)
	c.Store(map[string][]byte{"long": []byte("2")}, time.Minute)
	c.Store(map[string][]byte{"forever": []byte("3")}, 0)
	c.Store(map[string][]byte{"negative": []byte("4")}, -time.Second)
	keys := []string{"short", "long", "forever", "negative"}

	testutil.Equals(t, map[string][]byte{"short": []byte("1"), "long": []byte("2"), "forever": []byte("3")}, c.Fetch(context.Background(), keys))

	now = now.Add(999 * time.Millisecond)
	testutil.Equals(t, 3, len(c.Fetch(context.Background(), keys)))

	now = now.Add(time.Millisecond) // Expiry is exclusive.
	testutil.Equals(t, map[string][]byte{"long": []byte("2"), "forever": []byte("3")}, c.Fetch(context.Background(), keys))
	testutil.Equals(t, 2, c.lru.Len()) // The expired item was dropped.

	now = now.Add(24 * time.Hour)
	testutil.Equals(t, map[string][]byte{"forever": []byte("3")}, c.Fetch(context.Background(), keys))

	// Storing again restarts the TTL.
	c.Store(map[string][]byte{"short": []byte("5")}, time.Second)
	testutil.Equals(t, map[string][]byte{"short": []byte("5")}, c.Fetch(context.Background(), []string{"short"}))
	testutil.Equals(t, int64(len("forever")+1+len("short")+1), c.size)
}

func TestInMemory_Concurrent(t *testing.T) {
	const (
		goroutines = 8
		iterations = 2000
		keySpace   = 200
	)
	reg := prometheus.NewRegistry()
	// Small enough to evict all the time.
	c := NewInMemory("test", InMemoryConfig{MaxSizeBytes: 2000, MaxItemBytes: 100}, log.NewNopLogger(), reg)

	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range iterations {
				k := fmt.Sprintf("key-%d", (g*31+i)%keySpace)
				switch i % 3 {
				case 0:
					c.Store(map[string][]byte{k: []byte("value-" + k)}, time.Duration(i%2)*time.Hour)
				default:
					for fk, v := range c.Fetch(context.Background(), []string{k, "key-0", "key-1"}) {
						if string(v) != "value-"+fk {
							t.Errorf("key %s: got value %q", fk, v)
						}
					}
				}
			}
		})
	}
	wg.Wait()

	c.mtx.Lock()
	defer c.mtx.Unlock()
	var size int64
	for el := c.lru.Front(); el != nil; el = el.Next() {
		size += el.Value.(*entry).size()
	}
	testutil.Equals(t, size, c.size)
	testutil.Equals(t, len(c.entries), c.lru.Len())
	testutil.Assert(t, c.size <= 2000, "size %d exceeds the maximum", c.size)
	testutil.Equals(t, float64(c.size), promtestutil.ToFloat64(c.metrics.sizeBytes))
	testutil.Equals(t, float64(c.lru.Len()), promtestutil.ToFloat64(c.metrics.items))
	fetches := 0
	for i := range iterations {
		if i%3 != 0 {
			fetches++
		}
	}
	testutil.Equals(t, float64(goroutines*fetches*3), promtestutil.ToFloat64(c.metrics.requests))
}

func TestInMemory_Metrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := NewInMemory("index", InMemoryConfig{MaxSizeBytes: 30, MaxItemBytes: 20}, log.NewNopLogger(), reg)

	c.Store(map[string][]byte{"a": []byte("123456789"), "b": []byte("123456789")}, 0) // 10 bytes each.
	c.Store(map[string][]byte{"too-large": make([]byte, 100)}, 0)
	c.Fetch(context.Background(), []string{"a", "b", "c", "a"})
	c.Store(map[string][]byte{"c": []byte("123456789"), "d": []byte("123456789")}, 0) // Evicts one of a and b.

	for _, tc := range []struct {
		metric string
		c      prometheus.Collector
		want   float64
	}{
		{"requests", c.metrics.requests, 4},
		{"hits", c.metrics.hits, 3},
		{"items", c.metrics.items, 3},
		{"size", c.metrics.sizeBytes, 30},
		{"evicted", c.metrics.evicted, 1},
		{"fetch failures", c.metrics.fetchFailures, 0},
	} {
		testutil.Equals(t, tc.want, promtestutil.ToFloat64(tc.c), tc.metric)
	}
	testutil.Equals(t, 1, promtestutil.CollectAndCount(reg, "strata_cache_fetch_duration_seconds"))
	testutil.Ok(t, promtestutil.GatherAndCompare(reg, strings.NewReader(`
# HELP strata_cache_hits_total Number of keys requested from the cache that were found.
# TYPE strata_cache_hits_total counter
strata_cache_hits_total{backend="inmemory",name="index"} 3
# HELP strata_cache_requests_total Number of keys requested from the cache.
# TYPE strata_cache_requests_total counter
strata_cache_requests_total{backend="inmemory",name="index"} 4
`), "strata_cache_hits_total", "strata_cache_requests_total"))
}

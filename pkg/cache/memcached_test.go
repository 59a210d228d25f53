package cache

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/stratametrics/strata/pkg/cache/cachetest"
)

func newTestMemcached(t *testing.T, name string, cfg MemcachedConfig, reg prometheus.Registerer) *Memcached {
	t.Helper()
	c, err := NewMemcached(name, cfg, log.NewNopLogger(), reg)
	testutil.Ok(t, err)
	t.Cleanup(c.Stop)
	return c
}

// fetchEventually fetches keys until all of want are found (stores are asynchronous), and returns the last result.
func fetchEventually(t *testing.T, c Cache, keys []string, want int) map[string][]byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := c.Fetch(context.Background(), keys)
		if len(got) >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMemcached_StoreFetch(t *testing.T) {
	addr := cachetest.StartMemcached(t)

	longKey := strings.Repeat("x", 300)
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	for _, tc := range []struct {
		name  string
		items map[string][]byte
	}{
		{name: "simple", items: map[string][]byte{"a": []byte("1"), "b": []byte("two")}},
		{name: "binary and empty values", items: map[string][]byte{"bin": binary, "crlf": []byte("END\r\nVALUE x 0 1\r\n"), "empty": {}}},
		{name: "long keys", items: map[string][]byte{longKey: []byte("long"), longKey + "y": []byte("longer"), strings.Repeat("k", 250): []byte("just fits")}},
		{name: "keys memcached does not accept", items: map[string][]byte{
			"with space": []byte("1"), "with\nnewline": []byte("2"), "tab\t": []byte("3"), "": []byte("4"),
			"ütf8": []byte("5"), "\x00\x7f": []byte("6"), hashedKeyPrefix + "abc": []byte("7"),
		}},
		{name: "large value", items: map[string][]byte{"large": make([]byte, 512<<10)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestMemcached(t, "test", MemcachedConfig{Addresses: []string{addr}}, nil)
			prefix := strings.ReplaceAll(tc.name, " ", "-") + "/" // Each subtest has its own keys.
			keys := make([]string, 0, len(tc.items))
			prefixed := map[string][]byte{}
			for k, v := range tc.items {
				keys = append(keys, prefix+k)
				prefixed[prefix+k] = v
			}
			c.Store(prefixed, 0)
			got := fetchEventually(t, c, append(keys, prefix+"missing"), len(keys))
			testutil.Equals(t, prefixed, got)
		})
	}
}

func TestMemcached_ManyKeys(t *testing.T) {
	addr := cachetest.StartMemcached(t)
	reg := prometheus.NewRegistry()
	c := newTestMemcached(t, "chunks", MemcachedConfig{Addresses: []string{addr}, MaxGetMultiBatchSize: 7}, reg)

	const n = 500
	items := map[string][]byte{}
	keys := make([]string, 0, 2*n)
	for i := range n {
		k := fmt.Sprintf("many/%d", i)
		if i%10 == 0 {
			k += strings.Repeat("-long", 60) // Hashed keys mixed with plain ones.
		}
		items[k] = []byte(fmt.Sprintf("value %d", i))
		keys = append(keys, k, fmt.Sprintf("missing/%d", i))
	}
	c.Store(items, time.Hour)
	testutil.Equals(t, items, fetchEventually(t, c, keys, n))

	// Metrics of one more fetch.
	before := promtestutil.ToFloat64(c.metrics.requests)
	beforeHits := promtestutil.ToFloat64(c.metrics.hits)
	testutil.Equals(t, n, len(c.Fetch(context.Background(), keys)))
	testutil.Equals(t, float64(2*n), promtestutil.ToFloat64(c.metrics.requests)-before)
	testutil.Equals(t, float64(n), promtestutil.ToFloat64(c.metrics.hits)-beforeHits)
	testutil.Equals(t, 0.0, promtestutil.ToFloat64(c.metrics.fetchFailures))
	testutil.Equals(t, 0.0, promtestutil.ToFloat64(c.metrics.storeFails))
	testutil.Equals(t, 0, promtestutil.CollectAndCount(reg, "strata_cache_items")) // In-memory only.
}

func TestMemcached_Metrics(t *testing.T) {
	addr := cachetest.StartMemcached(t)
	reg := prometheus.NewRegistry()
	c := newTestMemcached(t, "index", MemcachedConfig{Addresses: []string{addr}}, reg)

	c.Store(map[string][]byte{"m/a": []byte("1"), "m/b": []byte("2")}, 0)
	fetchEventually(t, c, []string{"m/a", "m/b"}, 2)
	// A second cache on the same registry and server has its own series.
	c2 := newTestMemcached(t, "index2", MemcachedConfig{Addresses: []string{addr}}, reg)
	got := c2.Fetch(context.Background(), []string{"m/a", "m/b", "m/c", "m/a"})
	testutil.Equals(t, map[string][]byte{"m/a": []byte("1"), "m/b": []byte("2")}, got)
	testutil.Equals(t, 4.0, promtestutil.ToFloat64(c2.metrics.requests))
	testutil.Equals(t, 3.0, promtestutil.ToFloat64(c2.metrics.hits))
	testutil.Equals(t, 2, promtestutil.CollectAndCount(reg, "strata_cache_requests_total")) // name="index" and name="index2".
	testutil.Equals(t, 2, promtestutil.CollectAndCount(reg, "strata_cache_fetch_duration_seconds"))
}

func TestMemcached_ItemSizeLimit(t *testing.T) {
	addr := cachetest.StartMemcached(t)
	c := newTestMemcached(t, "test", MemcachedConfig{Addresses: []string{addr}, MaxItemSize: 100}, nil)
	c.Store(map[string][]byte{"size/small": make([]byte, 100), "size/large": make([]byte, 101)}, 0)
	got := fetchEventually(t, c, []string{"size/small"}, 1)
	testutil.Equals(t, 1, len(got))
	testutil.Equals(t, 0, len(c.Fetch(context.Background(), []string{"size/large"})))
}

// A value found under a hashed key that was stored for another key is a miss.
func TestMemcached_HashedKeyHoldsOtherKey(t *testing.T) {
	addr := cachetest.StartMemcached(t)
	c := newTestMemcached(t, "test", MemcachedConfig{Addresses: []string{addr}}, nil)

	key := "collide " + strings.Repeat("z", 300)
	mk := memcachedKey(key)
	testutil.Assert(t, strings.HasPrefix(mk, hashedKeyPrefix) && len(mk) <= memcachedMaxKeyLen, "memcached key %q", mk)

	for _, tc := range []struct {
		name  string
		value []byte
		found bool
	}{
		{name: "another key's value", value: encodeHashedValue("other key", []byte("other value"))},
		{name: "key that is a prefix", value: encodeHashedValue(key[:len(key)-1], []byte("z-other value"))},
		{name: "raw value", value: []byte("raw")},
		{name: "truncated", value: encodeHashedValue(key, nil)[:10]},
		{name: "empty", value: []byte{}},
		{name: "own value", value: encodeHashedValue(key, []byte("mine")), found: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rawSet(t, addr, mk, tc.value)
			got := c.Fetch(context.Background(), []string{key})
			if !tc.found {
				testutil.Equals(t, map[string][]byte{}, got)
				return
			}
			testutil.Equals(t, map[string][]byte{key: []byte("mine")}, got)
		})
	}
}

// rawSet sets key to value with the memcached text protocol, bypassing the cache's encoding.
func rawSet(t *testing.T, addr, key string, value []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	testutil.Ok(t, err)
	defer conn.Close()
	testutil.Ok(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = fmt.Fprintf(conn, "set %s 0 0 %d\r\n%s\r\n", key, len(value), value)
	testutil.Ok(t, err)
	line, err := bufio.NewReader(conn).ReadString('\n')
	testutil.Ok(t, err)
	testutil.Equals(t, "STORED\r\n", line)
}

func TestMemcached_ServerDown(t *testing.T) {
	server := cachetest.RunMemcached(t)
	reg := prometheus.NewRegistry()
	c := newTestMemcached(t, "index", MemcachedConfig{Addresses: []string{server.Addr}, Timeout: 100 * time.Millisecond}, reg)

	c.Store(map[string][]byte{"down/a": []byte("1")}, 0)
	testutil.Equals(t, 1, len(fetchEventually(t, c, []string{"down/a"}, 1)))

	server.Stop()
	for range 3 {
		testutil.Equals(t, map[string][]byte{}, c.Fetch(context.Background(), []string{"down/a", "down/b"}))
	}
	testutil.Assert(t, promtestutil.ToFloat64(c.metrics.fetchFailures) >= 1, "fetch failures not counted")

	// Stores fail in the background, counted.
	c.Store(map[string][]byte{"down/c": []byte("3")}, 0)
	deadline := time.Now().Add(10 * time.Second)
	for promtestutil.ToFloat64(c.metrics.storeFails) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	testutil.Assert(t, promtestutil.ToFloat64(c.metrics.storeFails) >= 1, "store failures not counted")

	// Nothing listening at all from the start.
	never := newTestMemcached(t, "never", MemcachedConfig{Addresses: []string{server.Addr}}, reg)
	testutil.Equals(t, map[string][]byte{}, never.Fetch(context.Background(), []string{"x"}))
}

func TestMemcached_StopAndCanceledContext(t *testing.T) {
	addr := cachetest.StartMemcached(t)
	c, err := NewMemcached("test", MemcachedConfig{Addresses: []string{addr}}, log.NewNopLogger(), nil)
	testutil.Ok(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	testutil.Equals(t, map[string][]byte{}, c.Fetch(ctx, []string{"a"}))
	testutil.Equals(t, 0.0, promtestutil.ToFloat64(c.metrics.fetchFailures))

	Close(c)
	// Idempotent.
	Close(c)
	// Dropped, no panic.
	c.Store(map[string][]byte{"after-stop": []byte("1")}, 0)
}

func TestMemcachedKey(t *testing.T) {
	for _, tc := range []struct {
		key    string
		hashed bool
	}{
		{key: "P:01ABC:abcdef", hashed: false},
		{key: strings.Repeat("a", 250), hashed: false},
		{key: strings.Repeat("a", 251), hashed: true},
		{key: "", hashed: true},
		{key: "a b", hashed: true},
		{key: "a\r\nb", hashed: true},
		{key: "a\x7f", hashed: true},
		{key: "é", hashed: true},
		{key: hashedKeyPrefix + "0123", hashed: true},
	} {
		mk := memcachedKey(tc.key)
		testutil.Equals(t, tc.hashed, mk != tc.key, "key %q", tc.key)
		testutil.Assert(t, !needsHashing(mk) || strings.HasPrefix(mk, hashedKeyPrefix), "memcached key %q is not valid", mk)
		testutil.Assert(t, len(mk) <= memcachedMaxKeyLen)
		if tc.hashed {
			testutil.Assert(t, strings.HasPrefix(mk, hashedKeyPrefix))
			v, ok := decodeHashedValue(tc.key, encodeHashedValue(tc.key, []byte("v")))
			testutil.Assert(t, ok)
			testutil.Equals(t, []byte("v"), v)
		}
	}
	testutil.Assert(t, memcachedKey("a b") != memcachedKey("a  b"))
}

func TestMemcached_TTL(t *testing.T) {
	addr := cachetest.StartMemcached(t)
	c := newTestMemcached(t, "test", MemcachedConfig{Addresses: []string{addr}}, nil)
	// Sub-second TTLs are rounded up to 1s (memcached would otherwise reject or never expire them); negative ones are not stored.
	c.Store(map[string][]byte{"ttl/short": []byte("1")}, time.Millisecond)
	c.Store(map[string][]byte{"ttl/negative": []byte("1")}, -time.Second)
	c.Store(map[string][]byte{"ttl/long": []byte("1")}, 365*24*time.Hour)
	testutil.Equals(t, 2, len(fetchEventually(t, c, []string{"ttl/short", "ttl/long"}, 2)))
	testutil.Equals(t, 0, len(c.Fetch(context.Background(), []string{"ttl/negative"})))

	deadline := time.Now().Add(5 * time.Second)
	for len(c.Fetch(context.Background(), []string{"ttl/short"})) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	testutil.Equals(t, map[string][]byte{"ttl/long": []byte("1")}, c.Fetch(context.Background(), []string{"ttl/short", "ttl/long"}))
}

// Stop ends the cache's goroutines and connections (but for dskit's resolver goroutine, see cachetest.GoleakOptions).
func TestMemcached_StopLeavesNoGoroutines(t *testing.T) {
	addr := cachetest.StartMemcached(t)
	ignore := append(cachetest.GoleakOptions(), goleak.IgnoreCurrent())
	c, err := NewMemcached("leak", MemcachedConfig{Addresses: []string{addr}, MaxGetMultiBatchSize: 2}, log.NewNopLogger(), nil)
	testutil.Ok(t, err)
	c.Store(map[string][]byte{"leak/a": []byte("1"), "leak/b": []byte("1"), "leak/c": []byte("1")}, 0)
	testutil.Equals(t, 3, len(fetchEventually(t, c, []string{"leak/a", "leak/b", "leak/c", "leak/d"}, 3)))
	c.Stop()
	goleak.VerifyNone(t, ignore...)
}

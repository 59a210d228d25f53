package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
)

// TestIngestionRateSharedByDistributors: with two distributors in the distributor ring each admits half of a
// tenant's ingestion_rate (Mimir's global strategy); when one leaves, the other admits all of it.
func TestIngestionRateSharedByDistributors(t *testing.T) {
	dir := t.TempDir()
	rt := filepath.Join(dir, "runtime.yaml")
	testutil.Ok(t, os.WriteFile(rt, []byte("overrides:\n  t:\n    ingestion_rate: 100\n    ingestion_burst_size: 200\n"), 0o600))
	gossip := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	common := func(i int, id string) []string {
		port := gossip[i][strings.LastIndex(gossip[i], ":")+1:]
		return []string{"--memberlist.bind-addr=127.0.0.1", "--memberlist.bind-port=" + port, "--memberlist.join=" + gossip[0],
			"--memberlist.join=" + gossip[1], "--memberlist.join=" + gossip[2], "--runtime-config.file=" + rt,
			"--ingester.ring.heartbeat-period=1s", "--ingester.ring.replication-factor=1", "--distributor.id=" + id}
	}
	ing := startStrata(t, dir, append([]string{"ingester", "--ingester.id=i1"}, common(0, "")[:8]...)...)
	d1 := startStrata(t, dir, append([]string{"distributor"}, common(1, "d1")...)...)
	d2 := startStrata(t, dir, append([]string{"distributor"}, common(2, "d2")...)...)
	for _, p := range []*proc{ing, d1, d2} {
		p.waitReady(t, 60*time.Second)
	}
	waitUntil(t, 30*time.Second, "d1 sees 2 distributors and the ingester", func() bool {
		_, dr := httpGet(d1.url("/distributor/ring"), map[string]string{"Accept": "application/json"})
		_, ir := httpGet(d1.url("/ingester/ring"), map[string]string{"Accept": "application/json"})
		return strings.Count(dr, `"state":"ACTIVE"`) == 2 && strings.Count(ir, `"state":"ACTIVE"`) == 1
	})
	time.Sleep(6 * time.Second) // d1 recounts distributors every 5s

	now := time.Now().UnixMilli()
	push := func(n int, ts int64) int {
		code, _ := pushV1(t, d1.url("/api/v1/push"), "t", seriesOf("m", n, ts))
		return code
	}
	testutil.Equals(t, 204, push(200, now)) // the burst is not divided
	time.Sleep(time.Second)
	testutil.Equals(t, 429, push(80, now+1000)) // ~50 tokens refilled: half the rate

	d2.stop(t)
	time.Sleep(7 * time.Second)                  // d2 left the ring; d1 recounts within 5s
	testutil.Equals(t, 204, push(200, now+2000)) // the bucket refilled to its burst meanwhile
	time.Sleep(time.Second)
	testutil.Equals(t, 204, push(80, now+3000)) // ~100 tokens refilled: the whole rate
}

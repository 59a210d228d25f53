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
	testutil.Ok(t, os.WriteFile(rt, []byte("overrides:\n  t:\n    ingestion_rate: 100\n    ingestion_burst_size: 200\n"+
		"  probe:\n    ingestion_rate: 10\n    ingestion_burst_size: 10\n"), 0o600))
	gossip := newMemberlist(t, 3)
	common := func(i int) []string {
		return append(gossip.flags(i), "--runtime-config.file="+rt, "--ingester.ring.heartbeat-period=1s", "--ingester.ring.replication-factor=1")
	}
	ing := startStrata(t, dir, append([]string{"ingester", "--ingester.id=i1"}, common(0)...)...)
	d1 := startStrata(t, dir, append([]string{"distributor", "--distributor.id=d1"}, common(1)...)...)
	d2 := startStrata(t, dir, append([]string{"distributor", "--distributor.id=d2"}, common(2)...)...)
	for _, p := range []*proc{ing, d1, d2} {
		p.waitReady(t, 60*time.Second)
	}
	waitUntil(t, 30*time.Second, "d1 sees 2 distributors and the ingester", func() bool {
		_, dr := httpGet(d1.url("/distributor/ring"), map[string]string{"Accept": "application/json"})
		_, ir := httpGet(d1.url("/ingester/ring"), map[string]string{"Accept": "application/json"})
		return strings.Count(dr, `"state":"ACTIVE"`) == 2 && strings.Count(ir, `"state":"ACTIVE"`) == 1
	})
	now := time.Now().UnixMilli()
	push := func(n int, ts int64) int {
		code, _ := pushV1(t, d1.url("/api/v1/push"), "t", seriesOf("m", n, ts))
		return code
	}
	// d1 recounts distributors every 5s: wait until its limiter shares the rate (tenant probe's).
	probe := probeIngestionRate(t, d1.url("/api/v1/push"), now)
	waitUntil(t, 30*time.Second, "d1 admits half of the rate", func() bool { return probe() == rateHalved })
	testutil.Equals(t, 204, push(200, now)) // the burst is not divided
	time.Sleep(time.Second)
	testutil.Equals(t, 429, push(80, now+1000)) // ~50 tokens refilled: half the rate

	d2.stop(t)
	waitUntil(t, 30*time.Second, "d2 left the ring and d1 admits all of the rate", func() bool { return probe() == rateWhole })
	// The bucket refills to its burst (a rejected push takes no tokens).
	waitUntil(t, 10*time.Second, "tenant t's bucket refilled", func() bool { return push(200, now+2000) == 204 })
	time.Sleep(time.Second)
	testutil.Equals(t, 204, push(80, now+3000)) // ~100 tokens refilled: the whole rate
}

type rateShare int

const (
	rateUnknown rateShare = iota
	rateHalved            // the distributor admits less than 9/10 of tenant probe's rate
	rateWhole             // the distributor admits more than half of tenant probe's rate
)

// probeIngestionRate returns a probe of the share of tenant probe's ingestion_rate (10/s, burst 10) a distributor
// admits: it empties the token bucket (10 samples), waits a second and pushes 9. A rejection means fewer than 9
// tokens came back in at least a second: the rate is divided. An acceptance within t seconds of the first push
// means at least 9/t tokens a second: more than half the rate when t < 1.7s. Anything else is rateUnknown.
func probeIngestionRate(t *testing.T, pushURL string, ts int64) func() rateShare {
	return func() rateShare {
		ts++
		start := time.Now()
		if code, body := pushV1(t, pushURL, "probe", seriesOf("probe", 10, ts)); code != 204 {
			testutil.Equals(t, 429, code, body)
			return rateUnknown // the bucket was not full: it refills while waitUntil polls
		}
		emptied := time.Now()
		time.Sleep(time.Second) // the measurement: tokens refilled in at least a second
		ts++
		code, body := pushV1(t, pushURL, "probe", seriesOf("probe", 9, ts))
		switch {
		case code == 429 && time.Since(emptied) >= time.Second:
			return rateHalved
		case code == 204 && time.Since(start) < 1700*time.Millisecond:
			return rateWhole
		case code != 204 && code != 429:
			t.Fatalf("probe push: %d %s", code, body)
		}
		return rateUnknown
	}
}

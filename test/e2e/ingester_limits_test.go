package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
)

// TestIngesterInstanceLimitsKeepQuorum: 3 ingesters (RF 3, zones a, b, c) and a distributor; ingester-c's
// instance_limits refuse what it is sent: every forwarded write (max_inflight_push_requests_bytes: 1), or every
// series beyond its first 5 (max_series: 5; its 5 series keep being written). Writes are still acknowledged (the
// quorum of 2), each is on ingester-a and ingester-b, ingester-c holds only what its limit lets in, and counts
// what it refused.
func TestIngesterInstanceLimitsKeepQuorum(t *testing.T) {
	for _, tc := range []struct {
		name, config, reason string
		cSeries              int // series ingester-c stores, each with every sample
	}{
		{name: "inflight bytes", config: "max_inflight_push_requests_bytes: 1", reason: "ingester_max_inflight_push_requests_bytes", cSeries: 0},
		{name: "max series", config: "max_series: 5", reason: "ingester_max_series", cSeries: 5},
	} {
		t.Run(tc.name, func(t *testing.T) { testIngesterInstanceLimitsKeepQuorum(t, tc.config, tc.reason, tc.cSeries) })
	}
}

func testIngesterInstanceLimitsKeepQuorum(t *testing.T, config, reason string, cSeries int) {
	dir := t.TempDir()
	limited := filepath.Join(dir, "limited.yaml")
	testutil.Ok(t, os.WriteFile(limited, []byte("ingester:\n  instance_limits:\n    "+config+"\n"), 0o600))
	gossip := newMemberlist(t, 4)
	common := func(i int) []string {
		return append(gossip.flags(i), "--ingester.ring.heartbeat-period=1s", "--distributor.zone-awareness-enabled", "--auth.multitenancy-enabled")
	}
	var ings []*proc
	for i, zone := range []string{"a", "b", "c"} {
		args := append([]string{"ingester", "--ingester.id=ingester-" + zone, "--ingester.availability-zone=zone-" + zone}, common(i)...)
		if zone == "c" {
			args = append(args, "--config.file="+limited)
		}
		ings = append(ings, startStrata(t, dir, args...))
	}
	dist := startStrata(t, dir, append([]string{"distributor", "--distributor.id=d1"}, common(3)...)...)
	for _, p := range append(ings, dist) {
		p.waitReady(t, 60*time.Second)
	}
	waitUntil(t, 30*time.Second, "3 ACTIVE ingesters in the distributor's ring", func() bool {
		active := 0
		for _, m := range ingesterRing(t, dist.url("/ingester/ring")) {
			if m.State == "ACTIVE" && len(m.Tokens) > 0 {
				active++
			}
		}
		return active == 3
	})

	const tenant = "team-a"
	now := time.Now().UnixMilli()
	// The distributor answers once 2 replicas did: ingester-c may still be handling the write. Each write is
	// refused there (every byte too many; new series in each round), and counted once it is done: the next round
	// waits for that, so that ingester-c takes the rounds in order (a lagging replica handling two writes at once
	// could take a later sample first, and refuse the earlier one as out of order).
	refusedWrites := func() float64 {
		refused := metricsLines(t, ings[2], "strata_ingester_instance_rejected_requests_total", `reason="`+reason+`"`)
		testutil.Equals(t, 1, len(refused), "%v", refused)
		fields := strings.Fields(refused[0])
		n, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		testutil.Ok(t, err)
		return n
	}
	for round := range 3 {
		code, body := pushV1(t, dist.url("/api/v1/push"), tenant, genSeries(20, now+int64(round)*15_000))
		testutil.Equals(t, 204, code, "round %d: %s", round, body)
		waitUntil(t, 10*time.Second, "the limited ingester to refuse the write", func() bool { return refusedWrites() >= float64(round+1) })
	}
	for _, p := range ings[:2] {
		waitUntil(t, 10*time.Second, "every sample on "+p.httpAddr, func() bool {
			got := readStore(t, p.grpcAddr, tenant)
			n := 0
			for _, samples := range got {
				n += len(samples)
			}
			return len(got) == 20 && n == 60
		})
	}
	got := readStore(t, ings[2].grpcAddr, tenant)
	testutil.Equals(t, cSeries, len(got), "series on the limited ingester")
	for s, samples := range got {
		testutil.Equals(t, 3, len(samples), "samples of %s on the limited ingester", s)
	}
	testutil.Equals(t, 3.0, refusedWrites())
}

package ring

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	dskitring "github.com/grafana/dskit/ring"
)

// TestQuorumStrategyMatchesDskit: quorumStrategy filters random replica sets (states, heartbeats around the
// timeout, factors, zone awareness) as dskit's default strategy does: the same instances, maximum of
// failures and error.
func TestQuorumStrategyMatchesDskit(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	ours, theirs := newQuorumStrategy(), dskitring.NewDefaultReplicationStrategy()
	states := []dskitring.InstanceState{dskitring.ACTIVE, dskitring.JOINING, dskitring.LEAVING, dskitring.PENDING, dskitring.LEFT}
	ops := []dskitring.Operation{dskitring.WriteNoExtend, dskitring.Write, dskitring.Read, dskitring.Reporting}
	const timeout = time.Minute
	for iter := 0; iter < 2000; iter++ {
		now := time.Now().Unix()
		var instances []dskitring.InstanceDesc
		for i := rng.Intn(6); i > 0; i-- {
			ts := now - int64(rng.Intn(3))
			switch rng.Intn(4) {
			case 0:
				ts = now - int64(timeout/time.Second) - int64(rng.Intn(3)) + 1 // around the timeout
			case 1:
				ts = 0 // never heartbeated
			}
			instances = append(instances, dskitring.InstanceDesc{
				Addr: fmt.Sprintf("i%d", i), State: states[rng.Intn(len(states))], Timestamp: ts,
			})
		}
		op, rf, zoneAware := ops[rng.Intn(len(ops))], 1+rng.Intn(5), rng.Intn(2) == 0
		// The heartbeats right at the timeout change health at a second's boundary: keep ours' time (up to
		// clockRefresh old) and dskit's in the same second, well inside it.
		if frac := time.Duration(time.Now().UnixNano() % int64(time.Second)); time.Now().Unix() != now || frac < 300*time.Millisecond || frac > 800*time.Millisecond {
			time.Sleep(50 * time.Millisecond)
			iter--
			continue
		}
		wantSet, wantMax, wantErr := theirs.Filter(slices.Clone(instances), op, rf, timeout, zoneAware)
		gotSet, gotMax, gotErr := ours.Filter(slices.Clone(instances), op, rf, timeout, zoneAware)
		testutil.Equals(t, wantSet, gotSet, "iteration %d", iter)
		testutil.Equals(t, wantMax, gotMax, "iteration %d", iter)
		testutil.Equals(t, fmt.Sprint(wantErr), fmt.Sprint(gotErr), "iteration %d", iter)
	}
}

// TestCoarseClock: the clock's time lags the real one by at most its period, and moves on.
func TestCoarseClock(t *testing.T) {
	c := newCoarseClock(20 * time.Millisecond)
	first := c.unixNano()
	for i := 0; i < 5; i++ {
		got := time.Unix(0, c.unixNano())
		testutil.Assert(t, time.Since(got) < 20*time.Millisecond+50*time.Millisecond, "clock %s behind", time.Since(got))
		time.Sleep(15 * time.Millisecond)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.unixNano() == first {
		testutil.Assert(t, time.Now().Before(deadline), "clock did not move")
		time.Sleep(5 * time.Millisecond)
	}
}

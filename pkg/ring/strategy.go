package ring

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	dskitring "github.com/grafana/dskit/ring"
)

// clockRefresh is how stale the time a quorumStrategy judges heartbeats by may be. Heartbeat timestamps are
// whole seconds and the timeout a minute: a few tens of milliseconds change nothing.
const clockRefresh = 50 * time.Millisecond

// quorumStrategy is dskit's default replication strategy (every instance of the replica set but the unhealthy
// ones, a majority of the set needed) with the time read once per clockRefresh instead of on every call. The
// distributor's DoBatch looks up every series of a write in the ring, and time.Now was half of the strategy's
// Filter, a sixth of a lookup. Its results are dskit's (TestQuorumStrategyMatchesDskit).
type quorumStrategy struct {
	clock *coarseClock
}

func newQuorumStrategy() *quorumStrategy {
	return &quorumStrategy{clock: newCoarseClock(clockRefresh)}
}

func (s *quorumStrategy) Filter(instances []dskitring.InstanceDesc, op dskitring.Operation, replicationFactor int, heartbeatTimeout time.Duration, zoneAwarenessEnabled bool) ([]dskitring.InstanceDesc, int, error) {
	// As dskit's: a joining or leaving instance may make the replica set larger than the factor.
	if len(instances) > replicationFactor {
		replicationFactor = len(instances)
	}
	minSuccess := replicationFactor/2 + 1
	now := s.clock.unixNano()

	// Unhealthy instances are dropped but still count in minSuccess.
	var unhealthy []string
	for i := 0; i < len(instances); {
		if op.IsInstanceInStateHealthy(instances[i].State) && heartbeatHealthy(instances[i].Timestamp, heartbeatTimeout, now) {
			i++
		} else {
			unhealthy = append(unhealthy, instances[i].Addr)
			instances = append(instances[:i], instances[i+1:]...)
		}
	}
	if len(instances) < minSuccess {
		var unhealthyStr string
		if len(unhealthy) > 0 {
			unhealthyStr = fmt.Sprintf(" - unhealthy instances: %s", strings.Join(unhealthy, ","))
		}
		if zoneAwarenessEnabled {
			return nil, 0, fmt.Errorf("at least %d live replicas required across different availability zones, could only find %d%s", minSuccess, len(instances), unhealthyStr)
		}
		return nil, 0, fmt.Errorf("at least %d live replicas required, could only find %d%s", minSuccess, len(instances), unhealthyStr)
	}
	return instances, len(instances) - minSuccess, nil
}

// SupportsExpandedReplication: no, as dskit's default strategy (it takes the factor as the number of zones).
func (s *quorumStrategy) SupportsExpandedReplication() bool { return false }

// heartbeatHealthy is InstanceDesc.IsHeartbeatHealthy (now.Sub(time.Unix(ts, 0)) <= timeout) in integers.
func heartbeatHealthy(ts int64, timeout time.Duration, nowUnixNano int64) bool {
	return nowUnixNano-ts*int64(time.Second) <= int64(timeout)
}

// coarseClock is the time read at most once per refresh period while it is in use: a timer marks the reading
// stale, and the next call reads the time again and re-arms the timer. Idle, it reads nothing and has no timer
// pending.
type coarseClock struct {
	now   atomic.Int64 // Unix nanoseconds; 0 once stale
	timer *time.Timer
	every time.Duration
}

func newCoarseClock(every time.Duration) *coarseClock {
	c := &coarseClock{every: every}
	c.timer = time.AfterFunc(time.Hour, func() { c.now.Store(0) })
	c.timer.Stop()
	return c
}

func (c *coarseClock) unixNano() int64 {
	if n := c.now.Load(); n != 0 {
		return n
	}
	n := time.Now().UnixNano()
	if c.now.CompareAndSwap(0, n) {
		c.timer.Reset(c.every)
	}
	return n
}

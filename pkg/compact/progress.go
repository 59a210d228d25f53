package compact

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/stratametrics/strata/pkg/block"
)

// CycleProgress is how far the current (or last) cycle's compactions are: the blocks and bytes of the groups
// planned at the cycle's start, those compacted so far, and the estimated time left from the bytes rate.
type CycleProgress struct {
	Start         time.Time     `json:"start"`
	PlannedGroups int           `json:"planned_groups"`
	PlannedBlocks int           `json:"planned_blocks"`
	PlannedBytes  int64         `json:"planned_bytes"`
	DoneGroups    int           `json:"done_groups"`
	DoneBlocks    int           `json:"done_blocks"`
	DoneBytes     int64         `json:"done_bytes"`
	Elapsed       time.Duration `json:"elapsed"`
	// ETA is the time left at the rate so far (elapsed × bytes left / bytes done); 0 before the first group.
	ETA time.Duration `json:"eta"`
	// Running is false once the cycle ended.
	Running bool `json:"running"`
}

// progress tracks the cycle's CycleProgress, for the log, the metrics and the page.
type progress struct {
	mtx     sync.Mutex
	p       CycleProgress
	metrics *progressMetrics
}

type progressMetrics struct {
	plannedBlocks, plannedBytes, doneBlocks, doneBytes, elapsed, eta prometheus.Gauge
}

func newProgressMetrics(reg prometheus.Registerer) *progressMetrics {
	f := promauto.With(reg)
	g := func(name, help string) prometheus.Gauge {
		return f.NewGauge(prometheus.GaugeOpts{Name: "strata_compactor_cycle_progress_" + name, Help: help})
	}
	return &progressMetrics{
		plannedBlocks: g("planned_blocks", "Blocks in the compaction plans of the current cycle's groups (as planned at its start, grown by later levels)."),
		plannedBytes:  g("planned_bytes", "Bytes of the blocks in the compaction plans of the current cycle's groups."),
		doneBlocks:    g("done_blocks", "Blocks of the current cycle compacted so far."),
		doneBytes:     g("done_bytes", "Bytes of the current cycle's blocks compacted so far."),
		elapsed:       g("elapsed_seconds", "Time since the current cycle started (frozen at its end)."),
		eta:           g("eta_seconds", "Estimated time left to compact the current cycle's planned groups, from the bytes rate so far (0: done or not known yet)."),
	}
}

// metaBytes is the size of a block from its meta.json's file list (0 when the list is absent).
func metaBytes(m *block.Meta) int64 {
	var n int64
	for _, f := range m.Thanos.Files {
		n += f.SizeBytes
	}
	return n
}

// start begins a cycle's progress.
func (p *progress) start(now time.Time) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	p.p = CycleProgress{Start: now, Running: true}
	p.publish()
}

// without returns metas less those in drop.
func without(metas, drop []*block.Meta) []*block.Meta {
	out := make([]*block.Meta, 0, len(metas))
	for _, m := range metas {
		if !slices.Contains(drop, m) {
			out = append(out, m)
		}
	}
	return out
}

// plan adds a plan (one compaction of a group) to the cycle's total.
func (p *progress) plan(metas []*block.Meta) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	p.p.PlannedGroups++ // counts compactions, as DoneGroups
	p.p.PlannedBlocks += len(metas)
	for _, m := range metas {
		p.p.PlannedBytes += metaBytes(m)
	}
	p.publish()
}

// done records a compacted plan of blocks and bytes, at now, and returns the progress. A later level of a group
// (compacting the results) was not in the plan: the total grows with it.
func (p *progress) done(blocks int, bytes int64, now time.Time) CycleProgress {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	p.p.DoneGroups++
	p.p.DoneBlocks += blocks
	p.p.DoneBytes += bytes
	p.p.PlannedBlocks = max(p.p.PlannedBlocks, p.p.DoneBlocks)
	p.p.PlannedBytes = max(p.p.PlannedBytes, p.p.DoneBytes)
	p.p.PlannedGroups = max(p.p.PlannedGroups, p.p.DoneGroups)
	p.p.Elapsed = now.Sub(p.p.Start)
	p.p.ETA = 0
	if p.p.DoneBytes > 0 {
		p.p.ETA = time.Duration(float64(p.p.Elapsed) * float64(p.p.PlannedBytes-p.p.DoneBytes) / float64(p.p.DoneBytes))
	}
	p.publish()
	return p.p
}

// end closes the cycle's progress.
func (p *progress) end(now time.Time) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	p.p.Running, p.p.Elapsed, p.p.ETA = false, now.Sub(p.p.Start), 0
	p.publish()
}

func (p *progress) get() CycleProgress {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	return p.p
}

func (p *progress) publish() {
	m := p.metrics
	m.plannedBlocks.Set(float64(p.p.PlannedBlocks))
	m.plannedBytes.Set(float64(p.p.PlannedBytes))
	m.doneBlocks.Set(float64(p.p.DoneBlocks))
	m.doneBytes.Set(float64(p.p.DoneBytes))
	m.elapsed.Set(p.p.Elapsed.Seconds())
	m.eta.Set(p.p.ETA.Seconds())
}

// Progress returns the current (or last) cycle's progress.
func (c *Compactor) Progress() CycleProgress { return c.progress.get() }

// planCycle adds the first plan of every group of the tenants to the cycle's progress (a tenant that cannot be
// scanned is left out; its own pass reports the error).
func (c *Compactor) planCycle(ctx context.Context, tenants []string) {
	for _, tenant := range tenants {
		if ctx.Err() != nil {
			return
		}
		st, err := c.sync(ctx, tenant, c.tenantBucket(tenant))
		if err != nil {
			level.Warn(c.logger).Log("msg", "cannot plan the tenant for the cycle's progress", "tenant", tenant, "err", err)
			continue
		}
		for _, g := range Groups(mapValues(st.live)) {
			// The group's successive plans over its present blocks (the levels of their results are not known yet).
			left := c.eligibleOf(st, g.Metas)
			for range len(left) {
				plan := Plan(left, c.ranges)
				if len(plan) == 0 {
					break
				}
				c.progress.plan(plan)
				left = without(left, plan)
			}
		}
	}
}

package receive

import (
	"context"
	"math"
	"os"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"

	"github.com/stratametrics/strata/pkg/block"
)

// Ship ships every tenant's new blocks (it is called periodically, and on flush).
func (i *Ingester) Ship(ctx context.Context) error {
	var firstErr error
	for _, tenant := range i.Tenants() {
		u := i.get(tenant)
		if u == nil || u.shipper == nil {
			continue
		}
		if err := u.ship(ctx); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// ship ships the tenant's new blocks unless its TSDB was closed meanwhile (its metrics are gone then, and must
// not come back).
func (u *userTSDB) ship(ctx context.Context) error {
	u.closeMtx.RLock()
	defer u.closeMtx.RUnlock()
	if u.closed {
		return nil
	}
	i := u.ing
	n, err := u.shipper.Sync(ctx)
	i.metrics.shippedBlocks.WithLabelValues(u.tenant).Add(float64(n))
	if err != nil {
		i.metrics.shipFailures.WithLabelValues(u.tenant).Inc()
		level.Warn(i.logger).Log("msg", "shipping blocks failed", "tenant", u.tenant, "err", err)
		return errors.Wrapf(err, "ship blocks of tenant %s", u.tenant)
	}
	return nil
}

// Flush cuts every tenant's whole head into blocks (aligned to the block duration, ending at the data's last
// sample) and ships them. Appends to a tenant wait while its head is cut, so that none lands in a range being
// written to a block and is then truncated from the head unwritten.
func (i *Ingester) Flush(ctx context.Context) error {
	for _, tenant := range i.Tenants() {
		u := i.get(tenant)
		if u == nil {
			continue
		}
		if err := u.flush(i.cfg.BlockDuration.Milliseconds()); err != nil {
			return errors.Wrapf(err, "flush head of tenant %s", tenant)
		}
	}
	return i.Ship(ctx)
}

// flush cuts the head of the tenant's TSDB into blocks, unless it was closed as idle meanwhile.
func (u *userTSDB) flush(blockMs int64) error {
	u.closeMtx.RLock()
	defer u.closeMtx.RUnlock()
	if u.closed {
		return nil
	}
	u.appendMtx.Lock()
	defer u.appendMtx.Unlock()
	return compactHead(u.db, blockMs)
}

// compactHead writes the whole head into blocks, one per block-duration-aligned range, as Mimir's forced
// compaction does: the last block ends at the head's last sample, not at the end of its aligned range, so the
// head goes on accepting every sample newer than what it held (a block ending at the range's end would make the
// TSDB refuse everything older than that end as out of bounds). Each block starts at the first sample left in
// the head, so ranges without data are skipped rather than walked. Appends must not run meanwhile. Then the
// out-of-order head, if any, is cut too. A sample stamped math.MaxInt64 cannot be in a block (a block's max time
// is exclusive): it stays in the head, and the cut still ends.
func compactHead(db *tsdb.DB, blockMs int64) error {
	h := db.Head()
	for h.NumSeries() > 0 {
		dataMin, err := headDataMinTime(h)
		if err != nil {
			return err
		}
		minT, maxT, ok, last := nextHeadRange(max(h.MinTime(), dataMin), h.MaxTime(), blockMs)
		if !ok {
			break
		}
		if err := db.CompactHead(tsdb.NewRangeHeadWithIsolationDisabled(h, minT, maxT)); err != nil {
			return errors.Wrapf(err, "compact head range [%d, %d]", minT, maxT)
		}
		if last {
			break
		}
		if h.MinTime() <= maxT { // cutting a block truncates the head up to the block's end
			return errors.Newf("compact head range [%d, %d]: the head's min time %d did not move past it", minT, maxT, h.MinTime())
		}
	}
	if err := db.CompactOOOHead(context.Background()); err != nil {
		return errors.Wrap(err, "compact out-of-order head")
	}
	return nil
}

// headDataMinTime is the time of the first in-order sample in the head at or after its min time, or
// math.MaxInt64 when there is none.
func headDataMinTime(h *tsdb.Head) (int64, error) {
	ir, err := h.Index()
	if err != nil {
		return 0, errors.Wrap(err, "read head index")
	}
	defer ir.Close()
	name, value := index.AllPostingsKey()
	p, err := ir.Postings(context.Background(), name, value)
	if err != nil {
		return 0, errors.Wrap(err, "read head postings")
	}
	var (
		out  = int64(math.MaxInt64)
		b    labels.ScratchBuilder
		chks []chunks.Meta
	)
	for p.Next() {
		if err := ir.Series(p.At(), &b, &chks); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				continue // garbage-collected meanwhile
			}
			return 0, errors.Wrap(err, "read head series")
		}
		for _, c := range chks {
			out = min(out, c.MinTime)
		}
	}
	return out, errors.Wrap(p.Err(), "iterate head postings")
}

// nextHeadRange is the next range [minT, maxT] of a head holding samples in [headMin, headMax] to cut into a
// block: from headMin to the end of its block-aligned range, or to headMax (then last) if that comes first.
// ok is false when there is nothing to cut. It does not overflow for any timestamps.
func nextHeadRange(headMin, headMax, blockMs int64) (minT, maxT int64, ok, last bool) {
	if headMin == math.MaxInt64 || headMax == math.MinInt64 {
		return 0, 0, false, true // empty head
	}
	headMax = min(headMax, math.MaxInt64-1) // a block covers [min, max+1): a sample at MaxInt64 never fits
	if headMin > headMax {
		return 0, 0, false, true
	}
	start := int64(math.MinInt64) // the start of headMin's aligned range, or MinInt64 when that is below it
	if m := mod(headMin, blockMs); headMin >= math.MinInt64+m {
		start = headMin - m
	}
	if d := headMax - start; d >= blockMs || d < 0 { // the range ends before headMax (d < 0: the difference overflowed)
		return headMin, start + blockMs - 1, true, false
	}
	return headMin, headMax, true, true
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// RunShipping ships every ShipInterval, and applies changed limits and m-maps full head chunks every 10s
// (headMmapInterval), until ctx is done.
func (i *Ingester) RunShipping(ctx context.Context) {
	t := time.NewTicker(i.cfg.ShipInterval)
	defer t.Stop()
	limits := time.NewTicker(headMmapInterval)
	defer limits.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-limits.C:
			i.ApplyLimits()
			i.MmapHeadChunks()
		case <-t.C:
			_ = i.Ship(ctx)
			i.CloseIdle()
			i.metadata.purge()
			for _, tenant := range i.Tenants() {
				if u := i.get(tenant); u != nil {
					i.metrics.activeSeries.WithLabelValues(tenant).Set(float64(u.db.Head().NumSeries()))
				}
			}
		}
	}
}

// headMmapInterval is how often the ingester m-maps its heads' full chunks (MmapHeadChunks).
const headMmapInterval = 10 * time.Second

// MmapHeadChunks m-maps the full chunks of every tenant's head: writes them to the head's chunks_head files and
// lets their bytes go from the Go heap, keeping only each series' open chunk there. Prometheus's DB does it once
// a minute; a series with a sample every few seconds fills a chunk (~120 samples) well within that minute, and
// its full chunks then waited in the heap beside the open one, each with up to twice its bytes of slice capacity:
// the largest share of an ingester's memory per series under such load (measured, `make bench-write` over 10
// minutes: 30% of the heap, ~1.4 KB of RSS per series). It is the DB's own m-mapping, only more often; a chunk is
// written once either way.
func (i *Ingester) MmapHeadChunks() {
	for _, tenant := range i.Tenants() {
		u := i.get(tenant)
		if u == nil {
			continue
		}
		u.closeMtx.RLock()
		if !u.closed {
			u.db.ForceHeadMMap() // despite its name, what the DB calls every minute (DB.run → Head.mmapHeadChunks)
		}
		u.closeMtx.RUnlock()
	}
}

// CloseIdle closes the TSDBs idle for CloseIdleTSDBTimeout whose head is empty and whose blocks are all shipped,
// and removes their directories. It returns the tenants closed.
func (i *Ingester) CloseIdle() []string {
	if i.cfg.CloseIdleTSDBTimeout <= 0 || i.shippers == nil {
		return nil
	}
	var closed []string
	for _, tenant := range i.Tenants() {
		u := i.get(tenant)
		if u == nil || i.now().Sub(time.Unix(0, u.lastWrite.Load())) < i.cfg.CloseIdleTSDBTimeout {
			continue
		}
		if ok, err := i.closeIdle(u); !ok {
			continue
		} else if err != nil {
			level.Warn(i.logger).Log("msg", "closing idle TSDB", "tenant", tenant, "err", err)
			continue
		}
		level.Info(i.logger).Log("msg", "closed idle TSDB: everything is shipped", "tenant", tenant)
		closed = append(closed, tenant)
	}
	return closed
}

// closeIdle closes u if it is still idle-closable: empty head, every block shipped. ok reports whether it was
// closed (err then says whether its directory could not be removed). Everything the tenant had in this ingester
// goes with it: its collectors (the shipper's) and its series of the ingester's metrics.
func (i *Ingester) closeIdle(u *userTSDB) (ok bool, err error) {
	// Serialised with getOrOpen: a write arriving now opens the tenant again only once its metrics are gone, or
	// registering them again would fail.
	i.creating.Lock()
	defer i.creating.Unlock()
	u.closeMtx.Lock()
	defer u.closeMtx.Unlock()
	if u.closed || u.db.Head().NumSeries() > 0 || !allShipped(u.db) {
		return false, nil
	}
	i.mtx.Lock()
	delete(i.tsdbs, u.tenant)
	i.mtx.Unlock()
	u.closed = true
	dir := u.db.Dir()
	err = u.db.Close()
	if err == nil {
		err = os.RemoveAll(dir)
	}
	u.reg.unregisterAll()
	i.deleteTenantMetrics(u.tenant)
	// Counted as closed only now that everything of the tenant is gone (its metrics, its directory).
	i.mtx.RLock()
	i.metrics.tsdbs.Set(float64(len(i.tsdbs)))
	i.mtx.RUnlock()
	return true, err
}

// allShipped reports whether every block of db is recorded as shipped.
func allShipped(db *tsdb.DB) bool {
	shipped, err := block.ReadShipperMeta(db.Dir())
	if err != nil {
		return len(db.Blocks()) == 0
	}
	ids := map[ulid.ULID]bool{}
	for _, id := range shipped.Uploaded {
		ids[id] = true
	}
	for _, b := range db.Blocks() {
		if !ids[b.Meta().ULID] {
			return false
		}
	}
	return true
}

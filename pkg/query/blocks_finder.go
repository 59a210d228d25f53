package query

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// BucketBlocksFinder finds a tenant's blocks in the bucket (its bucket index, else a listing), refreshed at
// most every refresh interval per tenant, or at once on FreshBlocks. Blocks uploaded less than uploadGrace ago
// are left out: the store-gateways may not have synced them yet, and their data is still in the ingesters (or
// the sidecar's Prometheus) meanwhile. Blocks marked for deletion are kept until their mark is older than
// ignoreDeletionMarkDelay (the store-gateways serve them until then), as Mimir's bucket-index blocks finder does.
type BucketBlocksFinder struct {
	fetcher     *block.MetaFetcher
	refresh     time.Duration
	uploadGrace time.Duration
	markDelay   time.Duration
	now         func() time.Time

	mtx     sync.Mutex
	tenants map[string]*finderEntry
}

type finderEntry struct {
	mtx     sync.Mutex    // one refresh at a time
	started atomic.Uint64 // fetches begun
	fetched time.Time     // when blocks were read
	gen     uint64        // the fetch (its started number) blocks are from
	blocks  []finderBlock
}

type finderBlock struct {
	BlockRef
	uploaded time.Time
	marked   time.Time // deletion mark; zero: none
}

// NewBucketBlocksFinder returns a finder over bkt (tenants as top-level prefixes). now is time.Now when nil.
func NewBucketBlocksFinder(bkt objstore.Bucket, refresh, uploadGrace, ignoreDeletionMarkDelay time.Duration, now func() time.Time) *BucketBlocksFinder {
	if now == nil {
		now = time.Now
	}
	return &BucketBlocksFinder{
		fetcher: block.NewMetaFetcher(bkt, 32, ignoreDeletionMarkDelay, now), refresh: refresh, uploadGrace: uploadGrace,
		markDelay: ignoreDeletionMarkDelay, now: now, tenants: map[string]*finderEntry{},
	}
}

var _ FreshBlocksFinder = (*BucketBlocksFinder)(nil)

func (f *BucketBlocksFinder) entry(tenant string) *finderEntry {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	e, ok := f.tenants[tenant]
	if !ok {
		e = &finderEntry{}
		f.tenants[tenant] = e
	}
	return e
}

// Blocks implements BlocksFinder.
func (f *BucketBlocksFinder) Blocks(ctx context.Context, tenant string, minT, maxT int64) ([]BlockRef, error) {
	e := f.entry(tenant)
	e.mtx.Lock()
	if e.fetched.IsZero() || f.now().Sub(e.fetched) >= f.refresh {
		if err := f.fetch(ctx, tenant, e); err != nil {
			e.mtx.Unlock()
			return nil, err
		}
	}
	blocks := e.blocks
	e.mtx.Unlock()
	return f.filter(blocks, minT, maxT), nil
}

// FreshBlocks implements FreshBlocksFinder: the block list is read again unless a read began since the call
// (concurrent callers share one read).
func (f *BucketBlocksFinder) FreshBlocks(ctx context.Context, tenant string, minT, maxT int64) ([]BlockRef, error) {
	e := f.entry(tenant)
	before := e.started.Load()
	e.mtx.Lock()
	defer e.mtx.Unlock()
	if e.gen <= before {
		if err := f.fetch(ctx, tenant, e); err != nil {
			return nil, err
		}
	}
	return f.filter(e.blocks, minT, maxT), nil
}

// fetch reads the tenant's block list into e (e.mtx held).
func (f *BucketBlocksFinder) fetch(ctx context.Context, tenant string, e *finderEntry) error {
	gen := e.started.Add(1)
	d, err := f.fetcher.Fetch(ctx, tenant)
	if err != nil {
		return errors.Wrapf(err, "find blocks of tenant %s", tenant)
	}
	blocks := make([]finderBlock, 0, len(d.Metas))
	for _, m := range d.Metas {
		blocks = append(blocks, finderBlock{
			BlockRef: BlockRef{ID: m.ULID, MinTime: m.MinTime, MaxTime: m.MaxTime},
			uploaded: m.Thanos.UploadTime,
			marked:   d.DeletionMarks[m.ULID],
		})
	}
	sort.Slice(blocks, func(i, j int) bool { return blocks[i].ID.Compare(blocks[j].ID) < 0 })
	e.blocks, e.fetched, e.gen = blocks, f.now(), gen
	return nil
}

// filter returns the blocks overlapping [minT, maxT] that the store-gateways are expected to serve now.
func (f *BucketBlocksFinder) filter(blocks []finderBlock, minT, maxT int64) []BlockRef {
	now := f.now()
	cutoff := now.Add(-f.uploadGrace)
	var out []BlockRef
	for _, b := range blocks {
		if b.MinTime > maxT || b.MaxTime <= minT {
			continue
		}
		if !b.uploaded.IsZero() && b.uploaded.After(cutoff) {
			continue
		}
		if !b.marked.IsZero() && (f.markDelay <= 0 || now.Sub(b.marked) > f.markDelay) {
			continue // the store-gateways no longer serve it
		}
		out = append(out, b.BlockRef)
	}
	return out
}

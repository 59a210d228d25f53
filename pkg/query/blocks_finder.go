package query

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// BucketBlocksFinder finds a tenant's blocks in the bucket (its bucket index, else a listing), refreshed at
// most every refresh interval per tenant. Blocks uploaded less than uploadGrace ago are left out: the
// store-gateways may not have synced them yet, and their data is still in the ingesters (or the sidecar's
// Prometheus) meanwhile.
type BucketBlocksFinder struct {
	fetcher     *block.MetaFetcher
	refresh     time.Duration
	uploadGrace time.Duration
	now         func() time.Time

	mtx     sync.Mutex
	tenants map[string]*finderEntry
}

type finderEntry struct {
	mtx     sync.Mutex // one refresh at a time
	fetched time.Time
	blocks  []finderBlock
}

type finderBlock struct {
	BlockRef
	uploaded time.Time
}

// NewBucketBlocksFinder returns a finder over bkt (tenants as top-level prefixes).
func NewBucketBlocksFinder(bkt objstore.Bucket, refresh, uploadGrace time.Duration, now func() time.Time) *BucketBlocksFinder {
	if now == nil {
		now = time.Now
	}
	return &BucketBlocksFinder{
		fetcher: block.NewMetaFetcher(bkt, 32), refresh: refresh, uploadGrace: uploadGrace, now: now,
		tenants: map[string]*finderEntry{},
	}
}

// Blocks implements BlocksFinder.
func (f *BucketBlocksFinder) Blocks(ctx context.Context, tenant string, minT, maxT int64) ([]BlockRef, error) {
	f.mtx.Lock()
	e, ok := f.tenants[tenant]
	if !ok {
		e = &finderEntry{}
		f.tenants[tenant] = e
	}
	f.mtx.Unlock()

	e.mtx.Lock()
	if e.fetched.IsZero() || f.now().Sub(e.fetched) >= f.refresh {
		d, err := f.fetcher.Fetch(ctx, tenant)
		if err != nil {
			e.mtx.Unlock()
			return nil, errors.Wrapf(err, "find blocks of tenant %s", tenant)
		}
		blocks := make([]finderBlock, 0, len(d.Metas))
		for _, m := range d.Metas {
			blocks = append(blocks, finderBlock{BlockRef: BlockRef{ID: m.ULID, MinTime: m.MinTime, MaxTime: m.MaxTime}, uploaded: m.Thanos.UploadTime})
		}
		sort.Slice(blocks, func(i, j int) bool { return blocks[i].ID.Compare(blocks[j].ID) < 0 })
		e.blocks, e.fetched = blocks, f.now()
	}
	blocks := e.blocks
	e.mtx.Unlock()

	cutoff := f.now().Add(-f.uploadGrace)
	var out []BlockRef
	for _, b := range blocks {
		if b.MinTime > maxT || b.MaxTime <= minT {
			continue
		}
		if !b.uploaded.IsZero() && b.uploaded.After(cutoff) {
			continue
		}
		out = append(out, b.BlockRef)
	}
	return out, nil
}

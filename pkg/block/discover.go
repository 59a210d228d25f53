package block

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// BucketIndexFilename is the Mimir bucket index of a tenant, written by the compactor: the tenant's blocks and
// deletion marks in one object, so that readers need not list the bucket.
const BucketIndexFilename = "bucket-index.json.gz"

// Bucket index versions (Mimir's): 1 and 2 differ only in fields Strata does not read.
const (
	BucketIndexVersion1 = 1
	BucketIndexVersion2 = 2
)

// BucketIndex is the content of bucket-index.json.gz (Mimir's bucketindex.Index).
type BucketIndex struct {
	Version            int                    `json:"version"`
	Blocks             []BucketIndexBlock     `json:"blocks"`
	BlockDeletionMarks []BucketIndexBlockMark `json:"block_deletion_marks"`
	// UpdatedAt is when the index was written, in Unix seconds.
	UpdatedAt int64 `json:"updated_at"`
}

// BucketIndexBlock is a block of the bucket index.
type BucketIndexBlock struct {
	ID      ulid.ULID `json:"block_id"`
	MinTime int64     `json:"min_time"`
	MaxTime int64     `json:"max_time"`
	// UploadedAt is when the block's meta.json was uploaded, in Unix seconds.
	UploadedAt     int64  `json:"uploaded_at"`
	SegmentsFormat string `json:"segments_format,omitempty"`
	SegmentsNum    int    `json:"segments_num,omitempty"`
	Source         string `json:"source,omitempty"`
}

// BucketIndexBlockMark is a deletion mark of the bucket index.
type BucketIndexBlockMark struct {
	ID           ulid.ULID `json:"block_id"`
	DeletionTime int64     `json:"deletion_time"`
}

// WriteBucketIndex writes idx gzipped to bkt (a tenant's bucket).
func WriteBucketIndex(ctx context.Context, bkt objstore.Bucket, idx *BucketIndex) error {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	if err := json.NewEncoder(gz).Encode(idx); err != nil {
		return errors.Wrap(err, "encode bucket index")
	}
	if err := gz.Close(); err != nil {
		return errors.Wrap(err, "compress bucket index")
	}
	if err := bkt.Upload(ctx, BucketIndexFilename, &buf); err != nil {
		return errors.Wrap(err, "upload bucket index")
	}
	return nil
}

// ReadBucketIndex reads the bucket index of bkt (a tenant's bucket); (nil, nil) when there is none.
func ReadBucketIndex(ctx context.Context, bkt objstore.BucketReader) (*BucketIndex, error) {
	rc, err := bkt.Get(ctx, BucketIndexFilename)
	if err != nil {
		if bkt.IsObjNotFoundErr(err) {
			return nil, nil
		}
		return nil, errors.Wrap(err, "read bucket index")
	}
	defer func() { _ = rc.Close() }()
	gz, err := gzip.NewReader(rc)
	if err != nil {
		return nil, errors.Wrap(err, "decompress bucket index")
	}
	b, err := io.ReadAll(gz)
	if err != nil {
		return nil, errors.Wrap(err, "decompress bucket index")
	}
	var idx BucketIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, errors.Wrap(err, "decode bucket index")
	}
	if idx.Version != BucketIndexVersion1 && idx.Version != BucketIndexVersion2 {
		return nil, errors.Newf("bucket index version %d is not supported", idx.Version)
	}
	return &idx, nil
}

// ListTenants returns the tenants of the bucket: its top-level directories whose names are valid tenant IDs.
func ListTenants(ctx context.Context, bkt objstore.BucketReader) ([]string, error) {
	var tenants []string
	err := bkt.Iter(ctx, "", func(name string) error {
		if !strings.HasSuffix(name, objstore.DirDelim) {
			return nil
		}
		t := strings.TrimSuffix(name, objstore.DirDelim)
		if tenancy.ValidateTenantID(t) == nil {
			tenants = append(tenants, t)
		}
		return nil
	})
	if err != nil {
		return nil, errors.Wrap(err, "list tenants")
	}
	return tenants, nil
}

// MetaFetcher discovers the blocks of tenants: from the tenant's bucket index when there is one (and the blocks
// listed but not yet in it), else by listing. A block without meta.json (a partial upload or delete) is left out; so is a block marked for deletion
// longer ago than the ignore-deletion-mark delay (Mimir's ignore_deletion_mark_delay): until then it is still
// served, so that readers that planned a query with it find it, and the compactor (which deletes it only after
// its own, longer, deletion delay) leaves time for every reader to stop using it. Metas and deletion marks are
// immutable, so each is read once and remembered.
type MetaFetcher struct {
	bkt         objstore.Bucket
	concurrency int
	markDelay   time.Duration
	now         func() time.Time

	mtx   sync.Mutex
	metas map[string]map[ulid.ULID]*Meta     // tenant → block → meta
	marks map[string]map[ulid.ULID]time.Time // tenant → block → deletion time (listing only)
}

// NewMetaFetcher returns a fetcher over bkt (the whole bucket, tenants as top-level prefixes) that reads up to
// concurrency metas at a time. A block marked for deletion is still discovered until its mark is older than
// ignoreDeletionMarkDelay by now() (time.Now when nil); with a delay of 0 or less, from its mark on it is not.
func NewMetaFetcher(bkt objstore.Bucket, concurrency int, ignoreDeletionMarkDelay time.Duration, now func() time.Time) *MetaFetcher {
	if now == nil {
		now = time.Now
	}
	return &MetaFetcher{
		bkt: bkt, concurrency: max(1, concurrency), markDelay: ignoreDeletionMarkDelay, now: now,
		metas: map[string]map[ulid.ULID]*Meta{}, marks: map[string]map[ulid.ULID]time.Time{},
	}
}

// Discovered is what a fetch found of one tenant.
type Discovered struct {
	// Metas of the blocks to serve, those marked for deletion less than the delay ago included.
	Metas map[ulid.ULID]*Meta
	// DeletionMarks are the deletion times of the blocks of Metas marked for deletion.
	DeletionMarks map[ulid.ULID]time.Time
	// Partial are blocks without meta.json; Deleted are blocks marked for deletion longer ago than the delay;
	// Corrupted are blocks whose meta.json is not a valid meta (left out, as Thanos does, rather than failing
	// the tenant).
	Partial, Deleted, Corrupted []ulid.ULID
	// FromIndex says whether the bucket index was the source.
	FromIndex bool
}

// markExpired says whether a block marked for deletion at t is no longer served.
func (f *MetaFetcher) markExpired(t time.Time) bool {
	return f.markDelay <= 0 || f.now().Sub(t) > f.markDelay
}

// Fetch discovers the blocks of tenant.
func (f *MetaFetcher) Fetch(ctx context.Context, tenant string) (*Discovered, error) {
	if err := tenancy.ValidateTenantID(tenant); err != nil {
		return nil, err
	}
	tbkt := objstore.NewPrefixedBucket(f.bkt, tenant)
	d := &Discovered{Metas: map[ulid.ULID]*Meta{}, DeletionMarks: map[ulid.ULID]time.Time{}}

	var ids []ulid.ULID
	marks := map[ulid.ULID]time.Time{} // deletion time of the marked blocks
	idx, err := ReadBucketIndex(ctx, tbkt)
	if err != nil {
		return nil, errors.Wrapf(err, "tenant %s", tenant)
	}
	indexed := map[ulid.ULID]bool{} // blocks the index lists: their deletion marks come from it
	if idx != nil {
		d.FromIndex = true
		for _, b := range idx.Blocks {
			ids = append(ids, b.ID)
			indexed[b.ID] = true
		}
		for _, m := range idx.BlockDeletionMarks {
			marks[m.ID] = time.Unix(m.DeletionTime, 0)
		}
		// The compactor rewrites the index once a cycle, but sidecars, imports and ingesters upload blocks at any
		// time: the blocks listed but not (yet) in the index are discovered as a listing would, so a new block is
		// served at the next sync rather than after the next index rewrite. A block in the index but not listed is
		// kept (a listing may lag behind the index on an eventually consistent store).
		listed, err := listBlocks(ctx, tbkt)
		if err != nil {
			return nil, errors.Wrapf(err, "list blocks of tenant %s", tenant)
		}
		for _, id := range listed {
			if !indexed[id] {
				ids = append(ids, id)
			}
		}
	} else {
		ids, err = listBlocks(ctx, tbkt)
		if err != nil {
			return nil, errors.Wrapf(err, "list blocks of tenant %s", tenant)
		}
		if err := f.listDeletionMarks(ctx, tbkt, tenant, marks); err != nil {
			return nil, errors.Wrapf(err, "list deletion marks of tenant %s", tenant)
		}
	}

	known := f.known(tenant)
	var (
		mtx   sync.Mutex
		wg    sync.WaitGroup
		sem   = make(chan struct{}, f.concurrency)
		errs  []error
		fresh = map[ulid.ULID]*Meta{}
		// Marks found by the workers (marks itself is only read while they run).
		newMarks = map[ulid.ULID]time.Time{}
	)
	serve := func(id ulid.ULID, m *Meta) { // with mtx held
		fresh[id] = m
		if t, ok := marks[id]; ok {
			d.DeletionMarks[id] = t
		}
	}
	for _, id := range ids {
		if t, ok := marks[id]; ok && f.markExpired(t) {
			mtx.Lock()
			d.Deleted = append(d.Deleted, id)
			mtx.Unlock()
			continue
		}
		m, ok := known[id]
		inIndex := indexed[id]
		if ok && inIndex {
			mtx.Lock()
			serve(id, m) // the bucket index lists the deletion marks
			mtx.Unlock()
			continue
		}
		_, marked := marks[id]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var (
				err      error
				markTime time.Time
				newMark  bool
			)
			if m == nil {
				m, err = f.read(ctx, tbkt, id, tenant)
			} else if !inIndex {
				// A block seen before loses its meta.json first when it is deleted: from then on it is partial.
				err = checkMeta(ctx, tbkt, id, tenant)
			}
			if err == nil && !inIndex && !marked {
				// Listing: a Thanos compactor marks a block with its own deletion-mark.json only, possibly after
				// the block was first seen.
				markTime, newMark, err = f.readDeletionMark(ctx, tbkt, path.Join(id.String(), DeletionMarkFilename))
				err = errors.Wrapf(err, "deletion mark of block %s of tenant %s", id, tenant)
			}
			mtx.Lock()
			defer mtx.Unlock()
			if newMark {
				newMarks[id] = markTime
				if f.markExpired(markTime) {
					d.Deleted = append(d.Deleted, id)
					return
				}
			}
			switch {
			case errors.Is(err, ErrMetaNotFound):
				d.Partial = append(d.Partial, id)
			case errors.Is(err, ErrMetaCorrupted):
				d.Corrupted = append(d.Corrupted, id)
			case err != nil:
				errs = append(errs, err)
			default:
				serve(id, m)
				if newMark {
					d.DeletionMarks[id] = markTime
				}
			}
		}()
	}
	wg.Wait()
	for id, t := range newMarks {
		marks[id] = t
	}
	if len(errs) > 0 {
		return nil, errors.Wrapf(errs[0], "fetch metas of tenant %s (%d errors)", tenant, len(errs))
	}
	f.mtx.Lock()
	f.metas[tenant] = fresh
	if idx == nil {
		// Remember the marks of the blocks still listed.
		listed := make(map[ulid.ULID]time.Time, len(marks))
		for _, id := range ids {
			if t, ok := marks[id]; ok {
				listed[id] = t
			}
		}
		f.marks[tenant] = listed
	} else {
		delete(f.marks, tenant)
	}
	f.mtx.Unlock()
	d.Metas = fresh
	return d, nil
}

// readDeletionMark reads the deletion mark at name: its deletion time and whether there is one. A mark that
// cannot be decoded (or has no time) counts as marked now: its block is served for the delay from now on.
func (f *MetaFetcher) readDeletionMark(ctx context.Context, tbkt objstore.BucketReader, name string) (time.Time, bool, error) {
	content, err := getObject(ctx, tbkt, name)
	if err != nil || content == nil {
		return time.Time{}, false, err
	}
	var m DeletionMark
	if json.Unmarshal(content, &m) != nil || m.DeletionTime <= 0 {
		return f.now(), true, nil
	}
	return time.Unix(m.DeletionTime, 0), true, nil
}

func (f *MetaFetcher) known(tenant string) map[ulid.ULID]*Meta {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	return f.metas[tenant]
}

// read reads a block's meta.json.
func (f *MetaFetcher) read(ctx context.Context, tbkt objstore.Bucket, id ulid.ULID, tenant string) (*Meta, error) {
	m, err := ReadMetaFromBucket(ctx, tbkt, id)
	return m, errors.Wrapf(err, "tenant %s", tenant)
}

// checkMeta returns an error wrapping ErrMetaNotFound when the block's meta.json is gone.
func checkMeta(ctx context.Context, tbkt objstore.Bucket, id ulid.ULID, tenant string) error {
	ok, err := tbkt.Exists(ctx, path.Join(id.String(), MetaFilename))
	if err != nil {
		return errors.Wrapf(err, "check meta.json of block %s of tenant %s", id, tenant)
	}
	if !ok {
		return errors.Wrapf(ErrMetaNotFound, "block %s of tenant %s", id, tenant)
	}
	return nil
}

// listBlocks lists the block directories of a tenant's bucket.
func listBlocks(ctx context.Context, tbkt objstore.BucketReader) ([]ulid.ULID, error) {
	var ids []ulid.ULID
	err := tbkt.Iter(ctx, "", func(name string) error {
		id, err := ulid.Parse(strings.TrimSuffix(name, objstore.DirDelim))
		if err == nil && strings.HasSuffix(name, objstore.DirDelim) {
			ids = append(ids, id)
		}
		return nil
	})
	return ids, err
}

// listDeletionMarks adds the blocks with a mirrored deletion mark under markers/ to marks, with their deletion
// times: remembered from an earlier fetch, else read.
func (f *MetaFetcher) listDeletionMarks(ctx context.Context, tbkt objstore.BucketReader, tenant string, marks map[ulid.ULID]time.Time) error {
	f.mtx.Lock()
	known := f.marks[tenant]
	f.mtx.Unlock()
	suffix := "-" + DeletionMarkFilename
	var unknown []ulid.ULID
	err := tbkt.Iter(ctx, MarkersDirname+objstore.DirDelim, func(name string) error {
		base := path.Base(name)
		if !strings.HasSuffix(base, suffix) {
			return nil
		}
		id, err := ulid.Parse(strings.TrimSuffix(base, suffix))
		if err != nil {
			return nil
		}
		if t, ok := known[id]; ok {
			marks[id] = t
		} else {
			unknown = append(unknown, id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range unknown {
		t, ok, err := f.readDeletionMark(ctx, tbkt, DeletionMarkFilepath(id))
		if err != nil {
			return errors.Wrapf(err, "deletion mark of block %s", id)
		}
		if ok { // else deleted since listed
			marks[id] = t
		}
	}
	return nil
}

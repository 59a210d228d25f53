package block

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"maps"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/efficientgo/core/errcapture"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// Resolutions of downsampled blocks, in milliseconds ("thanos.downsample.resolution").
const (
	ResolutionRaw int64 = 0
	Resolution5m  int64 = 5 * 60 * 1000
	Resolution1h  int64 = 60 * 60 * 1000
)

// ImportConfig says what `strata tools import-thanos` copies.
type ImportConfig struct {
	// Tenant is the tenant the blocks are copied to (<Tenant>/<ULID>/); tenant_id=<Tenant> is added to their
	// thanos.labels.
	Tenant string
	// MatchLabels selects the blocks whose thanos.labels have every one of these label values; empty: all.
	MatchLabels map[string]string
	// Resolution selects the blocks by resolution: raw, 5m, 1h or all ("" is all).
	Resolution string
	// DryRun plans the import and copies nothing.
	DryRun bool
	// Concurrency is how many blocks are copied at a time (at least 1).
	Concurrency int
	// ProgressInterval is how often a progress line is logged when Progress is nil (0: never).
	ProgressInterval time.Duration
	// Progress is told how the copy advances; nil: log lines (every ProgressInterval and one per block).
	Progress ImportProgress
}

// resolutionFilter returns whether a block of the resolution res (milliseconds) is selected by r.
func resolutionFilter(r string) (func(res int64) bool, error) {
	switch r {
	case "", "all":
		return func(int64) bool { return true }, nil
	case "raw":
		return func(res int64) bool { return res == ResolutionRaw }, nil
	case "5m":
		return func(res int64) bool { return res == Resolution5m }, nil
	case "1h":
		return func(res int64) bool { return res == Resolution1h }, nil
	}
	return nil, errors.Newf("--resolution must be one of raw, 5m, 1h, all; got %q", r)
}

// ImportBlock is a source block the import copies (or found already copied).
type ImportBlock struct {
	Meta *Meta
	// Files are the block's objects other than meta.json and its markers, with their sizes, sorted by RelPath.
	Files []File
	// Bytes is the total size of Files.
	Bytes int64
	// Present says the destination has the block already, complete with the same file sizes: it is skipped.
	Present bool
}

// ImportPlan is what an import found in the source bucket.
type ImportPlan struct {
	// Blocks selected, sorted by ULID (those Present included).
	Blocks []*ImportBlock
	// Bytes of the blocks to copy (Present ones left out); MinTime and MaxTime span every selected block.
	Bytes            int64
	MinTime, MaxTime int64
	// Partial (no meta.json), Deleted (marked for deletion), Corrupted (invalid meta.json, or files missing or
	// damaged: see checkSourceFiles) and Unselected (filtered out by labels or resolution) source blocks.
	Partial, Deleted, Corrupted, Unselected []ulid.ULID
}

// ToCopy returns the number of blocks to copy (not present already).
func (p *ImportPlan) ToCopy() int {
	n := 0
	for _, b := range p.Blocks {
		if !b.Present {
			n++
		}
	}
	return n
}

// Importer copies the blocks of a Thanos bucket (blocks at its root) into a tenant of a Strata bucket.
type Importer struct {
	logger   log.Logger
	src, dst objstore.Bucket
	cfg      ImportConfig
	now      func() time.Time
	progress ImportProgress
}

// NewImporter returns an importer from src (a Thanos bucket) into dst (the whole Strata bucket). now (time.Now
// when nil) stamps the upload time and computes the ETA. The config is checked here.
func NewImporter(logger log.Logger, src, dst objstore.Bucket, cfg ImportConfig, now func() time.Time) (*Importer, error) {
	if err := tenancy.ValidateTenantID(cfg.Tenant); err != nil {
		return nil, errors.Wrap(err, "--tenant")
	}
	if _, err := resolutionFilter(cfg.Resolution); err != nil {
		return nil, err
	}
	if _, ok := cfg.MatchLabels[tenancy.TenantIDLabel]; ok {
		return nil, errors.Newf("--match-label cannot select on %s: Thanos blocks have none; the import adds it", tenancy.TenantIDLabel)
	}
	if now == nil {
		now = time.Now
	}
	cfg.Concurrency = max(1, cfg.Concurrency)
	progress := cfg.Progress
	if progress == nil {
		progress = NewImportProgress(logger, nil, false, cfg.ProgressInterval, now)
	}
	return &Importer{logger: logger, src: src, dst: dst, cfg: cfg, now: now, progress: progress}, nil
}

// Plan lists the source blocks, selects those to import and finds which the destination has already.
func (im *Importer) Plan(ctx context.Context) (*ImportPlan, error) {
	accept, _ := resolutionFilter(im.cfg.Resolution)
	ids, err := listBlocks(ctx, im.src)
	if err != nil {
		return nil, errors.Wrap(err, "list blocks of the source bucket")
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].Compare(ids[j]) < 0 })
	marked, err := im.globalDeletionMarks(ctx)
	if err != nil {
		return nil, err
	}
	// Each block is examined by one of Concurrency workers (a few requests each); the plan is assembled in
	// ULID order afterwards.
	type outcome struct {
		kind  string // "deleted", "partial", "corrupted", "unselected", "block"
		block *ImportBlock
		err   error
	}
	outcomes := make([]outcome, len(ids))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(im.cfg.Concurrency, max(1, len(ids))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				kind, b, err := im.examine(ctx, ids[i], marked[ids[i]], accept)
				outcomes[i] = outcome{kind: kind, block: b, err: err}
			}
		}()
	}
	for i := range ids {
		next <- i
	}
	close(next)
	wg.Wait()

	plan := &ImportPlan{}
	for i, o := range outcomes {
		id := ids[i]
		switch {
		case o.err != nil:
			return nil, o.err
		case o.kind == "deleted":
			plan.Deleted = append(plan.Deleted, id)
		case o.kind == "partial":
			plan.Partial = append(plan.Partial, id)
		case o.kind == "corrupted":
			plan.Corrupted = append(plan.Corrupted, id)
		case o.kind == "unselected":
			plan.Unselected = append(plan.Unselected, id)
		default:
			b, m := o.block, o.block.Meta
			if len(plan.Blocks) == 0 || m.MinTime < plan.MinTime {
				plan.MinTime = m.MinTime
			}
			if len(plan.Blocks) == 0 || m.MaxTime > plan.MaxTime {
				plan.MaxTime = m.MaxTime
			}
			if !b.Present {
				plan.Bytes += b.Bytes
			}
			plan.Blocks = append(plan.Blocks, b)
		}
	}
	return plan, nil
}

// examine says what the import does with source block id: skip it as "deleted" (markedGlobally, or its own
// deletion mark), "partial", "corrupted" or "unselected", or import it ("block", with its files and whether
// the destination has it already).
func (im *Importer) examine(ctx context.Context, id ulid.ULID, markedGlobally bool, accept func(int64) bool) (string, *ImportBlock, error) {
	if markedGlobally {
		return "deleted", nil, nil
	}
	ok, err := im.src.Exists(ctx, path.Join(id.String(), DeletionMarkFilename))
	if err != nil {
		return "", nil, errors.Wrapf(err, "check the deletion mark of source block %s", id)
	}
	if ok {
		return "deleted", nil, nil
	}
	m, err := ReadMetaFromBucket(ctx, im.src, id)
	switch {
	case errors.Is(err, ErrMetaNotFound):
		return "partial", nil, nil
	case errors.Is(err, ErrMetaCorrupted):
		level.Warn(im.logger).Log("msg", "skipping source block with a corrupted meta.json", "block", id, "err", err)
		return "corrupted", nil, nil
	case err != nil:
		return "", nil, errors.Wrap(err, "read the source bucket")
	}
	if !accept(m.Thanos.Downsample.Resolution) || !matches(m.Thanos.Labels, im.cfg.MatchLabels) {
		return "unselected", nil, nil
	}
	b := &ImportBlock{Meta: m}
	if b.Files, err = listFiles(ctx, im.src, id); err != nil {
		return "", nil, errors.Wrapf(err, "list the files of source block %s", id)
	}
	if err := checkSourceFiles(m, b.Files); err != nil {
		level.Warn(im.logger).Log("msg", "skipping source block with missing or damaged files", "block", id, "err", err)
		return "corrupted", nil, nil
	}
	for _, f := range b.Files {
		b.Bytes += f.SizeBytes
	}
	if b.Present, err = present(ctx, objstore.NewPrefixedBucket(im.dst, im.cfg.Tenant), id, b.Files); err != nil {
		return "", nil, errors.Wrapf(err, "check destination block %s", id)
	}
	return "block", b, nil
}

// checkSourceFiles says why the objects of a source block (files, meta.json and markers left out) do not make
// a whole block, copied as it is it would break every reader of the tenant: no index, an empty index or chunk
// segment file (a real one has a header), or a file meta.json lists (thanos.files) that is missing or of
// another size.
func checkSourceFiles(m *Meta, files []File) error {
	have := make(map[string]int64, len(files))
	for _, f := range files {
		have[f.RelPath] = f.SizeBytes
		if f.SizeBytes == 0 && (f.RelPath == IndexFilename || strings.HasPrefix(f.RelPath, ChunksDirname+"/")) {
			return errors.Newf("%s is empty", f.RelPath)
		}
	}
	if _, ok := have[IndexFilename]; !ok {
		return errors.Newf("no %s", IndexFilename)
	}
	for _, f := range m.Thanos.Files {
		if f.RelPath == MetaFilename || isMarker(f.RelPath) {
			continue
		}
		size, ok := have[f.RelPath]
		if !ok {
			return errors.Newf("%s, listed in meta.json, is missing", f.RelPath)
		}
		if f.SizeBytes > 0 && size != f.SizeBytes {
			return errors.Newf("%s has %d bytes, meta.json says %d", f.RelPath, size, f.SizeBytes)
		}
	}
	return nil
}

// globalDeletionMarks returns the blocks with a mirrored deletion mark under markers/ of the source bucket.
func (im *Importer) globalDeletionMarks(ctx context.Context) (map[ulid.ULID]bool, error) {
	marked := map[ulid.ULID]bool{}
	suffix := "-" + DeletionMarkFilename
	err := im.src.Iter(ctx, MarkersDirname+objstore.DirDelim, func(name string) error {
		if id, err := ulid.Parse(strings.TrimSuffix(path.Base(name), suffix)); err == nil && strings.HasSuffix(name, suffix) {
			marked[id] = true
		}
		return nil
	})
	return marked, errors.Wrap(err, "list the deletion marks of the source bucket")
}

func matches(lset, match map[string]string) bool {
	for k, v := range match {
		if got, ok := lset[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// isMarker says whether rel (relative to a block directory) is a block marker, which the import does not copy.
func isMarker(rel string) bool {
	return rel == DeletionMarkFilename || rel == NoCompactMarkFilename
}

// listFiles lists the objects of block id of bkt, meta.json and markers left out, with their sizes.
func listFiles(ctx context.Context, bkt objstore.Bucket, id ulid.ULID) ([]File, error) {
	var files []File
	prefix := id.String() + objstore.DirDelim
	err := bkt.Iter(ctx, prefix, func(name string) error {
		rel := strings.TrimPrefix(name, prefix)
		if strings.HasSuffix(name, objstore.DirDelim) || rel == MetaFilename || isMarker(rel) {
			return nil
		}
		attrs, err := bkt.Attributes(ctx, name)
		if err != nil {
			return errors.Wrapf(err, "attributes of %s", name)
		}
		files = append(files, File{RelPath: rel, SizeBytes: attrs.Size})
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return nil, err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].RelPath < files[j].RelPath })
	return files, nil
}

// present says whether the tenant's bucket tdst has block id complete (meta.json) with files of these sizes.
func present(ctx context.Context, tdst objstore.Bucket, id ulid.ULID, files []File) (bool, error) {
	ok, err := tdst.Exists(ctx, path.Join(id.String(), MetaFilename))
	if err != nil || !ok {
		return false, err
	}
	for _, f := range files {
		attrs, err := tdst.Attributes(ctx, path.Join(id.String(), f.RelPath))
		if tdst.IsObjNotFoundErr(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if attrs.Size != f.SizeBytes {
			return false, nil
		}
	}
	return true, nil
}

// Run copies the blocks of plan that the destination does not have. It stops at the first block that fails
// (that block is left without meta.json, so invisible; a re-run copies it again) and returns that error.
func (im *Importer) Run(ctx context.Context, plan *ImportPlan) error {
	var todo []*ImportBlock
	for _, b := range plan.Blocks {
		if !b.Present {
			todo = append(todo, b)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	im.progress.Start(len(todo), plan.Bytes)

	var (
		wg    sync.WaitGroup
		mtx   sync.Mutex
		first error
		work  = make(chan *ImportBlock)
	)
	for range min(im.cfg.Concurrency, max(1, len(todo))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				if err := im.copyBlock(ctx, b); err != nil {
					mtx.Lock()
					if first == nil {
						first = err
					}
					mtx.Unlock()
					cancel()
				}
			}
		}()
	}
feed:
	for _, b := range todo {
		select {
		case work <- b:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	err := first
	if err == nil && ctx.Err() != nil {
		err = errors.Wrap(ctx.Err(), "import")
	}
	im.progress.Finish(err)
	return err
}

// copyBlock copies one block: its files, each checked against the source (size and SHA-256) after the copy,
// then its meta.json with tenant_id added to the labels, last.
func (im *Importer) copyBlock(ctx context.Context, b *ImportBlock) error {
	id := b.Meta.ULID
	tdst := objstore.NewPrefixedBucket(im.dst, im.cfg.Tenant)
	metaName := path.Join(id.String(), MetaFilename)
	// A block present with other files is copied again: hide it first, so that it is never visible half-copied.
	// (Only when there is one: the filesystem bucket's Delete of a missing object removes empty parent
	// directories, racing with the other blocks' uploads.)
	if ok, err := tdst.Exists(ctx, metaName); err != nil || ok {
		if err == nil {
			err = deleteObject(ctx, tdst, metaName)
		}
		if err != nil {
			return errors.Wrapf(err, "import block %s: hide the destination copy", id)
		}
	}
	files := make([]File, 0, len(b.Files)+1)
	for _, f := range b.Files {
		name := path.Join(id.String(), f.RelPath)
		sum, size, err := im.copyFile(ctx, tdst, name, f.SizeBytes)
		if err != nil {
			return errors.Wrapf(err, "import block %s", id)
		}
		gotSum, gotSize, err := hashObject(ctx, tdst, name)
		if err != nil {
			return errors.Wrapf(err, "import block %s: read back %s", id, name)
		}
		if gotSize != size || gotSum != sum {
			return errors.Newf("import block %s: copy of %s does not match the source (size %d, sha256 %s; source: size %d, sha256 %s); meta.json not written",
				id, name, gotSize, gotSum, size, sum)
		}
		files = append(files, File{RelPath: f.RelPath, SizeBytes: size, Hash: &ObjectHash{Func: "SHA256", Value: sum}})
	}
	files = append(files, File{RelPath: MetaFilename})
	sort.Slice(files, func(i, j int) bool { return files[i].RelPath < files[j].RelPath })

	meta := *b.Meta
	meta.Thanos.Labels = maps.Clone(b.Meta.Thanos.Labels)
	meta.Thanos.Labels[tenancy.TenantIDLabel] = im.cfg.Tenant
	meta.Thanos.Version = ThanosVersion1
	meta.Thanos.Files = files
	meta.Thanos.UploadTime = im.now().UTC()
	var buf bytes.Buffer
	if err := meta.Write(&buf); err != nil {
		return errors.Wrapf(err, "import block %s: encode meta.json", id)
	}
	if err := tdst.Upload(ctx, metaName, &buf); err != nil {
		return errors.Wrapf(err, "import block %s: upload meta.json", id)
	}
	im.progress.BlockDone(id)
	return nil
}

// copyFile streams the source object name into tdst under the same name and returns the SHA-256 (hex) and size
// of what was read from the source. The upload is told the object's size (the source's, else planned): an S3
// client otherwise buffers a whole part to find it out.
func (im *Importer) copyFile(ctx context.Context, tdst objstore.Bucket, name string, planned int64) (_ string, _ int64, err error) {
	rc, err := im.src.Get(ctx, name)
	if err != nil {
		return "", 0, errors.Wrapf(err, "read source %s", name)
	}
	defer errcapture.ExhaustClose(&err, rc, "close source %s", name)
	size, err := objstore.TryToGetSize(rc)
	if err != nil {
		size = planned
	}
	h := &hashingReader{r: rc, h: sha256.New(), size: size, copied: im.progress.Copied}
	if err := tdst.Upload(ctx, name, h); err != nil {
		return "", 0, errors.Wrapf(err, "upload %s", name)
	}
	if h.n != size {
		return "", 0, errors.Newf("upload %s: %d bytes copied, the source has %d", name, h.n, size)
	}
	return hex.EncodeToString(h.h.Sum(nil)), h.n, nil
}

// hashObject streams an object and returns its SHA-256 (hex) and size.
func hashObject(ctx context.Context, bkt objstore.BucketReader, name string) (_ string, _ int64, err error) {
	rc, err := bkt.Get(ctx, name)
	if err != nil {
		return "", 0, err
	}
	defer errcapture.ExhaustClose(&err, rc, "close %s", name)
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// hashingReader hashes and counts what is read through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
	// size is the size of what r reads, told to the upload (objstore.ObjectSizer).
	size int64
	// copied, when set, is told of every read.
	copied func(n int64)
}

// ObjectSize implements objstore.ObjectSizer.
func (r *hashingReader) ObjectSize() (int64, error) { return r.size, nil }

func (r *hashingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if r.copied != nil && n > 0 {
		r.copied(int64(n))
	}
	return n, err
}

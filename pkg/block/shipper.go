package block

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/objstore"
)

const (
	// ShipperMetaFilename is the file in a TSDB directory where the shipper records the blocks it shipped; the
	// same file and format as Thanos' shipper, so a Prometheus directory shipped by a Thanos sidecar is not
	// shipped again.
	ShipperMetaFilename = "thanos.shipper.json"
	// ShipperMetaVersion1 is the only version of thanos.shipper.json.
	ShipperMetaVersion1 = 1

	// shipperUploadDir is where, under the TSDB directory, blocks are hard-linked while they are uploaded (the
	// directory Thanos uses). Not a ULID, so TSDB ignores it.
	shipperUploadDir = "thanos/upload"
)

// ShipperMeta is the content of thanos.shipper.json.
type ShipperMeta struct {
	Version int `json:"version"`
	// Uploaded lists the shipped blocks still present in the directory, oldest first.
	Uploaded []ulid.ULID `json:"uploaded"`
}

// ReadShipperMeta reads <dir>/thanos.shipper.json. The error wraps fs.ErrNotExist when there is none.
func ReadShipperMeta(dir string) (*ShipperMeta, error) {
	p := filepath.Join(dir, ShipperMetaFilename)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, errors.Wrapf(err, "read %s", p)
	}
	var m ShipperMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, errors.Wrapf(err, "decode %s", p)
	}
	if m.Version != ShipperMetaVersion1 {
		return nil, errors.Newf("%s: unexpected version %d", p, m.Version)
	}
	return &m, nil
}

// WriteShipperMeta writes m to <dir>/thanos.shipper.json atomically (temporary file, fsync, rename, fsync of dir),
// tab-indented like Thanos.
func WriteShipperMeta(logger log.Logger, dir string, m *ShipperMeta) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "\t")
	if err := enc.Encode(m); err != nil {
		return errors.Wrapf(err, "encode %s", ShipperMetaFilename)
	}
	return writeFileAtomic(logger, filepath.Join(dir, ShipperMetaFilename), buf.Bytes())
}

type shipperMetrics struct {
	uploads              prometheus.Counter
	uploadFailures       prometheus.Counter
	dirSyncs             prometheus.Counter
	dirSyncFailures      prometheus.Counter
	lastSuccessfulUpload prometheus.Gauge
}

func newShipperMetrics(reg prometheus.Registerer) *shipperMetrics {
	f := promauto.With(reg)
	return &shipperMetrics{
		uploads: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_shipper_uploads_total",
			Help: "Blocks uploaded to the bucket by the shipper.",
		}),
		uploadFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_shipper_upload_failures_total",
			Help: "Block uploads of the shipper that failed (retried at the next sync).",
		}),
		dirSyncs: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_shipper_dir_syncs_total",
			Help: "Syncs of the shipper that completed without error.",
		}),
		dirSyncFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_shipper_dir_sync_failures_total",
			Help: "Syncs of the shipper that returned an error.",
		}),
		lastSuccessfulUpload: f.NewGauge(prometheus.GaugeOpts{
			Name: "strata_shipper_last_successful_upload_time",
			Help: "Unix time in seconds of the shipper's last successful block upload.",
		}),
	}
}

// ShipperOption configures a Shipper.
type ShipperOption func(*Shipper)

// WithUploadCompacted makes the shipper upload compacted blocks (compaction level > 1) as well, e.g. blocks a
// Prometheus compacted before a sidecar was added. By default only level-1 blocks are shipped, as in Thanos.
func WithUploadCompacted() ShipperOption {
	return func(s *Shipper) { s.uploadCompacted = true }
}

// Shipper uploads the blocks of one TSDB directory (one tenant's TSDB of an ingester, or a Prometheus data
// directory next to a sidecar) into one bucket (the tenant's: the caller prefixes it with the tenant).
//
// Sync ships every block of the directory not shipped before, oldest first; the shipped blocks are recorded in
// <dir>/thanos.shipper.json, so a restarted shipper does not ship them again. A block whose meta.json is already
// in the bucket counts as shipped (it was uploaded, then the process died before recording it).
//
// Only level-1 blocks are shipped by default: the caller must keep TSDB from compacting blocks before they are
// shipped (an ingester disables TSDB compaction; a sidecar needs Prometheus' min and max block durations equal),
// or pass WithUploadCompacted. Empty blocks (no samples) are never shipped.
//
// It is safe for TSDB compaction and retention to delete blocks while Sync runs: a block is hard-linked into
// <dir>/thanos/upload/ before its upload. Concurrent Sync calls are serialized; two Shippers must not share a
// directory.
type Shipper struct {
	logger          log.Logger
	dir             string
	bkt             objstore.Bucket
	labels          func() labels.Labels
	source          SourceType
	uploadCompacted bool
	metrics         *shipperMetrics

	mtx sync.Mutex // Serializes Sync.
}

// NewShipper returns a shipper of the blocks in dir to bkt. Each block is uploaded with thanos.labels set to
// lset() (called at each upload; it must hold at least tenant_id, as Upload refuses blocks without labels)
// and thanos.source set to source. Metrics are registered on reg (which may be nil) without labels; wrap reg
// to tell tenants apart.
func NewShipper(logger log.Logger, reg prometheus.Registerer, dir string, bkt objstore.Bucket, lset func() labels.Labels, source SourceType, opts ...ShipperOption) *Shipper {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	if lset == nil {
		lset = labels.EmptyLabels
	}
	s := &Shipper{
		logger:  logger,
		dir:     dir,
		bkt:     bkt,
		labels:  lset,
		source:  source,
		metrics: newShipperMetrics(reg),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// errBlockGone says a block was deleted from the directory (by TSDB compaction or retention) before it could
// be hard-linked for upload.
var errBlockGone = errors.New("block deleted from the directory before upload")

// Sync ships the blocks of the directory not shipped yet and returns how many it uploaded.
//
// Blocks are visited oldest first (by min time); a ULID-named directory without meta.json (being written) is
// skipped, and so is one whose meta.json cannot be read (Sync returns an error naming it after shipping the
// others). At the first failed upload Sync stops and returns the error, so blocks reach the bucket in time
// order; the failed block is retried at the next Sync. thanos.shipper.json is rewritten when its set of blocks
// changes: blocks shipped or found in the bucket are added, blocks no longer in the directory are dropped.
func (s *Shipper) Sync(ctx context.Context) (uploaded int, err error) {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	defer func() {
		if err != nil {
			s.metrics.dirSyncFailures.Inc()
		} else {
			s.metrics.dirSyncs.Inc()
		}
	}()

	// Hard links left by an upload that never finished (a crash) would keep deleted blocks' data on disk.
	if err := os.RemoveAll(filepath.Join(s.dir, filepath.FromSlash(shipperUploadDir))); err != nil {
		return 0, errors.Wrap(err, "remove the shipper's upload directory")
	}

	shipped, rewrite := s.readShipped()
	metas, corrupted, err := s.blockMetas()
	if err != nil {
		return 0, err
	}

	// The record keeps the shipped blocks still in the directory, plus those shipped or found now.
	var record []ulid.ULID
	for _, m := range metas {
		if _, ok := shipped[m.ULID]; ok {
			record = append(record, m.ULID)
		}
	}
	rewrite = rewrite || len(record) != len(shipped)
	defer func() {
		if !rewrite {
			return
		}
		if werr := WriteShipperMeta(s.logger, s.dir, &ShipperMeta{Version: ShipperMetaVersion1, Uploaded: sortedByMeta(record, metas)}); werr != nil {
			werr = errors.Wrap(werr, "record shipped blocks")
			if err == nil {
				err = werr
			} else {
				level.Error(s.logger).Log("msg", "record shipped blocks", "err", werr)
			}
		}
	}()

	for _, m := range metas {
		id := m.ULID
		if _, ok := shipped[id]; ok {
			continue
		}
		if m.Stats.NumSamples == 0 {
			level.Debug(s.logger).Log("msg", "not shipping empty block", "block", id)
			continue
		}
		if m.Compaction.Level > 1 && !s.uploadCompacted {
			level.Debug(s.logger).Log("msg", "not shipping compacted block", "block", id, "level", m.Compaction.Level)
			continue
		}
		ok, err := s.inBucket(ctx, id)
		if err != nil {
			return uploaded, err
		}
		if ok {
			level.Info(s.logger).Log("msg", "block already in the bucket; recording it as shipped", "block", id)
			record = append(record, id)
			rewrite = true
			continue
		}
		if err := s.upload(ctx, m); err != nil {
			if errors.Is(err, errBlockGone) {
				level.Info(s.logger).Log("msg", "block deleted before it was shipped", "block", id)
				continue
			}
			s.metrics.uploadFailures.Inc()
			return uploaded, err
		}
		level.Info(s.logger).Log("msg", "shipped block", "block", id, "mint", m.MinTime, "maxt", m.MaxTime)
		record = append(record, id)
		rewrite = true
		uploaded++
		s.metrics.uploads.Inc()
		s.metrics.lastSuccessfulUpload.SetToCurrentTime()
	}
	if len(corrupted) > 0 {
		return uploaded, errors.Newf("read meta.json of blocks %v", corrupted)
	}
	return uploaded, nil
}

// inBucket says whether block id is complete in the bucket: its meta.json is there, readable and names it. A
// meta.json that is not (a process killed while writing it to a bucket without atomic writes, e.g. the
// filesystem one, leaves it empty or cut) makes the block one to upload again, over what is there.
func (s *Shipper) inBucket(ctx context.Context, id ulid.ULID) (bool, error) {
	_, err := ReadMetaFromBucket(ctx, s.bkt, id)
	switch {
	case errors.Is(err, ErrMetaNotFound):
		return false, nil
	case errors.Is(err, ErrMetaCorrupted):
		level.Warn(s.logger).Log("msg", "block in the bucket has an unreadable meta.json; uploading it again", "block", id, "err", err)
		return false, nil
	case err != nil:
		return false, errors.Wrapf(err, "check whether block %s is in the bucket", id)
	}
	return true, nil
}

// readShipped returns the blocks recorded in thanos.shipper.json and whether the file must be (re)written: it
// is missing or unreadable. An unreadable file is logged and treated as empty: the bucket check of Sync keeps
// blocks from being shipped twice.
func (s *Shipper) readShipped() (map[ulid.ULID]struct{}, bool) {
	m, err := ReadShipperMeta(s.dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			level.Warn(s.logger).Log("msg", "ignoring unreadable shipper file; the bucket tells which blocks are shipped", "err", err)
		}
		return map[ulid.ULID]struct{}{}, true
	}
	shipped := make(map[ulid.ULID]struct{}, len(m.Uploaded))
	for _, id := range m.Uploaded {
		shipped[id] = struct{}{}
	}
	return shipped, false
}

// blockMetas returns the metas of the blocks in the directory, oldest (min time, then ULID) first, and the names
// of the blocks whose meta.json could not be read. Directories being written (no meta.json) are left out.
func (s *Shipper) blockMetas() (metas []*Meta, corrupted []string, _ error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, errors.Wrapf(err, "list blocks in %s", s.dir)
	}
	for _, e := range entries {
		id, err := ulid.ParseStrict(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		m, err := ReadMetaFromDir(filepath.Join(s.dir, e.Name()))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err == nil && m.ULID != id:
			err = errors.Newf("meta.json names block %s", m.ULID)
		}
		if err != nil {
			level.Error(s.logger).Log("msg", "not shipping block with unreadable meta.json", "block", e.Name(), "err", err)
			corrupted = append(corrupted, e.Name())
			continue
		}
		metas = append(metas, m)
	}
	sort.Slice(metas, func(i, j int) bool {
		if metas[i].MinTime != metas[j].MinTime {
			return metas[i].MinTime < metas[j].MinTime
		}
		return metas[i].ULID.Compare(metas[j].ULID) < 0
	})
	return metas, corrupted, nil
}

// upload hard-links block m into the upload directory and uploads it from there with the Thanos section set.
func (s *Shipper) upload(ctx context.Context, m *Meta) (err error) {
	src := filepath.Join(s.dir, m.ULID.String())
	updir := filepath.Join(s.dir, filepath.FromSlash(shipperUploadDir), m.ULID.String())
	if err := os.RemoveAll(updir); err != nil {
		return errors.Wrapf(err, "clean upload dir %s", updir)
	}
	defer func() {
		if rerr := os.RemoveAll(updir); rerr != nil {
			level.Warn(s.logger).Log("msg", "remove upload dir", "dir", updir, "err", rerr)
		}
	}()
	if err := hardlinkDir(src, updir); err != nil {
		if _, serr := os.Stat(src); errors.Is(serr, fs.ErrNotExist) {
			return errBlockGone
		}
		return errors.Wrapf(err, "hard-link block %s for upload", m.ULID)
	}

	if m.Thanos.Labels == nil {
		m.Thanos.Labels = map[string]string{}
	}
	s.labels().Range(func(l labels.Label) { m.Thanos.Labels[l.Name] = l.Value })
	m.Thanos.Source = s.source
	return Upload(ctx, s.logger, s.bkt, updir, m)
}

// hardlinkDir recreates the directory tree src at dst (which must not exist) with hard links to src's files.
func hardlinkDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o750)
		case d.Type().IsRegular():
			return os.Link(p, target)
		default:
			return nil
		}
	})
}

// sortedByMeta returns ids in the order of metas (oldest first).
func sortedByMeta(ids []ulid.ULID, metas []*Meta) []ulid.ULID {
	in := make(map[ulid.ULID]struct{}, len(ids))
	for _, id := range ids {
		in[id] = struct{}{}
	}
	out := make([]ulid.ULID, 0, len(ids))
	for _, m := range metas {
		if _, ok := in[m.ULID]; ok {
			out = append(out, m.ULID)
		}
	}
	return out
}

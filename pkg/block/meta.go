package block

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/efficientgo/core/errcapture"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/fileutil"
	"github.com/thanos-io/objstore"
)

// Names of a block's files, in a TSDB directory and in the bucket (<tenant>/<ULID>/<name>).
const (
	// MetaFilename is the block's meta.json: Prometheus' BlockMeta plus the "thanos" section. In the bucket it is
	// uploaded last and deleted first, so a block directory without it is a partial upload (or a partial delete).
	MetaFilename = "meta.json"
	// IndexFilename is the block's Prometheus TSDB index.
	IndexFilename = "index"
	// ChunksDirname is the directory of the block's chunk segments (000001, 000002, …).
	ChunksDirname = "chunks"
)

// Versions of meta.json understood by Strata (the same as Thanos).
const (
	// TSDBVersion1 is the only version of the Prometheus part of meta.json ("version").
	TSDBVersion1 = 1
	// ThanosVersion1 is the only version of the "thanos" section ("thanos.version"). A section without a version
	// is version 1: Thanos' first version had none, and Thanos' own shipper still writes none.
	ThanosVersion1 = 1
)

// SourceType says which component produced a block ("thanos.source"). The values are Thanos' own, so that Thanos
// tools reading the bucket understand them.
type SourceType string

// Sources of blocks, as Thanos names them.
const (
	UnknownSource         SourceType = ""
	SidecarSource         SourceType = "sidecar"
	ReceiveSource         SourceType = "receive"
	CompactorSource       SourceType = "compactor"
	CompactorRepairSource SourceType = "compactor.repair"
	RulerSource           SourceType = "ruler"
	BucketRepairSource    SourceType = "bucket.repair"
	BucketRewriteSource   SourceType = "bucket.rewrite"
	BucketUploadSource    SourceType = "bucket.upload"
	TestSource            SourceType = "test"
)

// Meta is the content of a block's meta.json: Prometheus' BlockMeta plus the "thanos" section. Its JSON encoding
// (Write, WriteToDir) is byte-for-byte the one of Thanos' metadata.Meta: the same field names, omitempty rules,
// order, tab indentation and trailing newline, so Thanos components read Strata's blocks and the other way round.
type Meta struct {
	tsdb.BlockMeta

	Thanos ThanosMeta `json:"thanos"`
}

// ThanosMeta is the "thanos" section of meta.json (Thanos' metadata.Thanos).
type ThanosMeta struct {
	// Version of the section; 0 (omitted) means ThanosVersion1.
	Version int `json:"version,omitempty"`

	// Labels are the block's external labels: in Strata always tenant_id=<tenant> plus the labels of the block's
	// producer. Blocks with different labels are never compacted together. Encoded as null when nil, as in Thanos;
	// the readers of this package return a non-nil (possibly empty) map.
	Labels map[string]string `json:"labels"`
	// Downsample says whether the block holds raw samples (resolution 0) or aggregates.
	Downsample ThanosDownsample `json:"downsample"`

	// Source is the component that produced the block.
	Source SourceType `json:"source"`

	// SegmentFiles lists the chunk segment files, sorted. Deprecated in Thanos in favour of Files; kept so that
	// such metas survive a read and write unchanged.
	SegmentFiles []string `json:"segment_files,omitempty"`

	// Files lists the block's files with their sizes, sorted by RelPath (slash-separated, relative to the block
	// directory); meta.json is listed without a size. Filled by Upload.
	Files []File `json:"files,omitempty"`

	// Rewrites records rewrites (deletions, relabelling) applied to the block by Thanos tools.
	Rewrites []Rewrite `json:"rewrites,omitempty"`

	// IndexStats holds statistics of the block's index. As in Thanos, it is always encoded (omitempty has no
	// effect on a struct): an empty one is "index_stats": {}.
	IndexStats IndexStats `json:"index_stats,omitempty"`

	// Extensions is free-form data of other systems, kept verbatim.
	Extensions json.RawMessage `json:"extensions,omitempty"`

	// UploadTime is when meta.json was uploaded (set by Upload). As in Thanos, it is always encoded: the zero
	// time is "0001-01-01T00:00:00Z".
	UploadTime time.Time `json:"upload_time,omitempty"`
}

// ThanosDownsample is the "thanos.downsample" section.
type ThanosDownsample struct {
	// Resolution in milliseconds: 0 for raw data, 300000 (5m) and 3600000 (1h) for Thanos' downsampled blocks.
	Resolution int64 `json:"resolution"`
}

// File is an entry of "thanos.files".
type File struct {
	RelPath string `json:"rel_path"`
	// SizeBytes is the file's size; omitted for meta.json.
	SizeBytes int64 `json:"size_bytes,omitempty"`
	// Hash is an optional hash of the file's content (Thanos can write SHA256 hashes; Strata does not yet).
	Hash *ObjectHash `json:"hash,omitempty"`
}

// ObjectHash is the hash of a file (Thanos' metadata.ObjectHash).
type ObjectHash struct {
	Func  string `json:"hashFunc"`
	Value string `json:"value"`
}

// IndexStats is the "thanos.index_stats" section.
type IndexStats struct {
	SeriesMaxSize int64 `json:"series_max_size,omitempty"`
	ChunkMaxSize  int64 `json:"chunk_max_size,omitempty"`
}

// Rewrite is an entry of "thanos.rewrites". Strata does not interpret deletions and relabellings; it keeps them
// verbatim so that a Thanos block's meta.json survives a read and write unchanged.
type Rewrite struct {
	// Sources are the ULIDs of the source head blocks that went into the block.
	Sources          []ulid.ULID     `json:"sources,omitempty"`
	DeletionsApplied json.RawMessage `json:"deletions_applied,omitempty"`
	RelabelsApplied  json.RawMessage `json:"relabels_applied,omitempty"`
}

// String identifies the block in logs.
func (m *Meta) String() string {
	return fmt.Sprintf("%s (min time: %d, max time: %d)", m.ULID, m.MinTime, m.MaxTime)
}

// Validate checks what every reader of a block relies on: a ULID, a non-empty time range (MinTime inclusive,
// MaxTime exclusive, so MinTime < MaxTime), and versions this package understands (TSDBVersion1, and
// ThanosVersion1 or none for the Thanos section).
func (m *Meta) Validate() error {
	if m.ULID == (ulid.ULID{}) {
		return errors.New("meta.json: block ULID not set")
	}
	if m.MinTime >= m.MaxTime {
		return errors.Newf("meta.json of block %s: min time %d not before max time %d", m.ULID, m.MinTime, m.MaxTime)
	}
	if m.Version != TSDBVersion1 {
		return errors.Newf("meta.json of block %s: unexpected version %d", m.ULID, m.Version)
	}
	if m.Thanos.Version != 0 && m.Thanos.Version != ThanosVersion1 {
		return errors.Newf("meta.json of block %s: unexpected thanos section version %d", m.ULID, m.Thanos.Version)
	}
	return nil
}

// Write writes m as JSON in Thanos' encoding (tab-indented, with a trailing newline).
func (m *Meta) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "\t")
	return enc.Encode(m)
}

// WriteToDir writes m to <dir>/meta.json atomically: into a temporary file that is fsynced, then renamed over
// meta.json, then the directory is fsynced. A crash leaves either the old or the new meta.json (and perhaps a
// stray meta.json.tmp), never a partial one. logger reports failures to clean up the temporary file.
func (m *Meta) WriteToDir(logger log.Logger, dir string) error {
	var buf bytes.Buffer
	if err := m.Write(&buf); err != nil {
		return errors.Wrapf(err, "encode meta.json of block %s", m.ULID)
	}
	if err := writeFileAtomic(logger, filepath.Join(dir, MetaFilename), buf.Bytes()); err != nil {
		return errors.Wrapf(err, "write meta.json of block %s", m.ULID)
	}
	return nil
}

// writeFileAtomic replaces the file p with data: a temporary file, fsync, rename, fsync of the directory.
func writeFileAtomic(logger log.Logger, p string, data []byte) (err error) {
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return errors.Wrapf(err, "create %s", tmp)
	}
	defer func() {
		if err == nil {
			return
		}
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			level.Warn(logger).Log("msg", "remove temporary file", "file", tmp, "err", rerr)
		}
	}()
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return errors.Wrapf(err, "write %s", tmp)
	}
	// Persist the content before the rename makes it visible, so a host crash cannot leave an empty file.
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return errors.Wrapf(err, "fsync %s", tmp)
	}
	if err := f.Close(); err != nil {
		return errors.Wrapf(err, "close %s", tmp)
	}
	// fileutil.Rename renames and fsyncs the parent directory, persisting the rename.
	if err := fileutil.Rename(tmp, p); err != nil {
		return errors.Wrapf(err, "rename %s to %s", tmp, p)
	}
	return nil
}

// ErrMetaCorrupted is wrapped by the errors of ReadMeta for a meta.json that is not valid JSON or not a valid
// meta (as opposed to one that could not be read).
var ErrMetaCorrupted = errors.New("corrupted meta.json")

// ReadMeta decodes and validates a meta.json. A missing labels map is returned as an empty one.
func ReadMeta(r io.Reader) (*Meta, error) {
	var m Meta
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, errors.Wrap(err, "read meta.json")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, errors.Wrapf(ErrMetaCorrupted, "decode meta.json: %v", err)
	}
	if err := m.Validate(); err != nil {
		return nil, errors.Wrapf(ErrMetaCorrupted, "%v", err)
	}
	if m.Thanos.Labels == nil {
		m.Thanos.Labels = map[string]string{}
	}
	return &m, nil
}

// ReadMetaFromDir reads and validates <dir>/meta.json. A TSDB block written by Prometheus has no Thanos section:
// its Thanos.Labels is empty and Thanos.Source is UnknownSource. The error wraps fs.ErrNotExist when the file is
// missing (a block still being written).
func ReadMetaFromDir(dir string) (_ *Meta, err error) {
	p := filepath.Join(dir, MetaFilename)
	f, err := os.Open(p)
	if err != nil {
		return nil, errors.Wrapf(err, "read meta.json of block dir %s", dir)
	}
	defer errcapture.Do(&err, f.Close, "close %s", p)
	m, err := ReadMeta(f)
	if err != nil {
		return nil, errors.Wrapf(err, "read %s", p)
	}
	return m, nil
}

// ErrMetaNotFound is returned (wrapped) by ReadMetaFromBucket when the block has no meta.json in the bucket:
// it does not exist, or it is a partial upload or delete.
var ErrMetaNotFound = errors.New("meta.json not found")

// ReadMetaFromBucket reads and validates <id>/meta.json from bkt (a tenant's bucket). The error wraps
// ErrMetaNotFound when there is no such object.
func ReadMetaFromBucket(ctx context.Context, bkt objstore.BucketReader, id ulid.ULID) (_ *Meta, err error) {
	name := path.Join(id.String(), MetaFilename)
	rc, err := bkt.Get(ctx, name)
	if err != nil {
		if bkt.IsObjNotFoundErr(err) {
			return nil, errors.Wrapf(ErrMetaNotFound, "read meta.json of block %s", id)
		}
		return nil, errors.Wrapf(err, "read meta.json of block %s", id)
	}
	defer errcapture.ExhaustClose(&err, rc, "close %s", name)
	m, err := ReadMeta(rc)
	if err != nil {
		return nil, errors.Wrapf(err, "read meta.json of block %s", id)
	}
	if m.ULID != id {
		return nil, errors.Wrapf(ErrMetaCorrupted, "meta.json of block %s names block %s", id, m.ULID)
	}
	return m, nil
}

// Package indexheader builds and reads index-headers: small local files holding the parts of a Prometheus TSDB
// block index that are needed to plan reads against the index in object storage (the TOC, the symbols section
// and the postings offset table), so that the store-gateway never downloads whole index files.
//
// # Header file format (format version 1)
//
// All integers are big endian.
//
//	magic            uint32  0x53544948 ("STIH")
//	format version   uint8   FormatVersion
//	index version    uint8   version of the index the header was built from (1, 2 or 3)
//	TOC              6 x uint64 (Symbols, Series, LabelIndices, LabelIndicesTable, Postings, PostingsTable)
//	index size       uint64  size of the index object in bytes
//	postings end     uint64  end of the last postings list in the index (start of the section that follows it)
//	CRC32            uint32  castagnoli checksum of the fields above
//	symbols          the index's symbols section, copied verbatim (length, count, symbols, index CRC32)
//	offset table     the index's postings offset table, copied verbatim (length, count, entries, index CRC32)
//
// Open checks the magic, the format version, all three checksums and that the file ends right after the postings
// offset table; any mismatch is an error, after which callers delete and rebuild the file.
//
// # In-memory representation
//
// Open reads the whole file into memory (no mmap: a reader stays valid after its file is deleted or replaced, Close
// never invalidates memory another goroutine may still be reading, and Size is exact). The raw symbols section and
// postings offset table bytes are the only copy of symbols and label values. On top of them the Reader keeps, per
// label name, its name, its number of values and the offset-table position of every 32nd value (Prometheus-style
// sampling); a lookup binary-searches the samples and scans at most 32 table entries. Symbols use Prometheus's
// index.Symbols over the same bytes (one offset per 32 symbols). The overhead beyond the raw bytes is thus roughly
// 50 bytes per label name plus 4 bytes per 32 values.
package indexheader

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/prometheus/tsdb/encoding"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/thanos-io/objstore"
)

const (
	// FormatVersion is the version of the header file format written by Build. Open rejects other versions.
	FormatVersion = 1

	headerMagic = 0x53544948 // "STIH".
	// fixedHeaderLen is the size of the header file's fixed part: magic, format version, index version, TOC,
	// index size, postings end and CRC32.
	fixedHeaderLen = 4 + 1 + 1 + 6*8 + 8 + 8 + crc32.Size

	// indexHeaderLen is the size of the index file's header: magic and version.
	indexHeaderLen = 5
	// indexTOCLen is the size of the index file's TOC: six offsets and a CRC32.
	indexTOCLen = 6*8 + crc32.Size

	// valueSampleFactor is the distance between sampled label values kept in memory.
	valueSampleFactor = 32
)

// castagnoli returns the CRC32 table used by Prometheus TSDB indexes (crc32 caches it).
func castagnoli() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) }

// byteSlice implements index.ByteSlice and encoding.ByteSlice over a byte slice.
type byteSlice []byte

func (b byteSlice) Len() int                    { return len(b) }
func (b byteSlice) Range(start, end int) []byte { return b[start:end] }

// Build reads the TOC, symbols and postings offset table of the index object at indexPath (e.g.
// "t1/01H.../index") with range reads and writes the header file to path atomically (tmp file + rename; parent
// dir created). It never reads the series or postings sections.
func Build(ctx context.Context, bkt objstore.BucketReader, indexPath, path string) error {
	attrs, err := bkt.Attributes(ctx, indexPath)
	if err != nil {
		return errors.Wrapf(err, "get attributes of %s", indexPath)
	}
	size := attrs.Size
	if size < indexHeaderLen+indexTOCLen {
		return errors.Newf("index %s is too small: %d bytes", indexPath, size)
	}

	head, err := getRange(ctx, bkt, indexPath, 0, indexHeaderLen)
	if err != nil {
		return errors.Wrapf(err, "read header of %s", indexPath)
	}
	if m := binary.BigEndian.Uint32(head); m != index.MagicIndex {
		return errors.Newf("index %s has invalid magic number %x", indexPath, m)
	}
	version := int(head[4])
	switch version {
	case index.FormatV1, index.FormatV2, index.FormatV3:
	default:
		return errors.Newf("index %s has unknown version %d", indexPath, version)
	}

	tocBytes, err := getRange(ctx, bkt, indexPath, size-indexTOCLen, indexTOCLen)
	if err != nil {
		return errors.Wrapf(err, "read TOC of %s", indexPath)
	}
	toc, err := index.NewTOCFromByteSlice(byteSlice(tocBytes))
	if err != nil {
		return errors.Wrapf(err, "decode TOC of %s", indexPath)
	}
	tocEnd := uint64(size - indexTOCLen)
	if toc.Symbols < indexHeaderLen || toc.Series <= toc.Symbols || toc.PostingsTable <= toc.Postings ||
		toc.PostingsTable >= tocEnd {
		return errors.Newf("index %s has an inconsistent TOC %+v (size %d)", indexPath, *toc, size)
	}

	// The series section directly follows the symbols section (after padding), so [Symbols, Series) holds it.
	symbols, err := getRange(ctx, bkt, indexPath, int64(toc.Symbols), int64(toc.Series-toc.Symbols))
	if err != nil {
		return errors.Wrapf(err, "read symbols of %s", indexPath)
	}
	if symbols, err = trimSection(symbols); err != nil {
		return errors.Wrapf(err, "read symbols of %s", indexPath)
	}
	// The postings offset table is the last section before the TOC.
	table, err := getRange(ctx, bkt, indexPath, int64(toc.PostingsTable), int64(tocEnd-toc.PostingsTable))
	if err != nil {
		return errors.Wrapf(err, "read postings offset table of %s", indexPath)
	}
	if table, err = trimSection(table); err != nil {
		return errors.Wrapf(err, "read postings offset table of %s", indexPath)
	}

	buf := make([]byte, 0, fixedHeaderLen+len(symbols)+len(table))
	buf = binary.BigEndian.AppendUint32(buf, headerMagic)
	buf = append(buf, FormatVersion, byte(version))
	for _, v := range []uint64{toc.Symbols, toc.Series, toc.LabelIndices, toc.LabelIndicesTable, toc.Postings, toc.PostingsTable} {
		buf = binary.BigEndian.AppendUint64(buf, v)
	}
	buf = binary.BigEndian.AppendUint64(buf, uint64(size))
	buf = binary.BigEndian.AppendUint64(buf, postingsEnd(toc, tocEnd))
	buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli()))
	buf = append(buf, symbols...)
	buf = append(buf, table...)

	// Parse what we are about to write, so that a header that Open would reject is never written.
	if _, err := newReader(buf); err != nil {
		return errors.Wrapf(err, "validate index-header built from %s", indexPath)
	}
	if err := writeFileAtomically(path, buf); err != nil {
		return errors.Wrapf(err, "write index-header of %s", indexPath)
	}
	return nil
}

// postingsEnd returns the end of the last postings list: the start of the first section after the postings
// section. Current Prometheus writers put the postings offset table (LabelIndicesTable == PostingsTable) right
// after the postings; older ones put the label indices table there.
func postingsEnd(toc *index.TOC, tocEnd uint64) uint64 {
	end := tocEnd
	for _, o := range []uint64{toc.Symbols, toc.Series, toc.LabelIndices, toc.LabelIndicesTable, toc.PostingsTable} {
		if o > toc.Postings && o < end {
			end = o
		}
	}
	return end
}

// trimSection cuts b, which starts with a section's 4-byte length, to the section's length plus its CRC32.
func trimSection(b []byte) ([]byte, error) {
	if len(b) < 4 {
		return nil, errors.Newf("section of %d bytes is too short for its length", len(b))
	}
	n := 4 + uint64(binary.BigEndian.Uint32(b)) + crc32.Size
	if n > uint64(len(b)) {
		return nil, errors.Newf("section length %d exceeds the %d bytes available", n, len(b))
	}
	return b[:n], nil
}

func getRange(ctx context.Context, bkt objstore.BucketReader, name string, off, length int64) ([]byte, error) {
	rc, err := bkt.GetRange(ctx, name, off, length)
	if err != nil {
		return nil, errors.Wrapf(err, "get range [%d, %d) of %s", off, off+length, name)
	}
	defer func() { _ = rc.Close() }()
	b := make([]byte, length)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, errors.Wrapf(err, "read range [%d, %d) of %s", off, off+length, name)
	}
	return b, nil
}

func writeFileAtomically(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return errors.Wrapf(err, "create directory %s", dir)
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return errors.Wrapf(err, "create temporary file in %s", dir)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(b); err != nil {
		return errors.Wrapf(err, "write %s", f.Name())
	}
	// No fsync: the header is a cache whose CRCs Open checks; one torn by a crash is rebuilt.
	if err := f.Close(); err != nil {
		return errors.Wrapf(err, "close %s", f.Name())
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return errors.Wrapf(err, "rename %s to %s", f.Name(), path)
	}
	return nil
}

// Reader is an opened index-header. It is safe for concurrent use.
type Reader struct {
	b            []byte // The whole header file.
	indexVersion int
	toc          index.TOC
	indexSize    uint64
	postingsEnd  uint64

	symbolsOff  int // Offset of the symbols section in b.
	symbols     *index.Symbols
	nameSymbols map[uint32]string // Label name symbols (v2+), which are half of all lookups.

	table      []byte // Postings offset table contents: count and entries, without length and CRC32.
	entriesEnd int    // End of the last entry in table.
	names      []labelName
}

// labelName describes the contiguous run of postings offset table entries of one label name.
type labelName struct {
	name    string
	count   int      // Number of values.
	samples []uint32 // Positions in table of the 0th, 32nd, 64th... entry.
}

// Open reads the header file at path into memory and parses it. A corrupted or truncated file, or one of another
// format version, gives an error; callers then delete and rebuild it.
func Open(path string) (*Reader, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Wrapf(err, "read index-header %s", path)
	}
	r, err := newReader(b)
	if err != nil {
		return nil, errors.Wrapf(err, "parse index-header %s", path)
	}
	return r, nil
}

func newReader(b []byte) (*Reader, error) {
	if len(b) < fixedHeaderLen {
		return nil, errors.Newf("file of %d bytes is shorter than the %d bytes header", len(b), fixedHeaderLen)
	}
	if m := binary.BigEndian.Uint32(b); m != headerMagic {
		return nil, errors.Newf("invalid magic number %x", m)
	}
	if v := b[4]; v != FormatVersion {
		return nil, errors.Newf("unsupported format version %d, want %d", v, FormatVersion)
	}
	if exp, got := binary.BigEndian.Uint32(b[fixedHeaderLen-crc32.Size:]), crc32.Checksum(b[:fixedHeaderLen-crc32.Size], castagnoli()); exp != got {
		return nil, errors.Newf("header checksum mismatch: want %x, got %x", exp, got)
	}
	d := encoding.Decbuf{B: b[5:fixedHeaderLen]}
	r := &Reader{b: b, indexVersion: int(d.Byte())}
	r.toc = index.TOC{
		Symbols:           d.Be64(),
		Series:            d.Be64(),
		LabelIndices:      d.Be64(),
		LabelIndicesTable: d.Be64(),
		Postings:          d.Be64(),
		PostingsTable:     d.Be64(),
	}
	r.indexSize = d.Be64()
	r.postingsEnd = d.Be64()
	if d.Err() != nil {
		return nil, errors.Wrap(d.Err(), "decode header")
	}

	r.symbolsOff = fixedHeaderLen
	symbols, err := index.NewSymbols(byteSlice(b), r.indexVersion, r.symbolsOff)
	if err != nil {
		return nil, errors.Wrap(err, "read symbols")
	}
	r.symbols = symbols
	tableOff := r.symbolsOff + 4 + int(binary.BigEndian.Uint32(b[r.symbolsOff:])) + crc32.Size
	if tableOff+4 > len(b) {
		return nil, errors.Newf("postings offset table at %d is beyond the end of the %d bytes file", tableOff, len(b))
	}
	tableLen := int(binary.BigEndian.Uint32(b[tableOff:]))
	if end := tableOff + 4 + tableLen + crc32.Size; end != len(b) {
		return nil, errors.Newf("postings offset table ends at %d, but the file has %d bytes", end, len(b))
	}
	r.table = b[tableOff+4 : tableOff+4+tableLen]

	if err := r.readPostingsOffsetTable(tableOff); err != nil {
		return nil, errors.Wrap(err, "read postings offset table")
	}

	if r.indexVersion != index.FormatV1 {
		r.nameSymbols = make(map[uint32]string, len(r.names))
		for _, n := range r.names {
			if n.name == "" {
				continue
			}
			ref, err := r.symbols.ReverseLookup(n.name)
			if err != nil {
				return nil, errors.Wrapf(err, "look up symbol of label name %q", n.name)
			}
			r.nameSymbols[ref] = n.name
		}
	}
	return r, nil
}

// readPostingsOffsetTable verifies the table's checksum, order and offsets and fills r.names.
func (r *Reader) readPostingsOffsetTable(tableOff int) error {
	var (
		prevValue []byte
		prevOff   uint64
		lastPos   = -1
	)
	err := index.ReadPostingsOffsetTable(byteSlice(r.b), uint64(tableOff), func(name, value []byte, off uint64, pos int) error {
		n := len(r.names)
		switch {
		case n == 0 || string(name) > r.names[n-1].name:
			r.names = append(r.names, labelName{name: string(name)})
			n++
		case string(name) != r.names[n-1].name:
			return errors.Newf("label name %q after %q: table not sorted", name, r.names[n-1].name)
		case string(value) <= string(prevValue):
			return errors.Newf("label %q value %q after %q: table not sorted", name, value, prevValue)
		}
		if lastPos >= 0 && off <= prevOff {
			return errors.Newf("postings of %q=%q at %d not after the previous ones at %d", name, value, off, prevOff)
		}
		if off < r.toc.Postings || off+4 > r.postingsEnd {
			return errors.Newf("postings of %q=%q at %d outside the postings section [%d, %d)", name, value, off, r.toc.Postings, r.postingsEnd)
		}
		ln := &r.names[n-1]
		if ln.count%valueSampleFactor == 0 {
			ln.samples = append(ln.samples, uint32(pos))
		}
		ln.count++
		prevValue, prevOff, lastPos = value, off, pos
		return nil
	})
	if err != nil {
		return err
	}
	if lastPos >= 0 {
		_, _, next, err := r.decodeEntry(lastPos)
		if err != nil {
			return err
		}
		r.entriesEnd = next
	}
	// Drop spare capacity.
	r.names = append([]labelName(nil), r.names...)
	for i := range r.names {
		r.names[i].samples = append([]uint32(nil), r.names[i].samples...)
	}
	return nil
}

// decodeEntry decodes the postings offset table entry at pos, returning its value, its postings offset and the
// position of the next entry.
func (r *Reader) decodeEntry(pos int) (value []byte, off uint64, next int, err error) {
	if pos < 0 || pos >= len(r.table) {
		return nil, 0, 0, errors.Newf("postings offset table entry at %d out of range", pos)
	}
	d := encoding.Decbuf{B: r.table[pos:]}
	d.Uvarint()      // Key count.
	d.UvarintBytes() // Label name.
	value = d.UvarintBytes()
	off = d.Uvarint64()
	if d.Err() != nil {
		return nil, 0, 0, errors.Wrapf(d.Err(), "decode postings offset table entry at %d", pos)
	}
	return value, off, len(r.table) - d.Len(), nil
}

// postingsEndAt returns the end of the postings list whose table entry ends at next: the start of the following
// list in the file.
func (r *Reader) postingsEndAt(next int) int64 {
	if next >= r.entriesEnd {
		return int64(r.postingsEnd)
	}
	_, off, _, err := r.decodeEntry(next)
	if err != nil {
		// Cannot happen after newReader validated the table; be conservative.
		return int64(r.postingsEnd)
	}
	return int64(off)
}

// IndexVersion returns the format version of the index the header was built from.
func (r *Reader) IndexVersion() int { return r.indexVersion }

// LookupSymbol resolves a symbol reference as found in series entries: for v2+ indexes the symbol's number in the
// symbol table, for v1 its offset in the index file.
func (r *Reader) LookupSymbol(_ context.Context, ref uint32) (string, error) {
	if s, ok := r.nameSymbols[ref]; ok {
		return s, nil
	}
	o := ref
	if r.indexVersion == index.FormatV1 {
		// v1 references are offsets in the index; our copy of the symbols section starts at symbolsOff.
		symEnd := uint64(r.symbolsOff) + 4 + uint64(binary.BigEndian.Uint32(r.b[r.symbolsOff:]))
		rel := uint64(ref) - r.toc.Symbols + uint64(r.symbolsOff)
		if uint64(ref) < r.toc.Symbols+8 || rel >= symEnd {
			return "", errors.Newf("symbol reference %d outside the symbols section", ref)
		}
		o = uint32(rel)
	}
	s, err := r.symbols.Lookup(o)
	if err != nil {
		return "", errors.Wrapf(err, "look up symbol %d", ref)
	}
	return s, nil
}

// LabelNames returns the sorted label names (without the all-postings key "").
func (r *Reader) LabelNames() []string {
	names := make([]string, 0, len(r.names))
	for _, n := range r.names {
		if n.name != "" {
			names = append(names, n.name)
		}
	}
	return names
}

func (r *Reader) labelName(name string) *labelName {
	i := sort.Search(len(r.names), func(i int) bool { return r.names[i].name >= name })
	if i < len(r.names) && r.names[i].name == name {
		return &r.names[i]
	}
	return nil
}

// LabelValues returns the sorted values of a label name (nil if absent).
func (r *Reader) LabelValues(name string) []string {
	values, _ := r.postingsRanges(name, nil, false)
	return values
}

// PostingsRange returns the byte range [Start, End) in the index file holding the postings list of name=value,
// starting at its 4-byte length prefix. End is the start of the next list (or section), so it includes the list's
// CRC32 and any padding. The all-postings key ("", "") works.
func (r *Reader) PostingsRange(name, value string) (index.Range, bool) {
	ln := r.labelName(name)
	if ln == nil || len(ln.samples) == 0 {
		return index.Range{}, false
	}
	// Find the last sample whose value is <= value.
	i := sort.Search(len(ln.samples), func(i int) bool {
		v, _, _, err := r.decodeEntry(int(ln.samples[i]))
		return err != nil || string(v) > value
	})
	if i == 0 {
		return index.Range{}, false
	}
	pos := int(ln.samples[i-1])
	for k := (i - 1) * valueSampleFactor; k < ln.count && k < i*valueSampleFactor; k++ {
		v, off, next, err := r.decodeEntry(pos)
		if err != nil || string(v) > value {
			return index.Range{}, false
		}
		if string(v) == value {
			return index.Range{Start: int64(off), End: r.postingsEndAt(next)}, true
		}
		pos = next
	}
	return index.Range{}, false
}

// PostingsRanges returns, for the values of name accepted by match (in sorted value order), the values and the
// ranges of their postings lists (see PostingsRange).
func (r *Reader) PostingsRanges(name string, match func(string) bool) ([]string, []index.Range) {
	return r.postingsRanges(name, match, true)
}

// postingsRanges walks the values of name, returning those accepted by match (all if match is nil) and, if
// withRanges, their postings ranges. The returned values share one allocation.
func (r *Reader) postingsRanges(name string, match func(string) bool, withRanges bool) ([]string, []index.Range) {
	ln := r.labelName(name)
	if ln == nil || len(ln.samples) == 0 {
		return nil, nil
	}
	var (
		buf    []byte
		ends   []int
		ranges []index.Range
		pos    = int(ln.samples[0])
	)
	for k := 0; k < ln.count; k++ {
		v, off, next, err := r.decodeEntry(pos)
		if err != nil {
			break // Cannot happen after newReader validated the table.
		}
		if match == nil || match(string(v)) {
			buf = append(buf, v...)
			ends = append(ends, len(buf))
			if withRanges {
				ranges = append(ranges, index.Range{Start: int64(off), End: r.postingsEndAt(next)})
			}
		}
		pos = next
	}
	if len(ends) == 0 {
		return nil, nil
	}
	all := string(buf)
	values := make([]string, len(ends))
	start := 0
	for i, end := range ends {
		values[i] = all[start:end]
		start = end
	}
	return values, ranges
}

// Size is roughly the memory the reader holds, in bytes.
func (r *Reader) Size() int64 {
	const (
		labelNameOverhead  = 16 + 8 + 24 // name header, count, samples header.
		nameSymbolOverhead = 4 + 16 + 8  // key, value, map slot overhead.
	)
	s := int64(len(r.b)) + int64(r.symbols.Size())
	for _, n := range r.names {
		s += labelNameOverhead + int64(len(n.name)) + 4*int64(len(n.samples))
	}
	return s + nameSymbolOverhead*int64(len(r.nameSymbols))
}

// Close releases the reader. The memory is heap memory reclaimed by the garbage collector once nobody references
// the reader, so Close never invalidates a reader still in use by another goroutine.
func (r *Reader) Close() error { return nil }

// DecodePostings decodes a postings list from b, which starts at a PostingsRange's Start (4-byte length, entries,
// CRC32, which is verified), returning the postings (series references, sorted) and the number of bytes the list
// used. The postings reference b.
func DecodePostings(b []byte) (index.Postings, int, error) {
	d := encoding.NewDecbufAt(byteSlice(b), 0, castagnoli())
	if d.Err() != nil {
		return nil, 0, errors.Wrap(d.Err(), "read postings list")
	}
	n := 4 + d.Len() + crc32.Size
	_, p, err := index.DecodePostingsRaw(d)
	if err != nil {
		return nil, 0, errors.Wrap(err, "decode postings list")
	}
	return p, n, nil
}

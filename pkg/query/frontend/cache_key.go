package frontend

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// keyIgnoredParams are the only parameters left out of a cache key: they are known not to change a successful
// answer. Every other parameter, known or not, is part of the key as received, so a parameter added to the
// querier later gets its own cache entries rather than someone else's answer (safe by default).
//   - timeout: how long the querier may work; it decides between an answer and an error, and errors are never
//     cached.
var keyIgnoredParams = map[string]bool{"timeout": true}

// cacheKeyVersion changes whenever the key's canonical encoding or the entry encoding changes.
const cacheKeyVersion = "strata-results-cache-v1"

// cacheKey identifies the cached extents of one range request: key is the backend's key, canonical the digest
// of the full canonical encoding (stored in the entry and compared on read, so a key collision or a backend
// that returns another key's value can never serve another request's answer).
type cacheKey struct {
	key       string
	canonical [sha256.Size]byte
}

// newCacheKey builds the key of a range request r (after splitting: r lies within one split window).
//
// What the key holds, length-prefixed: the version; the tenants (sorted, as the edge validated them; federation
// "a|b" is its own key); the API path; the query text exactly as received (no normalisation: two texts are only
// provably equivalent when they are equal); the step; the step grid's phase (start mod step: extents of one
// key share their evaluation timestamps); the split window (start / splitInterval); every parameter of
// r.Params but keyIgnoredParams, names sorted, values in the order received; for each tenant, the limits that
// change a successful answer (today: query_replica_labels, the tenant's dedup labels); and salt, the querier
// configuration that changes answers (lookback delta, default partial_response, auto-downsampling, replica
// labels: the caller's fingerprint of it).
//
// The tenants' other query limits (max_samples, max_fetched_series_per_query, max_fetched_chunk_bytes_per_query,
// max_query_length, query timeouts) only decide between an answer and an error, and errors are never cached,
// so they are not part of the key.
func newCacheKey(r *Request, splitInterval time.Duration, overrides *tenancy.Overrides, salt []byte) cacheKey {
	var b []byte
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	num := func(v int64) { b = binary.AppendVarint(b, v) }

	str(cacheKeyVersion)
	num(int64(len(r.Tenants)))
	for _, t := range r.Tenants {
		str(t)
	}
	str(r.Path)
	str(r.Query)
	num(r.Step)
	num(floorMod(r.Start, r.Step))
	interval := splitInterval.Milliseconds()
	if interval <= 0 {
		interval = math.MaxInt64
	}
	num(floorDiv(r.Start, interval))

	names := make([]string, 0, len(r.Params))
	for name := range r.Params {
		if !keyIgnoredParams[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	num(int64(len(names)))
	for _, name := range names {
		str(name)
		num(int64(len(r.Params[name])))
		for _, v := range r.Params[name] {
			str(v)
		}
	}
	for _, t := range r.Tenants {
		replicaLabels := overrides.QueryReplicaLabels(t)
		num(int64(len(replicaLabels)))
		for _, l := range replicaLabels {
			str(l)
		}
	}
	str(string(salt))

	sum := sha256.Sum256(b)
	return cacheKey{key: "qfrc:" + hex.EncodeToString(sum[:]), canonical: sum}
}

// floorMod is the remainder of floorDiv (split.go): never negative for b > 0, times before 1970 included.
func floorMod(a, b int64) int64 {
	if b == 0 {
		return 0
	}
	return a - floorDiv(a, b)*b
}

// extent is a cached answer to the request of one key for the evaluation timestamps [Start, End] (ms, on the
// key's step grid), read from data range Data, valid while the data generation Token was taken from says so.
type extent struct {
	Start, End int64
	Data       DataRange
	Token      []byte
	Matrix     []SampleStream
}

// cacheEntry is what a key's backend value holds.
type cacheEntry struct {
	canonical [sha256.Size]byte
	extents   []extent // sorted by Start, not overlapping
}

const entryMagic = "QFRC1"

// encodeEntry writes e in a compact binary form: floats as their bits, histograms as Prometheus wrote them.
func encodeEntry(e cacheEntry) []byte {
	b := append([]byte(entryMagic), e.canonical[:]...)
	str := func(s []byte) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(e.extents)))
	for _, x := range e.extents {
		for _, v := range []int64{x.Start, x.End, x.Data.MinT, x.Data.MaxT} {
			b = binary.AppendVarint(b, v)
		}
		str(x.Token)
		b = binary.AppendUvarint(b, uint64(len(x.Matrix)))
		for _, s := range x.Matrix {
			b = binary.AppendUvarint(b, uint64(s.Labels.Len()))
			s.Labels.Range(func(l labels.Label) {
				str([]byte(l.Name))
				str([]byte(l.Value))
			})
			b = binary.AppendUvarint(b, uint64(len(s.Floats)))
			for _, p := range s.Floats {
				b = binary.AppendVarint(b, p.T)
				b = binary.LittleEndian.AppendUint64(b, math.Float64bits(p.F))
			}
			b = binary.AppendUvarint(b, uint64(len(s.Histograms)))
			for _, p := range s.Histograms {
				b = binary.AppendVarint(b, p.T)
				str(p.H)
			}
		}
	}
	return b
}

var errCorruptEntry = errors.New("corrupt results cache entry")

// entryReader reads encodeEntry's format; every read is bounded by the bytes left, so a corrupt or hostile
// value gives an error, never a panic or a huge allocation.
type entryReader struct {
	b   []byte
	err error
}

func (r *entryReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorruptEntry
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *entryReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorruptEntry
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a length and checks that at least min bytes per element are left.
func (r *entryReader) count(minBytes int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)/minBytes) {
		r.err = errCorruptEntry
		return 0
	}
	return int(n)
}

func (r *entryReader) bytes() []byte {
	n := r.count(1)
	if r.err != nil {
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *entryReader) float() float64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = errCorruptEntry
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

// decodeEntry reads an entry written by encodeEntry. The returned entry does not share b's memory.
func decodeEntry(b []byte) (cacheEntry, error) {
	var e cacheEntry
	if len(b) < len(entryMagic)+sha256.Size || string(b[:len(entryMagic)]) != entryMagic {
		return e, errCorruptEntry
	}
	copy(e.canonical[:], b[len(entryMagic):])
	r := &entryReader{b: slices.Clone(b[len(entryMagic)+sha256.Size:])}
	n := r.count(5)
	e.extents = make([]extent, 0, n)
	lb := labels.NewScratchBuilder(8)
	for range n {
		x := extent{Start: r.varint(), End: r.varint()}
		x.Data.MinT, x.Data.MaxT = r.varint(), r.varint()
		x.Token = r.bytes()
		ns := r.count(3)
		x.Matrix = make([]SampleStream, 0, ns)
		for range ns {
			nl := r.count(2)
			lb.Reset()
			for range nl {
				name, value := r.bytes(), r.bytes()
				lb.Add(string(name), string(value))
			}
			lb.Sort()
			var s SampleStream
			s.Labels = lb.Labels()
			if nf := r.count(9); nf > 0 {
				s.Floats = make([]FPoint, nf)
				for k := range s.Floats {
					s.Floats[k] = FPoint{T: r.varint(), F: r.float()}
				}
			}
			if nh := r.count(2); nh > 0 {
				s.Histograms = make([]HPoint, nh)
				for k := range s.Histograms {
					s.Histograms[k] = HPoint{T: r.varint(), H: r.bytes()}
				}
			}
			x.Matrix = append(x.Matrix, s)
		}
		if r.err != nil {
			return cacheEntry{}, r.err
		}
		e.extents = append(e.extents, x)
	}
	if r.err != nil || len(r.b) != 0 {
		return cacheEntry{}, errCorruptEntry
	}
	return e, nil
}

// tenantLabel is the tenant label value of the results cache metrics: the tenants as the header joins them.
func tenantLabel(tenants []string) string { return strings.Join(tenants, "|") }

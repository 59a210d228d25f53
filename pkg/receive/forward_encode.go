package receive

import (
	"encoding/binary"
	"slices"
	"sync"

	"github.com/efficientgo/core/errors"

	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// Field tags (field number << 3 | wire type 2) of storepb.WriteRequest's fields a forwarded write has.
const (
	writeRequestTimeseriesTag = 0x0a // 1: timeseries
	writeRequestTenantTag     = 0x12 // 2: tenant
	writeRequestMetadataTag   = 0x2a // 5: metadata
)

const (
	// forwardScratchMaxBytes bounds the encoded bytes a pooled scratch keeps: the buffer of one huge request
	// is dropped after it, not held by the pool for good. A few MiB fit the usual request (2000 series of a
	// dozen labels is under 1 MiB).
	forwardScratchMaxBytes = 4 << 20
	// forwardScratchMaxItems bounds the keys and frame offsets a pooled scratch keeps, likewise.
	forwardScratchMaxItems = 64 << 10
)

// vtMarshaler is what a frame needs of a message: its vtprotobuf size and marshalling.
type vtMarshaler interface {
	SizeVT() int
	MarshalToSizedBufferVT(dAtA []byte) (int, error)
}

// forwardScratch is the per-request state of a write forwarded to ingesters: the ring tokens of its items, and
// every item encoded once as its field frame of storepb.WriteRequest (tag, length, message), which each
// ingester's sub-request then only copies. With replication factor 3 every series would otherwise be marshalled
// three times (plus three sizings), once per replica.
//
// A scratch goes back to its pool only when every send of the request is done, replicas still sending after
// the quorum answered included (DoBatch's Cleanup): until then sub-requests may read buf.
type forwardScratch struct {
	keys []uint32
	// all is every item's index, when one key stands for all of them (wholeSet).
	all []int
	// buf holds the frames back to back in item order (series, then metadata); frame i is
	// buf[offs[i]:offs[i+1]].
	buf  []byte
	offs []int

	// once encodes before the sends when every ingester is remote, else on the first send to a remote one:
	// writes to in-process ingesters alone (strata all) encode nothing.
	once sync.Once
	err  error
}

// forwardPool pools forwardScratch, bounded by forwardScratchMaxBytes and forwardScratchMaxItems.
type forwardPool struct {
	pool sync.Pool
}

func (fp *forwardPool) get() *forwardScratch {
	if s, ok := fp.pool.Get().(*forwardScratch); ok {
		return s
	}
	return &forwardScratch{}
}

func (fp *forwardPool) put(s *forwardScratch) {
	if cap(s.buf) > forwardScratchMaxBytes || cap(s.keys) > forwardScratchMaxItems || cap(s.offs) > forwardScratchMaxItems+1 ||
		cap(s.all) > forwardScratchMaxItems {
		return
	}
	s.keys, s.buf, s.offs, s.all = s.keys[:0], s.buf[:0], s.offs[:0], s.all[:0]
	s.once = sync.Once{}
	s.err = nil
	fp.pool.Put(s)
}

// encodeOnce encodes series and md into the scratch the first time it is called; every call returns the
// outcome of that first one. A series with a frame (frames may be nil) is copied as those bytes, its field of
// the request received (remotewrite.Options.KeepFrames): 1.0's TimeSeries is field 1 of both
// prometheus.WriteRequest and Thanos's storepb.WriteRequest, with the same fields.
func (s *forwardScratch) encodeOnce(series []*prompb.TimeSeries, md []*prompb.MetricMetadata, frames [][]byte) error {
	s.once.Do(func() { s.err = s.encode(series, md, frames) })
	return s.err
}

func (s *forwardScratch) encode(series []*prompb.TimeSeries, md []*prompb.MetricMetadata, frames [][]byte) error {
	buf, offs := s.buf[:0], s.offs[:0]
	var err error
	for i, ts := range series {
		offs = append(offs, len(buf))
		if frames != nil && len(frames[i]) > 0 && frames[i][0] == writeRequestTimeseriesTag {
			buf = append(buf, frames[i]...)
			continue
		}
		if buf, err = appendFrame(buf, writeRequestTimeseriesTag, ts); err != nil {
			return errors.Wrap(err, "encode series for the ingesters")
		}
	}
	for _, m := range md {
		offs = append(offs, len(buf))
		if buf, err = appendFrame(buf, writeRequestMetadataTag, m); err != nil {
			return errors.Wrap(err, "encode metadata for the ingesters")
		}
	}
	s.buf, s.offs = buf, append(offs, len(buf))
	return nil
}

// appendFrame appends m as a length-delimited field with tag, as vtprotobuf's marshalling of the message that
// holds it would write it.
func appendFrame(buf []byte, tag byte, m vtMarshaler) ([]byte, error) {
	size := m.SizeVT()
	buf = append(buf, tag)
	buf = binary.AppendUvarint(buf, uint64(size))
	n := len(buf)
	buf = slices.Grow(buf, size)[:n+size] // append's amortised growth: the pooled buffer usually fits

	if _, err := m.MarshalToSizedBufferVT(buf[n:]); err != nil {
		return nil, err
	}
	return buf, nil
}

// encodedWrite is one ingester's sub-request of a forwarded write: the storepb.WriteRequest with the tenant and
// the items at idx, marshalled by copying their frames out of the request's scratch. It implements what the
// storepb gRPC codec needs of a message (its vtMessage); its bytes are those of the *storepb.WriteRequest
// {Tenant, Timeseries, Metadata} it stands for (see TestEncodedWriteEqualsWriteRequest).
type encodedWrite struct {
	scratch *forwardScratch
	// nSeries is how many of the request's items are series: idx past them are metadata.
	nSeries int
	idx     []int
	tenant  string
	size    int
}

func newEncodedWrite(s *forwardScratch, nSeries int, idx []int, tenant string) *encodedWrite {
	w := &encodedWrite{scratch: s, nSeries: nSeries, idx: idx, tenant: tenant}
	for _, i := range idx {
		w.size += s.offs[i+1] - s.offs[i]
	}
	if tenant != "" {
		w.size += 1 + uvarintLen(uint64(len(tenant))) + len(tenant)
	}
	return w
}

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

// SizeVT is the size of the marshalled sub-request.
func (w *encodedWrite) SizeVT() int { return w.size }

// MarshalToSizedBufferVT writes the sub-request at the end of dAtA and returns its size, as vtprotobuf's
// MarshalToSizedBufferVT does; the fields come in the order vtprotobuf writes them (series, tenant, metadata),
// so the bytes are the same as *storepb.WriteRequest's. Runs of consecutive items (all of them, when each
// ingester has every series) are copied at once.
func (w *encodedWrite) MarshalToSizedBufferVT(dAtA []byte) (int, error) {
	if len(dAtA) < w.size {
		return 0, errors.Newf("encoded write of %d bytes does not fit %d", w.size, len(dAtA))
	}
	out := dAtA[len(dAtA)-w.size:]
	n := w.copyFrames(out, 0, true)
	if w.tenant != "" {
		out[n] = writeRequestTenantTag
		n++
		n += binary.PutUvarint(out[n:], uint64(len(w.tenant)))
		n += copy(out[n:], w.tenant)
	}
	n = w.copyFrames(out, n, false)
	if n != w.size {
		return 0, errors.Newf("encoded write wrote %d bytes, sized %d", n, w.size)
	}
	return w.size, nil
}

// copyFrames copies the frames of the series (series true) or of the metadata of idx into out at n, and
// returns the offset past them.
func (w *encodedWrite) copyFrames(out []byte, n int, series bool) int {
	s := w.scratch
	for k := 0; k < len(w.idx); {
		i := w.idx[k]
		if (i < w.nSeries) != series {
			k++
			continue
		}
		// Extend the run while the next item follows this one and is of the same kind.
		j := k
		for j+1 < len(w.idx) && w.idx[j+1] == w.idx[j]+1 && (w.idx[j+1] < w.nSeries) == series {
			j++
		}
		n += copy(out[n:], s.buf[s.offs[i]:s.offs[w.idx[j]+1]])
		k = j + 1
	}
	return n
}

// UnmarshalVT is not supported: an encodedWrite is only ever sent (the codec's vtMessage requires it).
func (w *encodedWrite) UnmarshalVT([]byte) error {
	return errors.New("an encoded write is send-only: unmarshal into a storepb.WriteRequest")
}

package remotewrite

import (
	"unsafe"

	"github.com/efficientgo/core/errors"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// What a request may decode into. A remote write body is compact: an empty series is 2 bytes on the wire and a
// TimeSeries message 136 bytes in memory, a 2.0 label is 2 bytes of references and 80 bytes decoded. Without a
// bound, 10 MiB of `0a 00` (a 512 KiB snappy body) decodes into 5 million series, and the same as 2.0 into
// gigabytes. So both decoders first count what a body holds (no allocation), estimate the memory decoding it
// takes, and refuse it (400) when that is more than maxDecodeRatio bytes per byte of the decompressed body.
//
// The ratios leave room for every request a real client sends: 1.0 series cost 2-10× their bytes (short
// labels and one sample: ~9×); 2.0 is denser (labels are references into a symbol table): ~15× typically, up
// to ~40× for series with many labels whose references are one byte each. What they refuse are bodies of
// empty or near-empty entries (series, labels, samples, histograms, exemplars, spans), which only a hostile or
// broken client sends. The estimate is also what the request holds against the distributor's max_inflight_push_requests_bytes (Options.Reserve).
const (
	maxDecodeRatioV1 = 24
	maxDecodeRatioV2 = 48
	// decodeSlack is allowed on top of the ratio: small requests have fixed costs.
	decodeSlack = 64 << 10

	ptrSize = int(unsafe.Sizeof(uintptr(0)))
	// What one decoded entry costs: its message, its pointer in its parent's slice and, where the decoders
	// append rather than size the slice first, the slice's growth.
	costSeries       = int(unsafe.Sizeof(prompb.TimeSeries{})) + 2*ptrSize
	costLabel        = int(unsafe.Sizeof(labelpb.Label{})) + ptrSize
	costSample       = int(unsafe.Sizeof(prompb.Sample{})) + ptrSize
	costExemplar     = int(unsafe.Sizeof(prompb.Exemplar{})) + 2*ptrSize
	costExemplarLbl  = int(unsafe.Sizeof(labelpb.Label{})) + 16 + 2*ptrSize // allocated one by one
	costHistogram    = int(unsafe.Sizeof(prompb.Histogram{})) + 2*ptrSize
	costSpan         = int(unsafe.Sizeof(prompb.BucketSpan{})) + 2*ptrSize
	costHistElem     = 2 * 8 // a delta, count or custom value, with growth
	costSymbolHeader = int(unsafe.Sizeof("")) + 8
	// 2.0 series go through Prometheus's generated type one at a time: what the largest one costs there.
	costV2RefTransient       = 2 * 4
	costV2SampleTransient    = 2 * int(unsafe.Sizeof(writev2.Sample{}))
	costV2HistogramTransient = 2 * int(unsafe.Sizeof(writev2.Histogram{}))
	costV2ExemplarTransient  = 2 * int(unsafe.Sizeof(writev2.Exemplar{}))
	costV2SpanTransient      = 2 * int(unsafe.Sizeof(writev2.BucketSpan{}))
)

// ErrDecodeTooExpensive marks a body refused because decoding it would take too much memory for its size (400).
var ErrDecodeTooExpensive = errors.New("request decodes into too much memory for its size")

// ErrWrongProtocol marks a body that looks like the other remote write protocol than its Content-Type (400).
var ErrWrongProtocol = errors.New("request body does not look like the protocol of its Content-Type")

// decodeCost counts what decoding a request allocates.
type decodeCost struct {
	series, labels, samples                 int
	exemplars, exemplarLabels               int
	histograms, spans, histElems            int
	stringBytes, symbols                    int
	refs                                    int // 2.0: label references of series and exemplars
	transient                               int // 2.0: the largest series' intermediate
	seriesRefs, seriesSamples, seriesHists  int // 2.0: the current series, for transient
	seriesExemplars, seriesExRefs, seriesSp int
}

// bytes is the estimated memory, in bytes.
func (c *decodeCost) bytes() int {
	return c.series*costSeries + c.labels*costLabel + c.samples*costSample +
		c.exemplars*costExemplar + c.exemplarLabels*costExemplarLbl +
		c.histograms*costHistogram + c.spans*costSpan + c.histElems*costHistElem +
		c.stringBytes + c.symbols*costSymbolHeader + c.transient
}

// endSeriesV2 closes the current 2.0 series: its intermediate in Prometheus's type may be the largest.
func (c *decodeCost) endSeriesV2() {
	t := c.seriesRefs*costV2RefTransient + c.seriesSamples*costV2SampleTransient +
		c.seriesHists*costV2HistogramTransient + c.seriesExemplars*costV2ExemplarTransient +
		c.seriesExRefs*costV2RefTransient + c.seriesSp*costV2SpanTransient
	c.transient = max(c.transient, t)
	c.seriesRefs, c.seriesSamples, c.seriesHists, c.seriesExemplars, c.seriesExRefs, c.seriesSp = 0, 0, 0, 0, 0, 0
}

// admit refuses a body of size bytes (decompressed) whose decoding would cost more than the ratio allows, then
// reserves the cost with reserve (nil: nothing to reserve), which may refuse it too.
func (c *decodeCost) admit(p Version, size int, reserve func(int) error) error {
	ratio := maxDecodeRatioV1
	if p == V2 {
		ratio = maxDecodeRatioV2
	}
	need := c.bytes()
	if need > ratio*size+decodeSlack {
		return errors.Wrapf(ErrDecodeTooExpensive,
			"decode %s request: %d bytes would decode into %d series, %d labels, %d samples, %d histograms and %d exemplars, "+
				"about %d bytes of memory: more than %d bytes per byte of body (empty or near-empty entries, which no real client sends); refused before decoding",
			p, size, c.series, c.labels, c.samples, c.histograms, c.exemplars, need, ratio)
	}
	if reserve != nil {
		return reserve(need)
	}
	return nil
}

// countPacked is the number of varints in a packed repeated field (bytes that end one: no continuation bit).
func countPacked(b []byte) int {
	n := 0
	for _, x := range b {
		if x < 0x80 {
			n++
		}
	}
	return n
}

// countHistogram adds a prometheus.Histogram's (1.0 and 2.0 use the same field numbers) spans and repeated
// values to c. It is lenient: the decoder refuses malformed histograms; counting stops where framing breaks.
// gogo says whether to skip unknown fields as Prometheus's gogo-generated 2.0 code does (else as protowire).
func countHistogram(c *decodeCost, b []byte, gogo bool) {
	for len(b) > 0 {
		num, typ, v, n := nextField(b, gogo)
		if n <= 0 {
			return
		}
		b = b[n:]
		switch num {
		case 8, 11:
			if typ == protowire.BytesType {
				c.spans++
				c.seriesSp++
			}
		case 9, 12:
			switch typ {
			case protowire.VarintType:
				c.histElems++
			case protowire.BytesType:
				c.histElems += countPacked(v)
			}
		case 10, 13, 16:
			switch typ {
			case protowire.Fixed64Type:
				c.histElems++
			case protowire.BytesType:
				c.histElems += len(v) / 8
			}
		}
	}
}

// countExemplarV1 adds a 1.0 exemplar's labels to c (leniently, as countHistogram).
func countExemplarV1(c *decodeCost, b []byte) {
	for len(b) > 0 {
		num, typ, _, n := nextField(b, false)
		if n <= 0 {
			return
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			c.exemplarLabels++
		}
	}
}

// countExemplarV2 adds a 2.0 exemplar's labels (pairs of references) to c (leniently, as countHistogram).
func countExemplarV2(c *decodeCost, b []byte) {
	refs := 0
	for len(b) > 0 {
		num, typ, v, n := nextField(b, true)
		if n <= 0 {
			break
		}
		b = b[n:]
		if num == 1 {
			switch typ {
			case protowire.VarintType:
				refs++
			case protowire.BytesType:
				refs += countPacked(v)
			}
		}
	}
	c.exemplarLabels += (refs + 1) / 2
	c.seriesExRefs += refs
}

// nextField reads the field at the start of b: its number, wire type, value (length-delimited fields only) and
// length in bytes (<= 0 when the framing is broken). gogo: as Prometheus's gogo-generated code reads fields;
// else as proto.Unmarshal (protowire).
func nextField(b []byte, gogo bool) (num int32, typ protowire.Type, val []byte, n int) {
	if gogo {
		num, typ, n = gogoTag(b)
		if n <= 0 {
			return 0, 0, nil, -1
		}
		if typ == protowire.BytesType {
			v, m := gogoBytes(b[n:])
			if m <= 0 {
				return 0, 0, nil, -1
			}
			return num, typ, v, n + m
		}
		m := gogoSkip(b)
		if m <= 0 || m > len(b) {
			return 0, 0, nil, -1
		}
		return num, typ, nil, m
	}
	pnum, ptyp, tn := ConsumeTag(b)
	if tn < 0 {
		return 0, 0, nil, -1
	}
	if ptyp == protowire.BytesType {
		v, m := protowire.ConsumeBytes(b[tn:])
		if m < 0 {
			return 0, 0, nil, -1
		}
		return int32(pnum), ptyp, v, tn + m
	}
	m := protowire.ConsumeFieldValue(pnum, ptyp, b[tn:])
	if m < 0 {
		return 0, 0, nil, -1
	}
	return int32(pnum), ptyp, nil, tn + m
}

// gogoVarint reads a varint as gogo-generated code does: at most 10 bytes (shift < 64), higher bits dropped.
// n <= 0: truncated or too long.
func gogoVarint(b []byte) (v uint64, n int) {
	for shift := uint(0); ; shift += 7 {
		if shift >= 64 || n >= len(b) {
			return 0, -1
		}
		x := b[n]
		n++
		v |= uint64(x&0x7f) << shift
		if x < 0x80 {
			return v, n
		}
	}
}

// gogoTag reads a field tag as Prometheus's gogo-generated Unmarshal methods do: the field number is the low
// 32 bits of tag>>3, must be positive, and wire type 4 (end group) is refused. n <= 0: refused.
func gogoTag(b []byte) (num int32, typ protowire.Type, n int) {
	wire, n := gogoVarint(b)
	if n <= 0 {
		return 0, 0, -1
	}
	num, typ = int32(wire>>3), protowire.Type(wire&7)
	if typ == protowire.EndGroupType || num <= 0 {
		return 0, 0, -1
	}
	return num, typ, n
}

// gogoBytes reads the length-prefixed value at the start of b as gogo-generated code does. n <= 0: refused.
func gogoBytes(b []byte) (v []byte, n int) {
	var length int
	for shift := uint(0); ; shift += 7 {
		if shift >= 64 || n >= len(b) {
			return nil, -1
		}
		x := b[n]
		n++
		length |= int(x&0x7f) << shift
		if x < 0x80 {
			break
		}
	}
	if length < 0 || n+length < 0 || n+length > len(b) {
		return nil, -1
	}
	return b[n : n+length], n + length
}

// gogoSkip returns the length of the field (tag included) at the start of b as the gogo-generated skip function
// of Prometheus's 2.0 types measures it: groups nest by depth without matching field numbers. <= 0: refused.
func gogoSkip(b []byte) int {
	i, depth := 0, 0
	for i < len(b) {
		wire, n := gogoVarint(b[i:])
		if n <= 0 {
			return -1
		}
		i += n
		switch protowire.Type(wire & 7) {
		case protowire.VarintType:
			_, n := gogoVarint(b[i:])
			if n <= 0 {
				return -1
			}
			i += n
		case protowire.Fixed64Type:
			i += 8
		case protowire.BytesType:
			var length int
			for shift := uint(0); ; shift += 7 {
				if shift >= 64 || i >= len(b) {
					return -1
				}
				x := b[i]
				i++
				length |= int(x&0x7f) << shift
				if x < 0x80 {
					break
				}
			}
			if length < 0 {
				return -1
			}
			i += length
		case protowire.StartGroupType:
			depth++
		case protowire.EndGroupType:
			if depth == 0 {
				return -1
			}
			depth--
		case protowire.Fixed32Type:
			i += 4
		default:
			return -1
		}
		if i < 0 {
			return -1
		}
		if depth == 0 {
			if i > len(b) {
				return -1
			}
			return i
		}
	}
	return -1
}

// DecodeCostV1 is the memory decoding a decompressed 1.0 body takes, as DecodeV1 reserves it (Options.Reserve)
// when no label is dropped: its series, labels, samples and strings.
func DecodeCostV1(buf []byte) (int, error) {
	c, err := countWriteV1(buf, 0, nil)
	if err != nil {
		return 0, err
	}
	return (&decodeCost{series: c.series, labels: c.labels, samples: c.samples, stringBytes: len(buf)}).bytes(), nil
}

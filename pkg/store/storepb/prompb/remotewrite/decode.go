package remotewrite

import (
	"bytes"
	"math"
	"unicode/utf8"
	"unsafe"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/common/model"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// Version is the protobuf message of a remote write request, from its Content-Type.
type Version int

const (
	// V1 is remote write 1.0's prometheus.WriteRequest.
	V1 Version = iota + 1
	// V2 is remote write 2.0's io.prometheus.write.v2.Request.
	V2
)

// The media type and "proto" parameter values of remote write (the 1.0 and 2.0 specs, and Prometheus's
// client_golang exp/api/remote, which Prometheus's own receiver uses).
const (
	ContentTypeProtobuf = "application/x-protobuf"
	ProtoMessageV1      = "prometheus.WriteRequest"
	ProtoMessageV2      = "io.prometheus.write.v2.Request"
	ContentTypeV2       = ContentTypeProtobuf + ";proto=" + ProtoMessageV2
)

func (p Version) String() string {
	if p == V2 {
		return "remote write 2.0"
	}
	return "remote write 1.0"
}

// Options are what a caller (the distributor's push handler) tells the decoders, and what they tell it back.
type Options struct {
	// MaxLabels is the tenant's max_label_names_per_series (0: none). When it is set, labels with an empty value
	// are dropped while decoding (the validator would drop them), and of a series with more labels than that
	// only the first MaxLabels+1 are decoded (the rest are checked, not kept): the validator refuses it anyway,
	// and so a series of a million labels costs what one of 31 does.
	MaxLabels int
	// Reserve, when not nil, is told the memory decoding will take before it is allocated; its error is
	// returned as is.
	Reserve func(int) error

	// Slabs, when not nil, are reused for the messages of a 1.0 request instead of allocating them (strings are
	// still copies). The caller must not use anything decoded into them once it decodes another request with
	// the same Slabs. For a caller that drops every message of a request before the next (an ingester appending
	// a forwarded write), it takes the garbage of decoding from ~1 KiB per series to the strings alone.
	Slabs *Slabs
	// MarkInvalidUTF8: a series with a label that is not valid UTF-8 is decoded and listed (InvalidUTF8)
	// instead of failing the request, for a caller that drops such a series alone (an ingester).
	MarkInvalidUTF8 bool
	// AliasBuf: decoded strings refer to buf's own bytes (unsafe.String) instead of copies of it. The caller
	// must keep buf alive and unmodified for as long as anything may read a decoded string, and copy what it
	// keeps beyond that (the TSDB copies the labels of the series it creates). It takes away decoding's largest
	// garbage: a copy of every request.
	AliasBuf bool
	// KeepFrames: Frames returns, for each decoded series, its field of buf as received (tag, length and
	// message), so that a caller forwarding the series unchanged (a distributor) copies it instead of marshalling
	// the series again. A series decoded differently from its bytes (a label with an empty value dropped, labels
	// truncated: see MaxLabels) has no frame. The frames alias buf.
	KeepFrames bool
	// KeepLabelRuns: LabelRuns returns, for each decoded series, the bytes of its labels as received: the run of
	// label fields at the start of its message (tags and lengths included). Equal runs decode to equal labels, so
	// that a caller may recognize a series it has seen by them (an ingester) without building its label set. A
	// series whose labels are not one run at its start, or that was decoded differently from its bytes (a label
	// dropped or not valid UTF-8, labels truncated), has none. The runs alias buf.
	KeepLabelRuns bool
	// ThanosWriteRequest: the body is a Thanos storepb.WriteRequest (the forward RPC), whose series are 1.0's
	// (field 1) but whose field 3 is the replica number, not 1.0's metadata: it is not checked as metadata.
	ThanosWriteRequest bool
	// SkipLabels, when not nil, is asked once per 1.0 request, after the first pass over the body (which checks
	// its framing) and before the series are decoded, which series' labels not to decode: it is given each
	// series' label run (see KeepLabelRuns; nil for a series whose labels are not one run at the start of its
	// message) and returns skip (nil: none), skip[i] for a series the caller knows by its run alone. Such a
	// series is decoded without labels (ts.Labels nil: DecodeLabelRun decodes them if they are needed after
	// all), with its run (LabelRuns) and its frame (Frames); its labels' UTF-8 is not checked. The runs given
	// alias buf, the slice does not outlive the call.
	//
	// A caller may only skip a run it has seen decoded as a run before (KeepLabelRuns), with the same MaxLabels,
	// into labels none of which had an empty value (as validation leaves them unchanged): equal bytes decode to
	// equal labels, so such a series has every label valid UTF-8 and not more than MaxLabels+1 (it would have had
	// no run otherwise), and skipping changes nothing but the work. It is for a caller that needs the labels of the series it does not know only (a
	// distributor that validated the others before, an ingester that has them by reference).
	SkipLabels func(runs [][]byte) (skip []bool)

	// frames are the series' frames (output, with KeepFrames), in the order of the series returned.
	frames [][]byte
	// labelRuns are the series' label runs (output, with KeepLabelRuns), in the order of the series returned.
	labelRuns [][]byte
	// truncated lists the series decoded with only some of their labels (output).
	truncated []truncatedSeries
	// invalidUTF8 lists the series with a label that is not valid UTF-8 (output, with MarkInvalidUTF8).
	invalidUTF8 []*prompb.TimeSeries
	// runs are the label runs of the first pass, for SkipLabels; runLabels how many labels each holds.
	runs      [][]byte
	runLabels []int32
}

// Frames returns the frames of the series decoded with KeepFrames: Frames()[i] is the i-th series' field of
// the body, or nil when the series was decoded differently from its bytes. It aliases the body, and with Slabs
// their memory.
func (o *Options) Frames() [][]byte { return o.frames }

// LabelRuns returns the label runs of the series decoded with KeepLabelRuns: LabelRuns()[i] is the i-th series'
// labels as received, or nil (see KeepLabelRuns). It aliases the body, and with Slabs their memory.
func (o *Options) LabelRuns() [][]byte { return o.labelRuns }

// InvalidUTF8 returns the series decoded with MarkInvalidUTF8 that have a label (name or value) that is not
// valid UTF-8.
func (o *Options) InvalidUTF8() []*prompb.TimeSeries { return o.invalidUTF8 }

// Slabs are reusable memory for DecodeV1's messages (Options.Slabs). The zero value is ready to use; it is not
// safe for concurrent use (pool it).
//
// Their elements are not cleared between requests: DecodeV1 writes every field of an element it hands out that
// it ever sets (a label's name and value, a sample's value and timestamp, a series whole; nothing else writes
// them: no other field is ever set), and clears those of the last request it does not use. Clearing all of them after every request cost the distributor ~8% of its
// CPU and an ingester ~6% (megabytes of pointer-holding messages per request, with the collector's write
// barriers). So a Reset Slabs keeps the last request it decoded alive (its strings alias that request's body)
// until it decodes another or is dropped — at most maxPinnedBody bytes: Reset clears the elements of a larger
// request at once.
type Slabs struct {
	series     []prompb.TimeSeries
	seriesPtrs []*prompb.TimeSeries
	labels     []labelpb.Label
	labelPtrs  []*labelpb.Label
	samples    []prompb.Sample
	samplePtrs []*prompb.Sample
	frames     [][]byte
	labelRuns  [][]byte
	passRuns   [][]byte // the label runs of the first pass (SkipLabels)
	passLabels []int32  // and how many labels each holds
	// body is the size of the request the elements in use (each slab's length) refer to.
	body int
}

// maxPinnedBody is the largest request a Reset Slabs keeps alive (see Slabs): a typical request (2,000 series,
// Prometheus's max_samples_per_send) is well under it.
const maxPinnedBody = 2 << 20

// Size is the bytes the slabs hold, for a pool that drops large ones.
func (s *Slabs) Size() int {
	const ptr = 8
	return cap(s.series)*int(unsafe.Sizeof(prompb.TimeSeries{})) + cap(s.labels)*int(unsafe.Sizeof(labelpb.Label{})) +
		cap(s.samples)*int(unsafe.Sizeof(prompb.Sample{})) + (cap(s.seriesPtrs)+cap(s.labelPtrs)+cap(s.samplePtrs))*ptr +
		(cap(s.frames)+cap(s.labelRuns)+cap(s.passRuns))*int(unsafe.Sizeof([]byte(nil))) + cap(s.passLabels)*4
}

// Reset ends the use of the slabs by the request they decoded last. Its elements are cleared only if its body
// was larger than maxPinnedBody (see Slabs); the frames and label runs always are (a few words per series).
func (s *Slabs) Reset() {
	if s.body > maxPinnedBody {
		s.series, s.seriesPtrs = slab(s.series, 0), slab(s.seriesPtrs, 0)
		s.labels, s.labelPtrs = slab(s.labels, 0), slab(s.labelPtrs, 0)
		s.samples, s.samplePtrs = slab(s.samples, 0), slab(s.samplePtrs, 0)
	}
	s.body = 0
	clear(s.frames)
	s.frames = s.frames[:0]
	clear(s.labelRuns)
	s.labelRuns = s.labelRuns[:0]
}

// take returns the slabs for a request of body bytes. The elements it hands out are not zeroed: the decoder
// writes each whole.
func (s *Slabs) take(series, labels, samples, body int) {
	s.body = body
	s.series, s.seriesPtrs = slab(s.series, series), slab(s.seriesPtrs, series)
	s.labels, s.labelPtrs = slab(s.labels, labels), slab(s.labelPtrs, labels)
	s.samples, s.samplePtrs = slab(s.samples, samples), slab(s.samplePtrs, samples)
}

// slab returns buf resliced to n elements, reallocated when too small. Elements beyond n are zero: those the
// last request used beyond n are cleared (every element from len(buf) to cap(buf) is zero already), so that the
// slab refers to nothing but what the next request will overwrite.
func slab[T any](buf []T, n int) []T {
	if cap(buf) < n {
		return make([]T, n, n+n/4)
	}
	if n < len(buf) {
		clear(buf[n:])
	}
	return buf[:n]
}

// truncatedSeries is a series of which only the first MaxLabels+1 labels were decoded.
type truncatedSeries struct {
	ts     *prompb.TimeSeries
	labels int // labels it has, empty values excluded
}

// LabelsOf returns how many labels ts had if it was truncated.
func (o *Options) LabelsOf(ts *prompb.TimeSeries) (int, bool) {
	for _, t := range o.truncated {
		if t.ts == ts {
			return t.labels, true
		}
	}
	return 0, false
}

func (o *Options) maxKept() int {
	if o == nil || o.MaxLabels <= 0 {
		return 0
	}
	return o.MaxLabels + 1
}

func (o *Options) slabs() *Slabs {
	if o == nil {
		return nil
	}
	return o.Slabs
}

func (o *Options) reserveFunc() func(int) error {
	if o == nil {
		return nil
	}
	return o.Reserve
}

// Decode decodes a decompressed remote write body of message p into Thanos's prometheus_copy series.
//
// Memory: the result shares nothing with buf (which may be reused at once), unless o.AliasBuf. Its messages are carved out of a
// few large per-request allocations, and strings are substrings of copies of 4 KiB windows of buf (v1) or the
// request's symbols (v2), so a kept string holds on to little, a kept message to a whole slab.
//
// Before allocating anything it counts what buf holds and refuses (ErrDecodeTooExpensive) a body whose
// decoding would take more memory than its size justifies (see maxDecodeRatioV1), and a body that looks like
// the other protocol (ErrWrongProtocol); then it passes the estimated memory to o.Reserve (nil: none), whose
// error it returns as is. o may be nil.
func Decode(p Version, buf []byte, o *Options) ([]*prompb.TimeSeries, error) {
	if p == V2 {
		return DecodeV2(buf, o)
	}
	return DecodeV1(buf, o)
}

// errCodeFieldNumber is protowire's error code for an invalid field number (protowire.ParseError reads it).
const errCodeFieldNumber = -2

// ConsumeTag is protowire.ConsumeTag refusing field numbers above protowire.MaxValidNumber, as proto.Unmarshal
// does (ConsumeTag alone accepts anything up to MaxInt32).
func ConsumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, errCodeFieldNumber
	}
	return num, typ, n
}

// WireError turns a protowire error code into an error naming what was being decoded.
func WireError(n int, what string) error {
	return errors.Wrapf(protowire.ParseError(n), "decode %s", what)
}

// DecodeV1 decodes a prometheus.WriteRequest (remote write 1.0; the same wire format as Thanos's
// prometheus_copy.WriteRequest).
//
// It accepts exactly the bodies proto.Unmarshal into prompb.WriteRequest accepts and returns the same series
// (TestDecodeV1MatchesProtoUnmarshal and FuzzDecodeV1 hold it to that), minus unknown fields and metadata: metadata
// is checked here and decoded by the metadata receiver (pkg/receive/metadata.go), which bounds it on its own. It is hand-written because
// proto.Unmarshal allocates three times per label (message, name, value), several µs per sample on a typical
// request; here a first pass counts the series, labels and samples, and the second fills a handful of slabs.
func DecodeV1(buf []byte, o *Options) ([]*prompb.TimeSeries, error) {
	var runs *labelRuns
	if o != nil && o.SkipLabels != nil {
		if o.Slabs != nil {
			o.runs, o.runLabels = o.Slabs.passRuns, o.Slabs.passLabels
		}
		runs = &labelRuns{runs: o.runs[:0], labels: o.runLabels[:0]}
		defer func() {
			clear(runs.runs)
			o.runs, o.runLabels = runs.runs[:0], runs.labels[:0]
			if o.Slabs != nil {
				o.Slabs.passRuns, o.Slabs.passLabels = o.runs, o.runLabels
			}
		}()
	}
	c, err := countWriteV1(buf, o.maxKept(), runs)
	if err != nil {
		return nil, err
	}
	if c.series == 0 && c.v2Fields {
		return nil, errors.Wrapf(ErrWrongProtocol, "decode remote write 1.0 request: the body has no 1.0 timeseries (field 1) but "+
			"has remote write 2.0's symbols or timeseries (fields 4, 5): it looks like a 2.0 request sent with Content-Type %s; "+
			"2.0 requests need Content-Type %s", ContentTypeProtobuf, ContentTypeV2)
	}
	cost := decodeCost{series: c.series, labels: c.labels, samples: c.samples, exemplars: c.exemplars,
		exemplarLabels: c.exemplarLabels, histograms: c.histograms, spans: c.spans, histElems: c.histElems,
		stringBytes: len(buf)}
	if err := cost.admit(V1, len(buf), o.reserveFunc()); err != nil {
		return nil, err
	}
	var skip []bool
	if runs != nil {
		if skip = o.SkipLabels(runs.runs); len(skip) != len(runs.runs) {
			skip = nil
		}
		// The slabs hold the labels decoded, no more: an element beyond them would keep an older request alive.
		for k, sk := range skip {
			if sk {
				if runs.runs[k] == nil {
					skip[k] = false // nothing to know it by
					continue
				}
				n := int(runs.labels[k])
				if mk := o.maxKept(); mk > 0 {
					n = min(n, mk)
				}
				c.labels -= n
			}
		}
	}
	d := v1Decoder{maxKept: o.maxKept(), markUTF8: o != nil && o.MarkInvalidUTF8}
	var (
		series []prompb.TimeSeries
		out    []*prompb.TimeSeries
	)
	keepFrames := o != nil && o.KeepFrames
	keepRuns := o != nil && (o.KeepLabelRuns || o.SkipLabels != nil)
	if sl := o.slabs(); sl != nil {
		sl.take(c.series, c.labels, c.samples, len(buf))
		d.labels, d.labelPtrs = sl.labels, sl.labelPtrs
		d.samples, d.samplePtrs = sl.samples, sl.samplePtrs
		series, out = sl.series, sl.seriesPtrs[:0]
		if keepFrames {
			o.frames = sl.frames[:0]
			defer func() { sl.frames = o.frames }()
		}
		if keepRuns {
			o.labelRuns = sl.labelRuns[:0]
			defer func() { sl.labelRuns = o.labelRuns }()
		}
	} else {
		d.labels, d.labelPtrs = make([]labelpb.Label, c.labels), make([]*labelpb.Label, c.labels)
		d.samples, d.samplePtrs = make([]prompb.Sample, c.samples), make([]*prompb.Sample, c.samples)
		series, out = make([]prompb.TimeSeries, c.series), make([]*prompb.TimeSeries, 0, c.series)
	}
	// Strings are substrings of string copies of windows of buf: one copy per window of consecutive series of
	// at least stringWindow bytes, never less than one whole series. A kept string so holds on to at most its
	// series or the window, never the request; and there are tens of allocations per request, not one per
	// series.
	const stringWindow = 4 << 10
	var (
		win      string
		winStart int // offset in buf of win
	)
	if o != nil && o.AliasBuf {
		win = unsafe.String(unsafe.SliceData(buf), len(buf)) // one window: the whole of buf, not copied
	}
	for b := buf; len(b) > 0; {
		frameStart := len(buf) - len(b)
		num, typ, n := ConsumeTag(b)
		if n < 0 {
			return nil, WireError(n, "remote write 1.0 request")
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, WireError(n, "remote write 1.0 request")
			}
			start := len(buf) - len(b) + n - len(v) // offset of v in buf
			b = b[n:]
			if len(out) == len(series) {
				return nil, errors.New("decode remote write 1.0 request: series count changed between passes")
			}
			if end := start + len(v); end > winStart+len(win) {
				winStart = start
				win = string(buf[start:max(end, min(len(buf), start+stringWindow))])
			}
			ts := &series[len(out)]
			*ts = prompb.TimeSeries{} // slabs are handed out as the last request left them
			d.badUTF8, d.dropped, d.labelsEnd, d.labelsScattered = false, false, 0, false
			str := win[start-winStart : start-winStart+len(v)]
			if k := len(out); k < len(skip) && skip[k] {
				// Known by its run: the rest of the series, which holds no label (or it would have no run).
				run := runs.runs[k]
				if _, _, err := d.decodeSeries(v[len(run):], str[len(run):], ts, d.nextLabel, d.nextSample, false); err != nil {
					return nil, errors.Wrapf(err, "decode remote write 1.0 request: timeseries %d", k)
				}
				if keepFrames {
					o.frames = append(o.frames, buf[frameStart:start+len(v):start+len(v)])
				}
				if keepRuns {
					o.labelRuns = append(o.labelRuns, run)
				}
				out = append(out, ts)
				continue
			}
			n, err := d.series(v, str, ts)
			if err != nil {
				return nil, errors.Wrapf(err, "decode remote write 1.0 request: timeseries %d", len(out))
			}
			if d.badUTF8 {
				o.invalidUTF8 = append(o.invalidUTF8, ts)
			}
			if d.maxKept > 0 && n > len(ts.Labels) {
				o.truncated = append(o.truncated, truncatedSeries{ts: ts, labels: n})
			}
			if keepFrames {
				var frame []byte
				if !d.dropped && len(ts.Labels) == n {
					frame = buf[frameStart : start+len(v) : start+len(v)]
				}
				o.frames = append(o.frames, frame)
			}
			if keepRuns {
				var run []byte
				if !d.dropped && !d.badUTF8 && !d.labelsScattered && len(ts.Labels) == n {
					run = v[:d.labelsEnd:d.labelsEnd]
				}
				o.labelRuns = append(o.labelRuns, run)
			}
			out = append(out, ts)
		case num == 3 && typ == protowire.BytesType && (o == nil || !o.ThanosWriteRequest):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, WireError(n, "remote write 1.0 request")
			}
			b = b[n:]
			if err := checkMetadataV1(v); err != nil {
				return nil, errors.Wrap(err, "decode remote write 1.0 request: metadata")
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, WireError(n, "remote write 1.0 request")
			}
			b = b[n:]
		}
	}
	return out, nil
}

// labelRuns are the label runs the first pass finds (Options.SkipLabels), and how many labels each holds.
type labelRuns struct {
	runs   [][]byte
	labels []int32
}

// v1Counts are what the first pass over a WriteRequest finds.
type v1Counts struct {
	series, labels, samples   int
	exemplars, exemplarLabels int
	histograms, spans         int
	histElems                 int
	v2Fields                  bool // a length-delimited field 4 or 5: 2.0's symbols or timeseries
}

// countWriteV1 counts series, and labels, samples, exemplars (and their labels) and histograms (and their
// spans and values) in series, and checks the framing of every field on the way. It counts exactly the fields
// the second pass decodes: field 1 of the request and fields 1 to 4 of a series, each length-delimited (any
// other wire type makes a field unknown, as in proto.Unmarshal).
//
// maxKept > 0: a series counts for at most maxKept labels (Options.MaxLabels). runs, when not nil, gets each
// series' label run: the label fields (field 1, length-delimited) its message starts with, nil when a label field
// follows another field or the series has no label (the run the second pass finds: v1Decoder.labelsEnd).
func countWriteV1(b []byte, maxKept int, runs *labelRuns) (v1Counts, error) {
	var c v1Counts
	var cost decodeCost // for the exemplars' and histograms' contents
	for len(b) > 0 {
		num, typ, n := ConsumeTag(b)
		if n < 0 {
			return c, WireError(n, "remote write 1.0 request")
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			if (num == 4 || num == 5) && typ == protowire.BytesType {
				c.v2Fields = true
			}
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return c, WireError(n, "remote write 1.0 request")
			}
			b = b[n:]
			continue
		}
		ts, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return c, WireError(n, "remote write 1.0 request")
		}
		b = b[n:]
		c.series++
		labelsBefore := c.labels
		// The label run: the series' message up to runEnd, while inRun (no other field yet); scattered, a label
		// after another field.
		whole, runEnd, inRun, scattered := ts, 0, true, false
		for len(ts) > 0 {
			// Fast path: a label (field 1) or sample (field 2) with a one-byte length.
			if len(ts) >= 2 && (ts[0] == 0x0a || ts[0] == 0x12) && ts[1] < 0x80 && len(ts) >= 2+int(ts[1]) {
				label := ts[0] == 0x0a
				ts = ts[2+int(ts[1]):]
				if label {
					c.labels++
					if inRun {
						runEnd = len(whole) - len(ts)
					} else {
						scattered = true
					}
				} else {
					c.samples++
					inRun = false
				}
				continue
			}
			num, typ, n := ConsumeTag(ts)
			if n < 0 {
				return c, WireError(n, "remote write 1.0 timeseries")
			}
			ts = ts[n:]
			if typ != protowire.BytesType {
				n = protowire.ConsumeFieldValue(num, typ, ts)
				if n < 0 {
					return c, WireError(n, "remote write 1.0 timeseries")
				}
				ts = ts[n:]
				inRun = false
				continue
			}
			v, n := protowire.ConsumeBytes(ts)
			if n < 0 {
				return c, WireError(n, "remote write 1.0 timeseries")
			}
			ts = ts[n:]
			if num != 1 {
				inRun = false
			} else if inRun {
				runEnd = len(whole) - len(ts)
			} else {
				scattered = true
			}
			{
				switch num {
				case 1:
					c.labels++
				case 2:
					c.samples++
				case 3:
					c.exemplars++
					countExemplarV1(&cost, v)
				case 4:
					c.histograms++
					countHistogram(&cost, v, false)
				}
			}
		}
		allLabels := c.labels - labelsBefore
		if maxKept > 0 && c.labels-labelsBefore > maxKept {
			c.labels = labelsBefore + maxKept
		}
		if runs != nil {
			var run []byte
			if !scattered && runEnd > 0 {
				run = whole[:runEnd:runEnd] // every label of the series, allLabels of them
			}
			runs.runs = append(runs.runs, run)
			runs.labels = append(runs.labels, int32(min(allLabels, math.MaxInt32)))
		}
	}
	c.exemplarLabels, c.spans, c.histElems = cost.exemplarLabels, cost.spans, cost.histElems
	return c, nil
}

// v1Decoder hands out labels and samples from the slabs sized by countWriteV1.
type v1Decoder struct {
	maxKept  int  // Options.MaxLabels+1, 0: keep all
	markUTF8 bool // Options.MarkInvalidUTF8
	badUTF8  bool // the series being decoded has a label that is not valid UTF-8 (markUTF8)
	dropped  bool // the series being decoded had a label dropped (an empty value)
	// labelsEnd is the end of the run of label fields at the start of the series being decoded;
	// labelsScattered: a label follows another field.
	labelsEnd       int
	labelsScattered bool
	labels          []labelpb.Label
	labelPtrs       []*labelpb.Label
	nextLabel       int
	samples         []prompb.Sample
	samplePtrs      []*prompb.Sample
	nextSample      int
}

// series decodes one prometheus.TimeSeries from b into ts; str holds the same bytes as b, as a string, so that
// the series' strings are substrings of it. It returns how many labels the series has (with maxKept, those
// with a value), which is more than len(ts.Labels) when it kept only maxKept.
func (d *v1Decoder) series(b []byte, str string, ts *prompb.TimeSeries) (int, error) {
	firstLabel, firstSample := d.nextLabel, d.nextSample
	// The labels every encoder writes come first, each in decodeLabel's fast layout. Their UTF-8 is not checked
	// label by label but once over their whole run (the run's framing bytes are ASCII, so it is valid exactly
	// when each name and value in it is). When it is not valid, the series is decoded again with every label
	// checking its own, to say which (or mark the series), exactly as if the run had not been trusted.
	n, runEnd, err := d.decodeSeries(b, str, ts, firstLabel, firstSample, true)
	if runEnd == 0 || utf8.Valid(b[:runEnd]) {
		return n, err
	}
	d.nextLabel, d.nextSample = firstLabel, firstSample
	d.badUTF8, d.dropped, d.labelsEnd, d.labelsScattered = false, false, 0, false
	ts.Labels, ts.Samples, ts.Exemplars, ts.Histograms = nil, nil, nil, nil
	n, _, err = d.decodeSeries(b, str, ts, firstLabel, firstSample, false)
	return n, err
}

// decodeSeries is series' pass: with deferUTF8, the UTF-8 of the labels in fast layout at the start of b (up
// to runEnd) is not checked, and the caller must check b[:runEnd].
func (d *v1Decoder) decodeSeries(b []byte, str string, ts *prompb.TimeSeries, firstLabel, firstSample int, deferUTF8 bool) (nLabels, runEnd int, err error) {
	// label decodes one label into the next slot, or (beyond maxKept) only checks it. inRun: it follows the run
	// of fast-layout labels at the start of b, so that its UTF-8 is left to series if it is in that layout too
	// (reported as fast).
	label := func(b []byte, s string, inRun bool) (fast bool, err error) {
		if d.maxKept > 0 && d.nextLabel-firstLabel == d.maxKept {
			var l labelpb.Label
			valid, fast, err := decodeLabel(b, s, &l, d.markUTF8, inRun)
			if err != nil {
				return false, errors.Wrapf(err, "label %d", nLabels)
			}
			d.badUTF8 = d.badUTF8 || !valid
			if l.Value != "" {
				nLabels++
				if l.Name == model.MetricNameLabel {
					// Keep the metric name, so that the series is refused for its labels, not for having none.
					last := d.labelPtrs[d.nextLabel-1]
					last.Name, last.Value = l.Name, l.Value
				}
			}
			return fast, nil
		}
		if d.nextLabel == len(d.labels) {
			return false, errors.New("label count changed between passes")
		}
		l := &d.labels[d.nextLabel]
		l.Name, l.Value = "", "" // what decodeLabel sets, when present
		valid, fast, err := decodeLabel(b, s, l, d.markUTF8, inRun)
		if err != nil {
			return false, errors.Wrapf(err, "label %d", nLabels)
		}
		d.badUTF8 = d.badUTF8 || !valid
		if d.maxKept > 0 && l.Value == "" {
			*l = labelpb.Label{} // dropped: the slot is reused
			d.dropped = true
			return fast, nil
		}
		d.labelPtrs[d.nextLabel] = l
		d.nextLabel++
		nLabels++
		return fast, nil
	}
	// endLabel records that a label field ends at end: the run of labels at the start goes on, or a label
	// follows another field.
	endLabel := func(at, end int) {
		if at == d.labelsEnd {
			d.labelsEnd = end
		} else {
			d.labelsScattered = true
		}
	}
	for i := 0; i < len(b); {
		// Fast path: a label with a one-byte length, the bulk of a request.
		if b[i] == 0x0a && i+1 < len(b) && b[i+1] < 0x80 && i+2+int(b[i+1]) <= len(b) {
			start, end := i+2, i+2+int(b[i+1])
			inRun := deferUTF8 && i == runEnd // every field before it is a label of the run
			// The bulk of the bulk, inline: a label of the run, in the fast layout, with a value, kept.
			// (With maxKept: below it, and not to be dropped for an empty value.)
			if n1, ok := fastLabelLayout(b[start:end]); ok && inRun && d.nextLabel < len(d.labels) &&
				(d.maxKept == 0 || (d.nextLabel-firstLabel < d.maxKept && b[start+n1+3] > 0)) {
				l := &d.labels[d.nextLabel]
				l.Name, l.Value = str[start+2:start+2+n1], str[start+n1+4:end]
				d.labelPtrs[d.nextLabel] = l
				d.nextLabel++
				nLabels++
				runEnd, i, d.labelsEnd = end, end, end // i == runEnd == labelsEnd: the fields before were labels
				continue
			}
			fast, err := label(b[start:end], str[start:end], inRun)
			if inRun && fast {
				runEnd = end
			}
			if err != nil {
				return 0, runEnd, err
			}
			endLabel(i, end)
			i = end
			continue
		}
		at := i
		num, typ, n := ConsumeTag(b[i:])
		if n < 0 {
			return 0, runEnd, WireError(n, "timeseries")
		}
		i += n
		if typ != protowire.BytesType || num < 1 || num > 4 {
			n := protowire.ConsumeFieldValue(num, typ, b[i:])
			if n < 0 {
				return 0, runEnd, WireError(n, "timeseries")
			}
			i += n
			continue
		}
		v, n := protowire.ConsumeBytes(b[i:])
		if n < 0 {
			return 0, runEnd, WireError(n, "timeseries")
		}
		start := i + n - len(v) // offset of v in b
		i += n
		switch num {
		case 1:
			if _, err := label(v, str[start:start+len(v)], false); err != nil {
				return 0, runEnd, err
			}
			endLabel(at, i)
		case 2:
			if d.nextSample == len(d.samples) {
				return 0, runEnd, errors.New("sample count changed between passes")
			}
			s := &d.samples[d.nextSample]
			s.Value, s.Timestamp = 0, 0 // what decodeSample sets, when present
			if err := decodeSample(v, s); err != nil {
				return 0, runEnd, errors.Wrapf(err, "sample %d", d.nextSample-firstSample)
			}
			d.samplePtrs[d.nextSample] = s
			d.nextSample++
		case 3:
			e, err := decodeExemplar(v, str[start:start+len(v)])
			if err != nil {
				return 0, runEnd, errors.Wrapf(err, "exemplar %d", len(ts.Exemplars))
			}
			ts.Exemplars = append(ts.Exemplars, e)
		case 4:
			h, err := decodeHistogram(v)
			if err != nil {
				return 0, runEnd, errors.Wrapf(err, "histogram %d", len(ts.Histograms))
			}
			ts.Histograms = append(ts.Histograms, h)
		}
	}
	// Full slice expressions: appending to one series must never overwrite the next one's entries.
	if d.nextLabel > firstLabel {
		ts.Labels = d.labelPtrs[firstLabel:d.nextLabel:d.nextLabel]
	}
	if d.nextSample > firstSample {
		ts.Samples = d.samplePtrs[firstSample:d.nextSample:d.nextSample]
	}
	return nLabels, runEnd, nil
}

// decodeLabel decodes a thanos.Label from b; s holds the same bytes as b, as a string, so that name and value
// are substrings of it. proto3 strings must be valid UTF-8 (proto.Unmarshal refuses them otherwise).
//
// With markInvalid a string that is not valid UTF-8 is kept, and reported as valid false, instead of an error.
// deferUTF8: a label in the fast layout (reported as fast) is not checked, the caller checks it; a label in
// another layout checks its strings anyway.
func decodeLabel(b []byte, s string, l *labelpb.Label, markInvalid, deferUTF8 bool) (valid, fast bool, err error) {
	// Fast path: the layout every encoder writes for short strings, name (field 1) then value (field 2), each
	// with a one-byte length. Its framing bytes are ASCII, so the whole message is valid UTF-8 exactly when both
	// strings are: one check instead of two, or none with deferUTF8.
	if n1, ok := fastLabelLayout(b); ok && (deferUTF8 || utf8.Valid(b)) {
		l.Name, l.Value = s[2:2+n1], s[n1+4:]
		return true, true, nil
	}
	valid = true
	for i := 0; i < len(b); {
		num, typ, n := ConsumeTag(b[i:])
		if n < 0 {
			return false, false, WireError(n, "label")
		}
		i += n
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b[i:])
			if n < 0 {
				return false, false, WireError(n, "label")
			}
			start := i + n - len(v)
			i += n
			str := s[start : start+len(v)]
			if !utf8.ValidString(str) {
				if !markInvalid {
					return false, false, errors.Newf("label %s is not valid UTF-8", labelFieldName(num))
				}
				valid = false
			}
			if num == 1 {
				l.Name = str
			} else {
				l.Value = str
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b[i:])
		if n < 0 {
			return false, false, WireError(n, "label")
		}
		i += n
	}
	return valid, false, nil
}

// fastLabelLayout reports whether b, a label message, is name (field 1) then value (field 2), each with a
// one-byte length, and the name's length: the layout every encoder writes for short strings, whose framing bytes
// are all ASCII.
func fastLabelLayout(b []byte) (nameLen int, ok bool) {
	if len(b) < 4 || b[0] != 0x0a || b[1] >= 0x80 {
		return 0, false
	}
	n1 := int(b[1])
	return n1, len(b) > n1+3 && b[n1+2] == 0x12 && b[n1+3] < 0x80 && len(b) == n1+4+int(b[n1+3])
}

func labelFieldName(num protowire.Number) string {
	if num == 1 {
		return "name"
	}
	return "value"
}

// decodeSample decodes a prometheus.Sample.
func decodeSample(b []byte, s *prompb.Sample) error {
	for len(b) > 0 {
		num, typ, n := ConsumeTag(b)
		if n < 0 {
			return WireError(n, "sample")
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			var v uint64
			v, n = protowire.ConsumeFixed64(b)
			s.Value = math.Float64frombits(v)
		case num == 2 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			s.Timestamp = int64(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return WireError(n, "sample")
		}
		b = b[n:]
	}
	return nil
}

// decodeExemplar decodes a prometheus.Exemplar; s holds the same bytes as b, as a string.
func decodeExemplar(b []byte, s string) (*prompb.Exemplar, error) {
	e := &prompb.Exemplar{}
	for i := 0; i < len(b); {
		num, typ, n := ConsumeTag(b[i:])
		if n < 0 {
			return nil, WireError(n, "exemplar")
		}
		i += n
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b[i:])
			if m < 0 {
				return nil, WireError(m, "exemplar")
			}
			start := i + m - len(v)
			l := &labelpb.Label{}
			if _, _, err := decodeLabel(v, s[start:start+len(v)], l, false, false); err != nil {
				return nil, errors.Wrapf(err, "label %d", len(e.Labels))
			}
			e.Labels = append(e.Labels, l)
			n = m
		case num == 2 && typ == protowire.Fixed64Type:
			var v uint64
			v, n = protowire.ConsumeFixed64(b[i:])
			e.Value = math.Float64frombits(v)
		case num == 3 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b[i:])
			e.Timestamp = int64(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b[i:])
		}
		if n < 0 {
			return nil, WireError(n, "exemplar")
		}
		i += n
	}
	return e, nil
}

// decodeHistogram decodes a prometheus.Histogram (integer or float, exponential or custom buckets).
func decodeHistogram(b []byte) (*prompb.Histogram, error) {
	h := &prompb.Histogram{}
	for len(b) > 0 {
		num, typ, n := ConsumeTag(b)
		if n < 0 {
			return nil, WireError(n, "histogram")
		}
		b = b[n:]
		var v uint64
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
			h.Count = &prompb.Histogram_CountInt{CountInt: v}
		case num == 2 && typ == protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
			h.Count = &prompb.Histogram_CountFloat{CountFloat: math.Float64frombits(v)}
		case num == 3 && typ == protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
			h.Sum = math.Float64frombits(v)
		case num == 4 && typ == protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
			h.Schema = decodeSint32(v)
		case num == 5 && typ == protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
			h.ZeroThreshold = math.Float64frombits(v)
		case num == 6 && typ == protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
			h.ZeroCount = &prompb.Histogram_ZeroCountInt{ZeroCountInt: v}
		case num == 7 && typ == protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
			h.ZeroCount = &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: math.Float64frombits(v)}
		case (num == 8 || num == 11) && typ == protowire.BytesType:
			var span *prompb.BucketSpan
			span, n = decodeBucketSpan(b)
			if num == 8 {
				h.NegativeSpans = append(h.NegativeSpans, span)
			} else {
				h.PositiveSpans = append(h.PositiveSpans, span)
			}
		case num == 9:
			h.NegativeDeltas, n = appendSint64s(h.NegativeDeltas, num, typ, b)
		case num == 12:
			h.PositiveDeltas, n = appendSint64s(h.PositiveDeltas, num, typ, b)
		case num == 10:
			h.NegativeCounts, n = appendDoubles(h.NegativeCounts, num, typ, b)
		case num == 13:
			h.PositiveCounts, n = appendDoubles(h.PositiveCounts, num, typ, b)
		case num == 16:
			h.CustomValues, n = appendDoubles(h.CustomValues, num, typ, b)
		case num == 14 && typ == protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
			h.ResetHint = prompb.Histogram_ResetHint(int32(v))
		case num == 15 && typ == protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
			h.Timestamp = int64(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, WireError(n, "histogram")
		}
		b = b[n:]
	}
	return h, nil
}

// decodeSint32 decodes a zigzag-encoded sint32 as proto.Unmarshal does (the low 32 bits of the varint).
func decodeSint32(v uint64) int32 {
	return int32(protowire.DecodeZigZag(v & math.MaxUint32))
}

// decodeBucketSpan decodes a length-delimited prometheus.BucketSpan at the start of b and returns it with the
// bytes consumed (negative: a protowire error code).
func decodeBucketSpan(b []byte) (*prompb.BucketSpan, int) {
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return nil, n
	}
	s := &prompb.BucketSpan{}
	for len(v) > 0 {
		num, typ, m := ConsumeTag(v)
		if m < 0 {
			return nil, m
		}
		v = v[m:]
		var x uint64
		switch {
		case num == 1 && typ == protowire.VarintType:
			x, m = protowire.ConsumeVarint(v)
			s.Offset = decodeSint32(x)
		case num == 2 && typ == protowire.VarintType:
			x, m = protowire.ConsumeVarint(v)
			s.Length = uint32(x)
		default:
			m = protowire.ConsumeFieldValue(num, typ, v)
		}
		if m < 0 {
			return nil, m
		}
		v = v[m:]
	}
	return s, n
}

// appendSint64s decodes a repeated sint64 field, packed or not, and returns the bytes consumed (negative: a
// protowire error code). Any other wire type is an unknown field, skipped.
func appendSint64s(dst []int64, num protowire.Number, typ protowire.Type, b []byte) ([]int64, int) {
	switch typ {
	case protowire.VarintType:
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return dst, n
		}
		return append(dst, protowire.DecodeZigZag(v)), n
	case protowire.BytesType:
		p, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return dst, n
		}
		for len(p) > 0 {
			v, m := protowire.ConsumeVarint(p)
			if m < 0 {
				return dst, m
			}
			dst = append(dst, protowire.DecodeZigZag(v))
			p = p[m:]
		}
		return dst, n
	}
	return dst, protowire.ConsumeFieldValue(num, typ, b)
}

// appendDoubles decodes a repeated double field, packed or not, as appendSint64s.
func appendDoubles(dst []float64, num protowire.Number, typ protowire.Type, b []byte) ([]float64, int) {
	switch typ {
	case protowire.Fixed64Type:
		v, n := protowire.ConsumeFixed64(b)
		if n < 0 {
			return dst, n
		}
		return append(dst, math.Float64frombits(v)), n
	case protowire.BytesType:
		p, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return dst, n
		}
		if dst == nil {
			dst = make([]float64, 0, len(p)/8)
		}
		for len(p) > 0 {
			v, m := protowire.ConsumeFixed64(p)
			if m < 0 {
				return dst, m
			}
			dst = append(dst, math.Float64frombits(v))
			p = p[m:]
		}
		return dst, n
	}
	return dst, protowire.ConsumeFieldValue(num, typ, b)
}

// checkMetadataV1 checks a prometheus.MetricMetadata as proto.Unmarshal would (framing, UTF-8 strings); the
// metadata itself is decoded by the metadata receiver (pkg/receive/metadata.go).
func checkMetadataV1(b []byte) error {
	for len(b) > 0 {
		num, typ, n := ConsumeTag(b)
		if n < 0 {
			return WireError(n, "metadata")
		}
		b = b[n:]
		if (num == 2 || num == 4 || num == 5) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return WireError(n, "metadata")
			}
			if !utf8.Valid(v) {
				return errors.Newf("metadata field %d is not valid UTF-8", num)
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return WireError(n, "metadata")
		}
		b = b[n:]
	}
	return nil
}

// DecodeV2 decodes an io.prometheus.write.v2.Request (remote write 2.0) and resolves its symbols into
// prometheus_copy series: labels, float samples, native histograms (integer and float) and exemplars.
//
// It reads the request as Prometheus's generated code (writev2.Request.Unmarshal) does and accepts the same
// bodies (FuzzDecodeV2 holds it to that), but in three passes that allocate only what the body justifies:
// the first counts symbols, series and their entries without allocating, and the request is refused when
// decoding it would cost more than maxDecodeRatioV2 (a 2-byte empty series is a 136-byte message); the second
// copies the symbols; the third decodes one series at a time with Prometheus's writev2.TimeSeries.Unmarshal
// into slabs sized by the first pass (no whole []writev2.TimeSeries is ever built).
//
// Start timestamps are accepted in both layouts the 2.0 proto has had: the current per-sample
// Sample.start_timestamp (3) / Histogram.start_timestamp (17), and the earlier TimeSeries.created_timestamp (6,
// now reserved; decoded as an unknown field and skipped). Their values are dropped: the StoreAPI write path
// (thanos.WriteableStore/RemoteWrite) has no field for them. Metadata (type, help, unit) is dropped for the
// same reason.
//
// The whole request is refused (400) when a symbol is not valid UTF-8 or a reference is out of range or
// unpaired: those are malformed requests, not invalid series.
func DecodeV2(buf []byte, o *Options) ([]*prompb.TimeSeries, error) {
	maxKept := o.maxKept()
	c, v1Fields, err := countWriteV2(buf, maxKept)
	if err != nil {
		return nil, err
	}
	if c.series == 0 && v1Fields {
		return nil, errors.Wrapf(ErrWrongProtocol, "decode remote write 2.0 request: the body has no 2.0 timeseries (field 5) but "+
			"has remote write 1.0's timeseries or metadata (fields 1, 3): it looks like a 1.0 request sent with Content-Type %s; "+
			"1.0 requests need Content-Type %s (without a proto parameter, or proto=%s)", ContentTypeV2, ContentTypeProtobuf, ProtoMessageV1)
	}
	// Prometheus's encoder puts in the symbol table only what the request refers to: label and exemplar label
	// names and values, and each series' metadata help and unit. Many more symbols than that (beyond a margin
	// for other encoders) is a table no series uses, refused before it is copied (an empty symbol is 2 bytes on
	// the wire and a 16-byte string).
	if maxSyms := 1 + c.refs + 2*c.series + 1024; c.symbols > maxSyms {
		return nil, errors.Wrapf(ErrDecodeTooExpensive, "decode remote write 2.0 request: %d symbols for %d label references "+
			"and %d series: at most %d can be referred to; refused before decoding", c.symbols, c.refs, c.series, maxSyms)
	}
	if err := c.admit(V2, len(buf), o.reserveFunc()); err != nil {
		return nil, err
	}

	// Symbols. The first pass checked the framing of every top-level field.
	syms := make([]string, 0, c.symbols)
	for b := buf; len(b) > 0; {
		num, typ, v, n := nextField(b, true)
		if n <= 0 {
			return nil, errors.New("decode remote write 2.0 request: framing changed between passes")
		}
		b = b[n:]
		if num == 4 && typ == protowire.BytesType {
			if !utf8.Valid(v) {
				return nil, errors.Newf("decode remote write 2.0 request: symbol %d is not valid UTF-8", len(syms))
			}
			if o != nil && o.AliasBuf {
				syms = append(syms, unsafe.String(unsafe.SliceData(v), len(v)))
			} else {
				syms = append(syms, string(v))
			}
		}
	}

	var (
		series     = make([]prompb.TimeSeries, c.series)
		out        = make([]*prompb.TimeSeries, 0, c.series)
		labels     = make([]labelpb.Label, c.labels)
		labelPtrs  = make([]*labelpb.Label, c.labels)
		samples    = make([]prompb.Sample, c.samples)
		samplePtrs = make([]*prompb.Sample, c.samples)
		in         writev2.TimeSeries
	)
	for b := buf; len(b) > 0; {
		num, typ, v, n := nextField(b, true)
		if n <= 0 {
			return nil, errors.New("decode remote write 2.0 request: framing changed between passes")
		}
		b = b[n:]
		if num != 5 || typ != protowire.BytesType {
			continue
		}
		i := len(out)
		if i == len(series) {
			return nil, errors.New("decode remote write 2.0 request: series count changed between passes")
		}
		in = writev2.TimeSeries{}
		if err := in.Unmarshal(v); err != nil {
			return nil, errors.Wrapf(err, "decode remote write 2.0 request: timeseries %d", i)
		}
		ts := &series[i]
		out = append(out, ts)
		if len(in.LabelsRefs)%2 != 0 {
			return nil, errors.Newf("decode remote write 2.0 request: timeseries %d has an odd number of label references (%d)", i, len(in.LabelsRefs))
		}
		if len(in.Samples) > len(samples) {
			return nil, errors.New("decode remote write 2.0 request: sample count changed between passes")
		}
		kept, nLabels := 0, 0
		for j := 0; j < len(in.LabelsRefs); j += 2 {
			name, value, err := ResolveLabelRefs(syms, in.LabelsRefs, j)
			if err != nil {
				return nil, errors.Wrapf(err, "decode remote write 2.0 request: timeseries %d", i)
			}
			if maxKept > 0 && value == "" {
				continue // dropped, as the validator would
			}
			nLabels++
			if maxKept > 0 && kept == maxKept {
				if name == model.MetricNameLabel {
					// Keep the metric name, so that the series is refused for its labels, not for having none.
					labelPtrs[kept-1].Name, labelPtrs[kept-1].Value = name, value
				}
				continue // checked, not kept
			}
			if kept == len(labels) {
				return nil, errors.New("decode remote write 2.0 request: label count changed between passes")
			}
			l := &labels[kept]
			l.Name, l.Value = name, value
			labelPtrs[kept] = l
			kept++
		}
		if kept > 0 {
			ts.Labels = labelPtrs[:kept:kept]
			labels, labelPtrs = labels[kept:], labelPtrs[kept:]
		}
		if nLabels > kept {
			o.truncated = append(o.truncated, truncatedSeries{ts: ts, labels: nLabels})
		}

		if n := len(in.Samples); n > 0 {
			ss := samplePtrs[:n:n]
			for j := range in.Samples {
				s := &samples[j]
				s.Value, s.Timestamp = in.Samples[j].Value, in.Samples[j].Timestamp
				ss[j] = s
			}
			samples, samplePtrs = samples[n:], samplePtrs[n:]
			ts.Samples = ss
		}

		if len(in.Histograms) > 0 {
			ts.Histograms = make([]*prompb.Histogram, len(in.Histograms))
			for j := range in.Histograms {
				ts.Histograms[j] = HistogramFromV2(&in.Histograms[j])
			}
		}

		if len(in.Exemplars) > 0 {
			ts.Exemplars = make([]*prompb.Exemplar, len(in.Exemplars))
			for j := range in.Exemplars {
				e, err := ExemplarFromV2(syms, &in.Exemplars[j])
				if err != nil {
					return nil, errors.Wrapf(err, "decode remote write 2.0 request: timeseries %d: exemplar %d", i, j)
				}
				ts.Exemplars[j] = e
			}
		}
	}
	return out, nil
}

// countWriteV2 is DecodeV2's first pass: it checks the framing of the request and of each series as
// Prometheus's generated code does (it refuses what writev2.Request.Unmarshal refuses at those two levels, and
// the third pass what it refuses inside series), and counts symbols, series and their entries. v1Fields: the
// request has length-delimited fields 1 or 3, 1.0's timeseries and metadata (reserved in 2.0).
//
// maxKept > 0: a series counts for at most maxKept labels (Options.MaxLabels).
func countWriteV2(buf []byte, maxKept int) (c decodeCost, v1Fields bool, err error) {
	for b := buf; len(b) > 0; {
		num, typ, n := gogoTag(b)
		if n <= 0 {
			return c, false, errors.New("decode remote write 2.0 request: invalid field tag")
		}
		switch num {
		case 4, 5:
			if typ != protowire.BytesType {
				return c, false, errors.Newf("decode remote write 2.0 request: wrong wire type %d for field %d", typ, num)
			}
			v, m := gogoBytes(b[n:])
			if m <= 0 {
				return c, false, errors.Newf("decode remote write 2.0 request: field %d: invalid or truncated length", num)
			}
			b = b[n+m:]
			if num == 4 {
				c.symbols++
				c.stringBytes += len(v)
				continue
			}
			if err := countSeriesV2(&c, v, maxKept); err != nil {
				return c, false, errors.Wrapf(err, "decode remote write 2.0 request: timeseries %d", c.series)
			}
			c.series++
		default:
			if (num == 1 || num == 3) && typ == protowire.BytesType {
				v1Fields = true
			}
			m := gogoSkip(b)
			if m <= 0 {
				return c, false, errors.Newf("decode remote write 2.0 request: field %d: invalid or truncated value", num)
			}
			b = b[m:]
		}
	}
	return c, v1Fields, nil
}

// countSeriesV2 counts one 2.0 TimeSeries' labels, samples, histograms and exemplars into c, checking the
// framing of its fields as writev2.TimeSeries.Unmarshal does.
func countSeriesV2(c *decodeCost, b []byte, maxKept int) error {
	refs := 0
	for len(b) > 0 {
		num, typ, n := gogoTag(b)
		if n <= 0 {
			return errors.New("invalid field tag")
		}
		switch num {
		case 1:
			switch typ {
			case protowire.VarintType:
				_, m := gogoVarint(b[n:])
				if m <= 0 {
					return errors.New("label references: invalid varint")
				}
				refs++
				b = b[n+m:]
			case protowire.BytesType:
				v, m := gogoBytes(b[n:])
				if m <= 0 {
					return errors.New("label references: invalid or truncated length")
				}
				refs += countPacked(v)
				b = b[n+m:]
			default:
				return errors.Newf("wrong wire type %d for label references", typ)
			}
		case 2, 3, 4, 5:
			if typ != protowire.BytesType {
				return errors.Newf("wrong wire type %d for field %d", typ, num)
			}
			v, m := gogoBytes(b[n:])
			if m <= 0 {
				return errors.Newf("field %d: invalid or truncated length", num)
			}
			b = b[n+m:]
			switch num {
			case 2:
				c.samples++
				c.seriesSamples++
			case 3:
				c.histograms++
				c.seriesHists++
				countHistogram(c, v, true)
			case 4:
				c.exemplars++
				c.seriesExemplars++
				countExemplarV2(c, v)
			}
		default:
			m := gogoSkip(b)
			if m <= 0 {
				return errors.Newf("field %d: invalid or truncated value", num)
			}
			b = b[m:]
		}
	}
	if maxKept > 0 {
		c.labels += min(refs/2, maxKept)
	} else {
		c.labels += refs / 2
	}
	c.seriesRefs = refs
	c.refs += refs + c.seriesExRefs
	c.endSeriesV2()
	return nil
}

// ResolveLabelRefs returns the label at refs[i], refs[i+1].
func ResolveLabelRefs(syms []string, refs []uint32, i int) (name, value string, err error) {
	nr, vr := refs[i], refs[i+1]
	if int(nr) >= len(syms) || int(vr) >= len(syms) {
		return "", "", errors.Newf("label reference (%d, %d) out of range: the request has %d symbols", nr, vr, len(syms))
	}
	return syms[nr], syms[vr], nil
}

// ExemplarFromV2 converts a 2.0 exemplar, resolving its label references in syms.
func ExemplarFromV2(syms []string, in *writev2.Exemplar) (*prompb.Exemplar, error) {
	if len(in.LabelsRefs)%2 != 0 {
		return nil, errors.Newf("odd number of label references (%d)", len(in.LabelsRefs))
	}
	e := &prompb.Exemplar{Value: in.Value, Timestamp: in.Timestamp}
	if n := len(in.LabelsRefs) / 2; n > 0 {
		ls := make([]labelpb.Label, n)
		e.Labels = make([]*labelpb.Label, n)
		for j := range ls {
			var err error
			if ls[j].Name, ls[j].Value, err = ResolveLabelRefs(syms, in.LabelsRefs, 2*j); err != nil {
				return nil, err
			}
			e.Labels[j] = &ls[j]
		}
	}
	return e, nil
}

// HistogramFromV2 converts a 2.0 histogram.
func HistogramFromV2(in *writev2.Histogram) *prompb.Histogram {
	h := &prompb.Histogram{
		Sum:            in.Sum,
		Schema:         in.Schema,
		ZeroThreshold:  in.ZeroThreshold,
		NegativeSpans:  spansFromV2(in.NegativeSpans),
		NegativeDeltas: in.NegativeDeltas,
		NegativeCounts: in.NegativeCounts,
		PositiveSpans:  spansFromV2(in.PositiveSpans),
		PositiveDeltas: in.PositiveDeltas,
		PositiveCounts: in.PositiveCounts,
		ResetHint:      prompb.Histogram_ResetHint(in.ResetHint),
		Timestamp:      in.Timestamp,
		CustomValues:   in.CustomValues,
	}
	switch c := in.Count.(type) {
	case *writev2.Histogram_CountInt:
		h.Count = &prompb.Histogram_CountInt{CountInt: c.CountInt}
	case *writev2.Histogram_CountFloat:
		h.Count = &prompb.Histogram_CountFloat{CountFloat: c.CountFloat}
	}
	switch c := in.ZeroCount.(type) {
	case *writev2.Histogram_ZeroCountInt:
		h.ZeroCount = &prompb.Histogram_ZeroCountInt{ZeroCountInt: c.ZeroCountInt}
	case *writev2.Histogram_ZeroCountFloat:
		h.ZeroCount = &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: c.ZeroCountFloat}
	}
	return h
}

func spansFromV2(in []writev2.BucketSpan) []*prompb.BucketSpan {
	if len(in) == 0 {
		return nil
	}
	spans := make([]prompb.BucketSpan, len(in))
	out := make([]*prompb.BucketSpan, len(in))
	for i := range in {
		spans[i].Offset, spans[i].Length = in[i].Offset, in[i].Length
		out[i] = &spans[i]
	}
	return out
}

// countRunLabels counts the label fields of a label run (countWriteV1 checked their framing).
func countRunLabels(run []byte) int {
	n := 0
	for len(run) > 0 {
		_, _, tn := ConsumeTag(run)
		if tn < 0 {
			return n
		}
		_, vn := protowire.ConsumeBytes(run[tn:])
		if vn < 0 {
			return n
		}
		run = run[tn+vn:]
		n++
	}
	return n
}

// RangeLabelRun calls f with the name and value of each label of run, a label run as DecodeV1 gives it
// (LabelRuns), in order, but for labels with an empty value: the labels of the series as the decoder and then
// validation leave them (a series validated unchanged had none with an empty value, or they were dropped while
// decoding beyond MaxLabels). Their UTF-8 is not checked. The strings alias run: f must not keep them.
func RangeLabelRun(run []byte, f func(name, value string)) error {
	s := unsafe.String(unsafe.SliceData(run), len(run))
	for i := 0; i < len(run); {
		num, typ, n := ConsumeTag(run[i:])
		if n < 0 {
			return WireError(n, "label run")
		}
		i += n
		if num != 1 || typ != protowire.BytesType {
			return errors.Newf("label run: field %d of type %d is not a label", num, typ)
		}
		v, n := protowire.ConsumeBytes(run[i:])
		if n < 0 {
			return WireError(n, "label run")
		}
		start := i + n - len(v)
		i += n
		var l labelpb.Label
		if _, _, err := decodeLabel(v, s[start:start+len(v)], &l, true, true); err != nil {
			return err
		}
		if l.Value != "" {
			f(l.Name, l.Value)
		}
	}
	return nil
}

// DecodeLabelRun decodes the labels of a series decoded without them (Options.SkipLabels) from its run
// (LabelRuns). The labels do not alias run: their strings are in a copy of it of their own.
func DecodeLabelRun(run []byte) ([]*labelpb.Label, error) {
	own := bytes.Clone(run) // never written again: the strings RangeLabelRun gives may alias it
	ls := make([]labelpb.Label, 0, countRunLabels(own))
	if err := RangeLabelRun(own, func(name, value string) {
		ls = append(ls, labelpb.Label{Name: name, Value: value})
	}); err != nil {
		return nil, errors.Wrap(err, "decode label run")
	}
	ptrs := make([]*labelpb.Label, len(ls))
	for k := range ls {
		ptrs[k] = &ls[k]
	}
	return ptrs, nil
}

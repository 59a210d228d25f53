package receive

import (
	"bytes"
	"math"
	"math/rand"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	gogoproto "github.com/gogo/protobuf/proto"
	"github.com/klauspost/compress/snappy"
	promprompb "github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
)

func TestParseWriteContentType(t *testing.T) {
	for _, tc := range []struct {
		ct   string
		want writeProto
	}{
		{"", writeV1},
		{"   ", writeV1},
		{"application/x-protobuf", writeV1},
		{"application/x-protobuf;proto=prometheus.WriteRequest", writeV1},
		{"application/x-protobuf;proto=io.prometheus.write.v2.Request", writeV2},
		{"application/x-protobuf; proto=io.prometheus.write.v2.Request", writeV2},
		{"APPLICATION/X-PROTOBUF;PROTO=io.prometheus.write.v2.Request", writeV2},
		{`application/x-protobuf;proto="io.prometheus.write.v2.Request"`, writeV2},
		{"application/x-protobuf;charset=utf-8", writeV1},
		{"application/json", 0},
		{"text/plain", 0},
		{"application/x-protobuf;proto=io.prometheus.write.v2.request", 0},
		{"application/x-protobuf;proto=", 0},
		{"application/x-protobuf;proto", 0},
		{"application/x-protobuf;;", 0},
		{"/", 0},
	} {
		got, err := parseWriteContentType(tc.ct)
		if tc.want == 0 {
			testutil.NotOk(t, err, tc.ct)
			continue
		}
		testutil.Ok(t, err, tc.ct)
		testutil.Equals(t, tc.want, got, tc.ct)
	}
}

func TestCheckContentEncoding(t *testing.T) {
	for _, ok := range []string{"", "snappy", "Snappy"} {
		testutil.Ok(t, checkContentEncoding(ok))
	}
	for _, bad := range []string{"gzip", "zstd", "snappy, gzip", "identity"} {
		testutil.NotOk(t, checkContentEncoding(bad))
	}
}

// pb builds protobuf wire bytes by hand, for layouts no generated type writes.
type pb []byte

func (b pb) tag(num protowire.Number, typ protowire.Type) pb { return protowire.AppendTag(b, num, typ) }
func (b pb) bytes(num protowire.Number, v []byte) pb {
	return protowire.AppendBytes(b.tag(num, protowire.BytesType), v)
}
func (b pb) str(num protowire.Number, s string) pb { return b.bytes(num, []byte(s)) }
func (b pb) varint(num protowire.Number, v uint64) pb {
	return protowire.AppendVarint(b.tag(num, protowire.VarintType), v)
}
func (b pb) fixed64(num protowire.Number, v uint64) pb {
	return protowire.AppendFixed64(b.tag(num, protowire.Fixed64Type), v)
}
func (b pb) fixed32(num protowire.Number, v uint32) pb {
	return protowire.AppendFixed32(b.tag(num, protowire.Fixed32Type), v)
}
func (b pb) double(num protowire.Number, f float64) pb { return b.fixed64(num, math.Float64bits(f)) }
func (b pb) group(num protowire.Number, inner []byte) pb {
	return append(append(b.tag(num, protowire.StartGroupType), inner...), pb(nil).tag(num, protowire.EndGroupType)...)
}
func (b pb) packedVarints(num protowire.Number, vs ...uint64) pb {
	var p []byte
	for _, v := range vs {
		p = protowire.AppendVarint(p, v)
	}
	return b.bytes(num, p)
}
func (b pb) packedDoubles(num protowire.Number, fs ...float64) pb {
	var p []byte
	for _, f := range fs {
		p = protowire.AppendFixed64(p, math.Float64bits(f))
	}
	return b.bytes(num, p)
}

func snappyEncode(b []byte) []byte { return snappy.Encode(nil, b) }

func label(name, value string) []byte { return pb(nil).str(1, name).str(2, value) }

// v1Corpus are remote write 1.0 bodies, valid or not, that exercise the decoder's corners: unknown fields and
// groups at every level, known fields with another wire type, packed and unpacked repeated fields, oneofs set
// twice, last-one-wins scalars, metadata, invalid UTF-8, truncation.
func v1Corpus(t testing.TB) map[string][]byte {
	rich, err := gogoproto.Marshal(&promprompb.WriteRequest{
		Timeseries: richSeriesV1(),
		Metadata:   []promprompb.MetricMetadata{{Type: promprompb.MetricMetadata_COUNTER, MetricFamilyName: "http_requests_total", Help: "Requests.", Unit: "1"}},
	})
	testutil.Ok(t, err)
	sample := pb(nil).double(1, 1.5).varint(2, uint64(testNowMs()))
	hist := pb(nil).
		varint(1, 7).double(2, 7.5). // count_int then count_float: the last wins
		double(3, 3).varint(4, protowire.EncodeZigZag(-3)).double(5, 0.1).
		double(7, 1).varint(6, 2). // zero_count_float then zero_count_int
		bytes(8, pb(nil).varint(1, protowire.EncodeZigZag(-2)).varint(2, 2)).
		varint(9, protowire.EncodeZigZag(-1)).packedVarints(9, protowire.EncodeZigZag(5), 0). // unpacked then packed
		double(10, 1).packedDoubles(10, 2, 3).
		bytes(11, pb(nil).varint(1, 1).varint(2, 1).varint(3, 99)).
		packedVarints(12, 2).double(13, 4).packedDoubles(16, 0.5, 1).double(16, 2).
		varint(14, 3).varint(15, uint64(testNowMs())).
		varint(4, 0xffffffff00000001) // schema again (last wins): only the low 32 bits count
	series := pb(nil).
		bytes(1, label("__name__", "up")).
		fixed32(1, 7). // label field with the wrong wire type: unknown
		bytes(2, sample).
		varint(99, 1).group(50, pb(nil).varint(1, 1).bytes(2, []byte("x"))).
		bytes(1, pb(nil).str(1, "ignored").str(1, "job").str(2, "a").varint(3, 5)). // name set twice
		bytes(3, pb(nil).bytes(1, label("trace_id", "abc")).double(2, 2).varint(3, 9).fixed64(9, 1)).
		bytes(4, hist).
		bytes(2, pb(nil).varint(2, math.MaxUint64)). // timestamp -1
		varint(2, 5)                                 // sample field with the wrong wire type
	out := map[string][]byte{
		"empty":                 nil,
		"rich":                  rich,
		"hand":                  pb(nil).bytes(1, series).varint(2, 1).bytes(3, pb(nil).varint(1, 3).str(2, "up").str(4, "help")).fixed32(7, 1),
		"empty series":          pb(nil).bytes(1, nil).bytes(1, nil),
		"series without labels": pb(nil).bytes(1, pb(nil).bytes(2, sample)),
		"empty label":           pb(nil).bytes(1, pb(nil).bytes(1, nil)),
		"group at top":          pb(nil).group(5, pb(nil).bytes(1, series)),
		"unknown enum value":    pb(nil).bytes(1, pb(nil).bytes(4, pb(nil).varint(14, 1234))),
		"negative enum value":   pb(nil).bytes(1, pb(nil).bytes(4, pb(nil).varint(14, math.MaxUint64))),
		"invalid UTF-8 name":    pb(nil).bytes(1, pb(nil).bytes(1, label("\xc3\x28", "a"))),
		"invalid UTF-8 value":   pb(nil).bytes(1, pb(nil).bytes(1, label("a", "\xff"))),
		"invalid UTF-8 mid-run": pb(nil).bytes(1, pb(nil).bytes(1, label("__name__", "up")).bytes(1, label("job", "a\xc3")).
			bytes(1, label("zone", "b")).bytes(2, sample)),
		"invalid UTF-8 name mid-run": pb(nil).bytes(1, pb(nil).bytes(1, label("__name__", "up")).bytes(1, label("\xa9job", "a"))),
		"invalid UTF-8 after a long label": pb(nil).bytes(1, pb(nil).bytes(1, label("__name__", "up")).
			bytes(1, label("long", strings.Repeat("v", 200))).bytes(1, label("zone", "\xff")).bytes(2, sample)),
		"invalid UTF-8 after a sample": pb(nil).bytes(1, pb(nil).bytes(1, label("__name__", "up")).bytes(2, sample).
			bytes(1, label("zone", "\xff"))),
		"multi-byte UTF-8 in a run": pb(nil).bytes(1, pb(nil).bytes(1, label("__name__", "up")).bytes(1, label("é", "日本")).
			bytes(1, label("zone", "\u00e9\U0001F600")).bytes(2, sample)),
		"invalid UTF-8 exemplar": pb(nil).bytes(1, pb(nil).bytes(3, pb(nil).bytes(1, label("a", "\xff")))),
		"invalid UTF-8 metadata": pb(nil).bytes(3, pb(nil).str(4, "\xff")),
		"invalid UTF-8 unknown":  pb(nil).bytes(1, pb(nil).bytes(1, pb(nil).str(9, "\xff"))), // unknown fields are not checked
		"field number 0":         pb(nil).varint(0, 1),
		"field number too large": []byte("\x82\xf9\xff\xc60\x130000000000000000000"), // found by FuzzDecodeV1
		"field number max":       pb(nil).varint(protowire.MaxValidNumber, 1),
		"end group at top":       pb(nil).tag(3, protowire.EndGroupType),
		"unterminated group":     pb(nil).tag(3, protowire.StartGroupType).varint(1, 1),
		"mismatched group":       append(pb(nil).tag(3, protowire.StartGroupType), pb(nil).tag(4, protowire.EndGroupType)...),
		"end group in series":    pb(nil).bytes(1, pb(nil).tag(3, protowire.EndGroupType)),
		"truncated varint":       {0x08, 0x80},
		"truncated length":       pb(nil).bytes(1, series)[:10],
		"length past end":        {0x0a, 0x7f, 0x0a},
		"overlong varint":        {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"packed doubles cut":     pb(nil).bytes(1, pb(nil).bytes(4, pb(nil).bytes(13, []byte{1, 2, 3}))),
		"packed varints cut":     pb(nil).bytes(1, pb(nil).bytes(4, pb(nil).bytes(12, []byte{0x80}))),
		"span cut":               pb(nil).bytes(1, pb(nil).bytes(4, pb(nil).bytes(11, []byte{0x08}))),
		"exemplar cut":           pb(nil).bytes(1, pb(nil).bytes(3, []byte{0x11, 1, 2})),
		"sample cut":             pb(nil).bytes(1, pb(nil).bytes(2, []byte{0x09, 1, 2})),
	}
	rng := rand.New(rand.NewSource(1))
	for i := range 20 {
		out["random "+strconv.Itoa(i)] = randomV1(t, rng)
	}
	return out
}

// randomV1 is a random valid 1.0 request.
func randomV1(t testing.TB, rng *rand.Rand) []byte {
	var req promprompb.WriteRequest
	for range rng.Intn(20) {
		var s promprompb.TimeSeries
		for j := range rng.Intn(20) {
			s.Labels = append(s.Labels, promprompb.Label{Name: "l" + strconv.Itoa(j), Value: strconv.Itoa(rng.Int())})
		}
		for range rng.Intn(5) {
			s.Samples = append(s.Samples, promprompb.Sample{Value: rng.NormFloat64(), Timestamp: rng.Int63() - rng.Int63()})
		}
		if rng.Intn(4) == 0 {
			s.Histograms = append(s.Histograms, promprompb.FromIntHistogram(rng.Int63(), testIntHistogram()))
		}
		if rng.Intn(4) == 0 {
			s.Histograms = append(s.Histograms, promprompb.FromFloatHistogram(rng.Int63(), testFloatHistogram()))
		}
		if rng.Intn(4) == 0 {
			s.Exemplars = append(s.Exemplars, promprompb.Exemplar{Labels: []promprompb.Label{{Name: "trace_id", Value: strconv.Itoa(rng.Int())}}, Value: rng.Float64(), Timestamp: rng.Int63()})
		}
		req.Timeseries = append(req.Timeseries, s)
	}
	b, err := gogoproto.Marshal(&req)
	testutil.Ok(t, err)
	return b
}

// checkDecodeV1MatchesProto holds decodeWriteV1 to proto.Unmarshal: same bodies accepted, same series.
func checkDecodeV1MatchesProto(t testing.TB, body []byte) {
	t.Helper()
	var want prompb.WriteRequest
	wantErr := proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, &want)
	got, err := remotewrite.DecodeV1(body, nil)
	if wantErr == nil && len(want.Timeseries) == 0 && errors.Is(err, remotewrite.ErrWrongProtocol) {
		return // a 2.0 body: refused on purpose (TestWrongProtocol)
	}
	if wantErr == nil && errors.Is(err, remotewrite.ErrDecodeTooExpensive) {
		return // refused on purpose (TestDecodeHostileBodies)
	}
	if wantErr != nil {
		testutil.NotOk(t, err, "proto.Unmarshal refused the body (%v); decodeWriteV1 must too", wantErr)
		return
	}
	testutil.Ok(t, err, "proto.Unmarshal accepted the body")
	equalSeries(t, want.Timeseries, got)

	// Decoding into reused slabs, dirtied by another request first, gives the same: nothing of that one shows.
	slabs := &remotewrite.Slabs{}
	_, err = remotewrite.DecodeV1(dirtySlabsBody(t), &remotewrite.Options{Slabs: slabs})
	testutil.Ok(t, err)
	got, err = remotewrite.DecodeV1(body, &remotewrite.Options{Slabs: slabs})
	testutil.Ok(t, err, "decoding into reused slabs")
	equalSeries(t, want.Timeseries, got)

	// Decoded without the labels of every series a caller could know by its run (one with a run, none of its
	// labels with an empty value), then those labels decoded from the runs: the same again.
	o := remotewrite.Options{KeepLabelRuns: true}
	got, err = remotewrite.DecodeV1(body, &o)
	testutil.Ok(t, err)
	skip := make([]bool, len(got))
	for i, run := range o.LabelRuns() {
		skip[i] = run != nil
		for _, l := range got[i].Labels {
			skip[i] = skip[i] && l.Value != ""
		}
	}
	o = remotewrite.Options{Slabs: slabs, SkipLabels: func([][]byte) []bool { return skip }}
	got, err = remotewrite.DecodeV1(body, &o)
	testutil.Ok(t, err, "decoding without known labels")
	for i, ts := range got {
		if skip[i] {
			testutil.Equals(t, 0, len(ts.Labels))
			ts.Labels, err = remotewrite.DecodeLabelRun(o.LabelRuns()[i])
			testutil.Ok(t, err)
		}
	}
	equalSeries(t, want.Timeseries, got)
}

// dirtySlabsBody is a request whose every field is set, to fill reused slabs before another decode.
func dirtySlabsBody(t testing.TB) []byte {
	t.Helper()
	var req promprompb.WriteRequest
	for i := range 20 {
		ts := series1(int64(i), "__name__", "dirty", "a", "x", "b", "y", "c", "z")
		ts.Samples = append(ts.Samples, promprompb.Sample{Value: 7, Timestamp: 8})
		ts.Exemplars = []promprompb.Exemplar{{Labels: []promprompb.Label{{Name: "trace_id", Value: "t"}}, Value: 1, Timestamp: 2}}
		ts.Histograms = []promprompb.Histogram{{Count: &promprompb.Histogram_CountInt{CountInt: 3}, Sum: 1, Timestamp: 5}}
		req.Timeseries = append(req.Timeseries, ts)
	}
	b, err := gogoproto.Marshal(&req)
	testutil.Ok(t, err)
	return b
}

func TestDecodeV1MatchesProtoUnmarshal(t *testing.T) {
	for name, body := range v1Corpus(t) {
		t.Run(name, func(t *testing.T) { checkDecodeV1MatchesProto(t, body) })
	}
}

// TestDecodeV1Hand checks the hand-written corner cases against the values themselves, not only the oracle.
func TestDecodeV1Hand(t *testing.T) {
	got, err := remotewrite.DecodeV1(v1Corpus(t)["hand"], nil)
	testutil.Ok(t, err)
	testutil.Equals(t, 1, len(got))
	s := got[0]
	testutil.Equals(t, 2, len(s.Labels))
	testutil.Equals(t, "job", s.Labels[1].GetName())
	testutil.Equals(t, 2, len(s.Samples))
	testutil.Equals(t, int64(-1), s.Samples[1].GetTimestamp())
	h := s.Histograms[0]
	testutil.Equals(t, 7.5, h.GetCountFloat())
	testutil.Equals(t, uint64(2), h.GetZeroCountInt())
	testutil.Equals(t, int32(-1), h.GetSchema()) // zigzag of the low 32 bits (1) of 0xffffffff00000001
	testutil.Equals(t, []int64{-1, 5, 0}, h.GetNegativeDeltas())
	testutil.Equals(t, []float64{1, 2, 3}, h.GetNegativeCounts())
	testutil.Equals(t, []float64{0.5, 1, 2}, h.GetCustomValues())
	testutil.Equals(t, int32(-2), h.NegativeSpans[0].GetOffset())
	testutil.Equals(t, prompb.Histogram_GAUGE, h.GetResetHint())
	testutil.Equals(t, "abc", s.Exemplars[0].Labels[0].GetValue())
}

// TestDecodeV1SeriesDoNotShareSlices: appending to one series' labels or samples never touches the next one's.
func TestDecodeV1SeriesDoNotShareSlices(t *testing.T) {
	body, err := gogoproto.Marshal(&promprompb.WriteRequest{Timeseries: []promprompb.TimeSeries{
		series1(1, "__name__", "a"), series1(2, "__name__", "b"),
	}})
	testutil.Ok(t, err)
	got, err := remotewrite.DecodeV1(body, nil)
	testutil.Ok(t, err)
	got[0].Labels = append(got[0].Labels, &labelpb.Label{Name: "x", Value: "y"})
	got[0].Samples = append(got[0].Samples, &prompb.Sample{Timestamp: 9})
	testutil.Equals(t, "b", got[1].Labels[0].GetValue())
	testutil.Equals(t, int64(2), got[1].Samples[0].GetTimestamp())
}

// FuzzDecodeV1 holds the hand-written 1.0 decoder to proto.Unmarshal on arbitrary bytes.
func FuzzDecodeV1(f *testing.F) {
	for _, body := range v1Corpus(f) {
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkDecodeV1MatchesProto(t, body) })
}

// v2StartTimestampLayouts hand-encodes the same 2.0 request in the two layouts the 2.0 proto has had for start
// timestamps: the early one (TimeSeries.created_timestamp = 6, one per series) and the current one
// (Sample.start_timestamp = 3, Histogram.start_timestamp = 17).
func v2StartTimestampLayouts() (created, start []byte) {
	now := uint64(testNowMs())
	st := now - 60000
	symbols := pb(nil).str(4, "").str(4, "__name__").str(4, "up").str(4, "job").str(4, "a").str(4, "h")
	labelRefs := func(b pb, name uint64) pb { return b.packedVarints(1, 1, name, 3, 4) }
	sample := func(withST bool) pb {
		b := pb(nil).double(1, 2.5).varint(2, now)
		if withST {
			b = b.varint(3, st)
		}
		return b
	}
	hist := func(withST bool) pb {
		b := pb(nil).varint(1, 3).double(3, 4.5).varint(4, protowire.EncodeZigZag(0)).
			bytes(11, pb(nil).varint(1, 0).varint(2, 2)).packedVarints(12, protowire.EncodeZigZag(1), protowire.EncodeZigZag(1)).
			varint(15, now)
		if withST {
			b = b.varint(17, st)
		}
		return b
	}
	created = append(symbols,
		pb(nil).bytes(5, labelRefs(nil, 2).bytes(2, sample(false)).varint(6, st)).
			bytes(5, labelRefs(nil, 5).bytes(3, hist(false)).varint(6, st))...)
	start = append(append(pb(nil), symbols...),
		pb(nil).bytes(5, labelRefs(nil, 2).bytes(2, sample(true))).
			bytes(5, labelRefs(nil, 5).bytes(3, hist(true)))...)
	return created, start
}

func TestDecodeV2StartTimestampLayouts(t *testing.T) {
	created, start := v2StartTimestampLayouts()
	st := testNowMs() - 60000

	// The encodings are what we say they are: Prometheus's own type reads the current layout's start
	// timestamps, and sees the early layout's created_timestamp as an unknown (reserved) field.
	var req writev2.Request
	testutil.Ok(t, req.Unmarshal(start))
	testutil.Equals(t, st, req.Timeseries[0].Samples[0].StartTimestamp)
	testutil.Equals(t, st, req.Timeseries[1].Histograms[0].StartTimestamp)
	req = writev2.Request{}
	testutil.Ok(t, req.Unmarshal(created))
	testutil.Equals(t, int64(0), req.Timeseries[0].Samples[0].StartTimestamp)
	testutil.Equals(t, pb(nil).varint(6, uint64(st)), pb(req.Timeseries[0].XXX_unrecognized))

	want := protoFromV1(t,
		promprompb.TimeSeries{
			Labels:  []promprompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}},
			Samples: []promprompb.Sample{{Value: 2.5, Timestamp: testNowMs()}},
		},
		promprompb.TimeSeries{
			Labels: []promprompb.Label{{Name: "__name__", Value: "h"}, {Name: "job", Value: "a"}},
			Histograms: []promprompb.Histogram{{
				Count: &promprompb.Histogram_CountInt{CountInt: 3}, Sum: 4.5,
				PositiveSpans: []promprompb.BucketSpan{{Offset: 0, Length: 2}}, PositiveDeltas: []int64{1, 1},
				Timestamp: testNowMs(),
			}},
		},
	)
	for name, body := range map[string][]byte{"created_timestamp (early layout)": created, "start_timestamp (current layout)": start} {
		t.Run(name, func(t *testing.T) {
			got, err := remotewrite.DecodeV2(body, nil)
			testutil.Ok(t, err)
			equalSeries(t, want, got) // start timestamps are dropped: the StoreAPI write path has no field for them

			env := newTestEnv(t, testLimits())
			rec := env.do(t, snappyEncode(body), ctV2)
			testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
			testutil.Equals(t, "1", rec.Header().Get(headerSamplesWritten))
			testutil.Equals(t, "1", rec.Header().Get(headerHistogramsWritten))
			equalSeries(t, want, env.pusher.series())
		})
	}
}

func TestDecodeV2Errors(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *writev2.Request
		msg  string
	}{
		{
			name: "odd label refs",
			req:  &writev2.Request{Symbols: []string{"", "__name__", "up"}, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 2, 1}}}},
			msg:  "decode remote write 2.0 request: timeseries 0 has an odd number of label references (3)",
		},
		{
			name: "label ref out of range",
			req:  &writev2.Request{Symbols: []string{"", "__name__", "up"}, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 2}}, {LabelsRefs: []uint32{1, 3}}}},
			msg:  "decode remote write 2.0 request: timeseries 1: label reference (1, 3) out of range: the request has 3 symbols",
		},
		{
			name: "no symbols",
			req:  &writev2.Request{Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{0, 0}}}},
			msg:  "decode remote write 2.0 request: timeseries 0: label reference (0, 0) out of range: the request has 0 symbols",
		},
		{
			name: "exemplar ref out of range",
			req: &writev2.Request{Symbols: []string{"", "__name__", "up"}, Timeseries: []writev2.TimeSeries{{
				LabelsRefs: []uint32{1, 2}, Exemplars: []writev2.Exemplar{{LabelsRefs: []uint32{1, 9}}},
			}}},
			msg: "decode remote write 2.0 request: timeseries 0: exemplar 0: label reference (1, 9) out of range: the request has 3 symbols",
		},
		{
			name: "invalid UTF-8 symbol",
			req:  &writev2.Request{Symbols: []string{"", "__name__", "\xff"}},
			msg:  "decode remote write 2.0 request: symbol 2 is not valid UTF-8",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.req.Marshal()
			testutil.Ok(t, err)
			_, err = remotewrite.DecodeV2(b, nil)
			testutil.NotOk(t, err)
			testutil.Equals(t, tc.msg, err.Error())

			env := newTestEnv(t, testLimits())
			rec := env.do(t, snappyEncode(b), ctV2)
			testutil.Equals(t, http.StatusBadRequest, rec.Code)
			testutil.Equals(t, tc.msg+"\n", rec.Body.String())
		})
	}
}

// TestWrongProtocol: a body sent with the other protocol's Content-Type decodes to nothing (2.0 reserves 1.0's
// field numbers, 1.0 does not know 2.0's); it is refused with a 400 saying so rather than acknowledged with
// nothing written.
func TestWrongProtocol(t *testing.T) {
	v1 := encodeV1(t, series1(testNowMs(), "__name__", "up"))
	v2 := encodeV2(t, richRequestV2())
	for _, tc := range []struct {
		name, ct string
		body     []byte
		msg      string
	}{
		{name: "1.0 body as 2.0", ct: ctV2, body: v1, msg: "it looks like a 1.0 request sent with Content-Type application/x-protobuf;proto=io.prometheus.write.v2.Request"},
		{name: "2.0 body as 1.0", ct: ctV1, body: v2, msg: "it looks like a 2.0 request sent with Content-Type application/x-protobuf"},
		{name: "2.0 body as explicit 1.0", ct: "application/x-protobuf;proto=prometheus.WriteRequest", body: v2, msg: "it looks like a 2.0 request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t, testLimits())
			rec := env.do(t, tc.body, tc.ct)
			testutil.Equals(t, http.StatusBadRequest, rec.Code, rec.Body.String())
			testutil.Assert(t, strings.Contains(rec.Body.String(), tc.msg), rec.Body.String())
			testutil.Equals(t, 0, env.pusher.calls())
		})
	}
	// Each body with its own Content-Type is still fine.
	env := newTestEnv(t, testLimits())
	testutil.Equals(t, http.StatusNoContent, env.do(t, v1, ctV1).Code)
	testutil.Equals(t, http.StatusNoContent, env.do(t, v2, ctV2).Code)
}

// decodeWriteV2Reference is the straightforward 2.0 decoder the hand-counted one replaced: Prometheus's
// generated Unmarshal of the whole request, then symbol resolution. FuzzDecodeV2 holds decodeWriteV2 to it.
func decodeWriteV2Reference(buf []byte) ([]*prompb.TimeSeries, error) {
	var req writev2.Request
	if err := req.Unmarshal(buf); err != nil {
		return nil, err
	}
	for i, s := range req.Symbols {
		if !utf8.ValidString(s) {
			return nil, errors.Newf("symbol %d is not valid UTF-8", i)
		}
	}
	out := make([]*prompb.TimeSeries, 0, len(req.Timeseries))
	for i := range req.Timeseries {
		in := &req.Timeseries[i]
		if len(in.LabelsRefs)%2 != 0 {
			return nil, errors.Newf("timeseries %d has an odd number of label references", i)
		}
		ts := &prompb.TimeSeries{}
		for j := 0; j < len(in.LabelsRefs); j += 2 {
			name, value, err := remotewrite.ResolveLabelRefs(req.Symbols, in.LabelsRefs, j)
			if err != nil {
				return nil, err
			}
			ts.Labels = append(ts.Labels, &labelpb.Label{Name: name, Value: value})
		}
		for _, s := range in.Samples {
			ts.Samples = append(ts.Samples, &prompb.Sample{Value: s.Value, Timestamp: s.Timestamp})
		}
		for j := range in.Histograms {
			ts.Histograms = append(ts.Histograms, remotewrite.HistogramFromV2(&in.Histograms[j]))
		}
		for j := range in.Exemplars {
			e, err := remotewrite.ExemplarFromV2(req.Symbols, &in.Exemplars[j])
			if err != nil {
				return nil, err
			}
			ts.Exemplars = append(ts.Exemplars, e)
		}
		out = append(out, ts)
	}
	return out, nil
}

// checkDecodeV2MatchesReference holds decodeWriteV2 to decodeWriteV2Reference: the same bodies refused, the
// same series decoded, except bodies refused on purpose (too expensive for their size, or a 1.0 body).
func checkDecodeV2MatchesReference(t testing.TB, body []byte) {
	t.Helper()
	want, wantErr := decodeWriteV2Reference(body)
	got, err := remotewrite.DecodeV2(body, nil)
	if wantErr != nil {
		testutil.NotOk(t, err, "the reference refused the body (%v); decodeWriteV2 must too", wantErr)
		return
	}
	if errors.Is(err, remotewrite.ErrDecodeTooExpensive) || (errors.Is(err, remotewrite.ErrWrongProtocol) && len(want) == 0) {
		return
	}
	testutil.Ok(t, err, "the reference accepted the body")
	equalSeries(t, want, got)
}

// v2Corpus are 2.0 bodies, valid or not.
func v2Corpus(t testing.TB) map[string][]byte {
	created, start := v2StartTimestampLayouts()
	rich, err := richRequestV2().Marshal()
	testutil.Ok(t, err)
	syms := pb(nil).str(4, "").str(4, "__name__").str(4, "up")
	return map[string][]byte{
		"rich":                        rich,
		"created timestamps":          created,
		"start timestamps":            start,
		"empty":                       nil,
		"unpacked label refs":         append(append(pb(nil), syms...), pb(nil).bytes(5, pb(nil).varint(1, 1).varint(1, 2))...),
		"odd label refs":              append(append(pb(nil), syms...), pb(nil).bytes(5, pb(nil).packedVarints(1, 1, 2, 1))...),
		"ref out of range":            append(append(pb(nil), syms...), pb(nil).bytes(5, pb(nil).packedVarints(1, 1, 9))...),
		"symbols after series":        append(pb(nil).bytes(5, pb(nil).packedVarints(1, 1, 2)), syms...),
		"unknown fields":              append(append(pb(nil), syms...), pb(nil).varint(7, 1).fixed32(8, 1).group(9, pb(nil).varint(1, 1)).bytes(5, pb(nil).packedVarints(1, 1, 2).varint(6, 5))...),
		"wrong wire type":             pb(nil).varint(5, 1),
		"group at top":                pb(nil).group(9, pb(nil).varint(1, 1)),
		"end group":                   pb(nil).tag(9, protowire.EndGroupType),
		"field 0":                     pb(nil).tag(0, protowire.VarintType),
		"truncated":                   rich[:len(rich)-1],
		"invalid UTF-8 symbol":        pb(nil).str(4, "").str(4, "\xff"),
		"v1 body":                     pb(nil).bytes(1, pb(nil).bytes(1, label("__name__", "up"))),
		"series of empty refs":        append(append(pb(nil), syms...), bytes.Repeat([]byte{0x2a, 0x00}, 100)...),
		"histogram":                   append(append(pb(nil), syms...), pb(nil).bytes(5, pb(nil).packedVarints(1, 1, 2).bytes(3, pb(nil).varint(1, 3).bytes(11, pb(nil).varint(2, 2)).packedVarints(12, 2, 2)))...),
		"wrong type in series":        append(append(pb(nil), syms...), pb(nil).bytes(5, pb(nil).varint(2, 1))...),
		"wrong type in sample":        append(append(pb(nil), syms...), pb(nil).bytes(5, pb(nil).packedVarints(1, 1, 2).bytes(2, pb(nil).varint(1, 1)))...),
		"large tag truncated":         pb(nil).tag(5, protowire.BytesType).tag(protowire.MaxValidNumber, protowire.BytesType),
		"tag with overflowing number": append(pb(nil), 0xaa, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00),
	}
}

func TestDecodeV2MatchesReference(t *testing.T) {
	for name, body := range v2Corpus(t) {
		t.Run(name, func(t *testing.T) { checkDecodeV2MatchesReference(t, body) })
	}
}

// FuzzDecodeV2 holds the counting 2.0 decoder to Prometheus's generated Unmarshal on arbitrary bytes.
func FuzzDecodeV2(f *testing.F) {
	for _, body := range v2Corpus(f) {
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkDecodeV2MatchesReference(t, body) })
}

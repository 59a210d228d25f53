package remotewrite

import (
	"math/rand"
	"strings"
	"testing"

	"github.com/efficientgo/core/testutil"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// TestDecodeV1MatchesUnmarshalVT: on BenchmarkDecodeV1's request the hand-written decoder returns what
// vtprotobuf's UnmarshalVT does, so the benchmark compares the same work. (pkg/receive's decode tests hold both
// decoders to proto.Unmarshal on corner cases and fuzzed bodies.)
func TestDecodeV1MatchesUnmarshalVT(t *testing.T) {
	buf := benchWriteV1(t)
	var want prompb.WriteRequest
	testutil.Ok(t, want.UnmarshalVT(buf))
	got, err := DecodeV1(buf, nil)
	testutil.Ok(t, err)
	testutil.Equals(t, len(want.Timeseries), len(got))
	for i := range got {
		testutil.Assert(t, proto.Equal(want.Timeseries[i], got[i]), "series %d: got %v, want %v", i, got[i], want.Timeseries[i])
	}
}

// TestDecodeAliasBuf: with AliasBuf the series are the same, and their strings are buf's bytes (a change to buf
// shows through them), without it they are copies (it does not).
func TestDecodeAliasBuf(t *testing.T) {
	for _, alias := range []bool{false, true} {
		buf := benchWriteV1(t)
		got, err := DecodeV1(buf, &Options{AliasBuf: alias})
		testutil.Ok(t, err)
		var want prompb.WriteRequest
		testutil.Ok(t, want.UnmarshalVT(benchWriteV1(t)))
		testutil.Equals(t, len(want.Timeseries), len(got))
		for i := range got {
			testutil.Assert(t, proto.Equal(want.Timeseries[i], got[i]), "alias %v, series %d: got %v, want %v", alias, i, got[i], want.Timeseries[i])
		}
		name := strings.Clone(got[0].Labels[0].Name)
		for i := range buf {
			buf[i] = 'X' // every byte, whatever the name's offset
		}
		testutil.Equals(t, alias, got[0].Labels[0].Name != name && strings.Trim(got[0].Labels[0].Name, "X") == "",
			"alias %v: name %q after the buffer changed", alias, got[0].Labels[0].Name)
	}
}

// TestDecodeKeepFrames: each series' frame is its field of the body, which decodes on its own into the same
// series; a series decoded differently from its bytes (an empty label value dropped) has none.
func TestDecodeKeepFrames(t *testing.T) {
	req := &prompb.WriteRequest{Timeseries: []*prompb.TimeSeries{
		{Labels: []*labelpb.Label{{Name: "__name__", Value: "a"}, {Name: "job", Value: "x"}}, Samples: []*prompb.Sample{{Value: 1, Timestamp: 2}}},
		{Labels: []*labelpb.Label{{Name: "__name__", Value: "b"}, {Name: "empty", Value: ""}}, Samples: []*prompb.Sample{{Value: 3, Timestamp: 4}}},
		{Labels: []*labelpb.Label{{Name: "__name__", Value: "c"}}, Samples: []*prompb.Sample{{Value: 5, Timestamp: 6}}},
	}}
	buf, err := req.MarshalVT()
	testutil.Ok(t, err)
	for _, slabs := range []*Slabs{nil, {}} {
		o := &Options{KeepFrames: true, MaxLabels: 30, Slabs: slabs}
		got, err := DecodeV1(buf, o)
		testutil.Ok(t, err)
		frames := o.Frames()
		testutil.Equals(t, len(got), len(frames))
		testutil.Assert(t, frames[1] == nil, "a series with a dropped label has a frame")
		for _, i := range []int{0, 2} {
			one, err := DecodeV1(frames[i], nil)
			testutil.Ok(t, err)
			testutil.Equals(t, 1, len(one))
			testutil.Assert(t, proto.Equal(got[i], one[0]), "frame %d decodes to %v, want %v", i, one[0], got[i])
		}
	}
}

// TestDecodeMaxLabels: with MaxLabels, labels with an empty value are dropped and a series keeps its first
// MaxLabels+1 others (the metric name, when it comes later, in the last slot), LabelsOf telling how many it had;
// labels beyond are still checked (UTF-8). Random series of short and long labels, in every slab state, are
// held to that rule written out plainly.
func TestDecodeMaxLabels(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	names := []string{"__name__", "a", "b", "c", "d", "e", strings.Repeat("n", 130)}
	values := []string{"", "v", "w", strings.Repeat("x", 200), "é"}
	slabs := &Slabs{}
	for iter := range 3000 {
		maxLabels := 1 + rng.Intn(4)
		req := &prompb.WriteRequest{}
		for range 1 + rng.Intn(4) {
			ts := &prompb.TimeSeries{Samples: []*prompb.Sample{{Value: 1, Timestamp: 2}}}
			for range rng.Intn(10) {
				ts.Labels = append(ts.Labels, &labelpb.Label{Name: names[rng.Intn(len(names))], Value: values[rng.Intn(len(values))]})
			}
			req.Timeseries = append(req.Timeseries, ts)
		}
		buf, err := req.MarshalVT() // empty values left out
		testutil.Ok(t, err)
		if iter%4 >= 2 {
			buf = encodeUnchecked(t, req.Timeseries...) // empty values written
		}
		if iter%2 == 1 {
			slabs.Reset()
		}
		o := &Options{MaxLabels: maxLabels, Slabs: slabs, AliasBuf: iter%3 == 0}
		got, err := DecodeV1(buf, o)
		testutil.Ok(t, err)
		testutil.Equals(t, len(req.Timeseries), len(got))
		for i, ts := range req.Timeseries {
			var want []*labelpb.Label
			n := 0
			for _, l := range ts.Labels {
				if l.Value == "" {
					continue
				}
				n++
				switch {
				case len(want) <= maxLabels:
					want = append(want, l)
				case l.Name == "__name__":
					want[len(want)-1] = l
				}
			}
			testutil.Equals(t, len(want), len(got[i].Labels), "series %v", ts.Labels)
			for k := range want {
				testutil.Equals(t, want[k].Name, got[i].Labels[k].Name, "series %v label %d", ts.Labels, k)
				testutil.Equals(t, want[k].Value, got[i].Labels[k].Value, "series %v label %d", ts.Labels, k)
			}
			had, truncated := o.LabelsOf(got[i])
			testutil.Equals(t, n > maxLabels+1, truncated, "series %v", ts.Labels)
			if truncated {
				testutil.Equals(t, n, had)
			}
		}
	}
	// A label beyond the kept ones is still checked.
	ts := &prompb.TimeSeries{Labels: []*labelpb.Label{{Name: "a", Value: "1"}, {Name: "b", Value: "2"}, {Name: "c", Value: "3"}, {Name: "d", Value: "\xff"}}}
	buf := encodeUnchecked(t, ts)
	_, err := DecodeV1(buf, &Options{MaxLabels: 1})
	testutil.NotOk(t, err)
	testutil.Assert(t, strings.Contains(err.Error(), "not valid UTF-8"), err.Error())
}

// encodeUnchecked encodes a write request of series by hand: every label's name and value written, even
// empty, and not checked (proto's marshal refuses invalid UTF-8).
func encodeUnchecked(t testing.TB, series ...*prompb.TimeSeries) []byte {
	var req []byte
	for _, ts := range series {
		var sb []byte
		for _, l := range ts.Labels {
			var lb []byte
			lb = protowire.AppendTag(lb, 1, protowire.BytesType)
			lb = protowire.AppendString(lb, l.Name)
			lb = protowire.AppendTag(lb, 2, protowire.BytesType)
			lb = protowire.AppendString(lb, l.Value)
			sb = protowire.AppendTag(sb, 1, protowire.BytesType)
			sb = protowire.AppendBytes(sb, lb)
		}
		for _, smp := range ts.Samples {
			sample, err := smp.MarshalVT()
			testutil.Ok(t, err)
			sb = protowire.AppendTag(sb, 2, protowire.BytesType)
			sb = protowire.AppendBytes(sb, sample)
		}
		req = protowire.AppendTag(req, 1, protowire.BytesType)
		req = protowire.AppendBytes(req, sb)
	}
	return req
}

// TestDecodeKeepLabelRuns: a series' label run is the start of its bytes, and decodes on its own into the
// series' labels (so that equal runs are equal labels); a series has none exactly when its labels are not one
// run at its start or were not decoded as received (an empty value dropped, labels truncated, not valid UTF-8).
// Random series, in layouts no encoder writes too (value before name, long strings, a label after a sample).
func TestDecodeKeepLabelRuns(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	strs := []string{"__name__", "a", "b", "", "v", strings.Repeat("x", 200), "é", "\xff"}
	slabs := &Slabs{}
	for iter := range 3000 {
		var (
			body      []byte
			wantNoRun []bool
			starts    []int // offset of each series' message in body
		)
		maxLabels := []int{0, 30, 2}[iter%3]
		for range 1 + rng.Intn(4) {
			var (
				sb                                     []byte
				nLabels, nKept                         int
				scattered, dropped, invalid, truncated bool
				sampleSeen                             bool
			)
			for range rng.Intn(6) {
				if rng.Intn(5) == 0 { // a sample among the labels
					sb = protowire.AppendTag(sb, 2, protowire.BytesType)
					sb = protowire.AppendBytes(sb, []byte{0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f})
					sampleSeen = true
				}
				name, value := strs[rng.Intn(len(strs))], strs[rng.Intn(len(strs))]
				sb = appendLabelField(sb, name, value, rng.Intn(4) == 0)
				scattered = scattered || sampleSeen
				invalid = invalid || name == "\xff" || value == "\xff"
				if maxLabels > 0 && value == "" {
					// Dropped from its slot; beyond the kept labels it is only checked, as a kept one.
					dropped = dropped || nKept <= maxLabels
					continue
				}
				nLabels++
				if maxLabels == 0 || nKept <= maxLabels {
					nKept++
				}
			}
			truncated = nLabels != nKept
			sb = protowire.AppendTag(sb, 2, protowire.BytesType)
			sb = protowire.AppendBytes(sb, []byte{0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f})
			body = protowire.AppendTag(body, 1, protowire.BytesType)
			body = protowire.AppendVarint(body, uint64(len(sb)))
			starts = append(starts, len(body))
			body = append(body, sb...)
			wantNoRun = append(wantNoRun, scattered || dropped || invalid || truncated)
		}
		if iter%2 == 1 {
			slabs.Reset()
		}
		o := &Options{KeepLabelRuns: true, MarkInvalidUTF8: true, MaxLabels: maxLabels, Slabs: slabs, AliasBuf: iter%3 == 0}
		got, err := DecodeV1(body, o)
		testutil.Ok(t, err)
		runs := o.LabelRuns()
		testutil.Equals(t, len(got), len(runs))
		for i, run := range runs {
			testutil.Equals(t, wantNoRun[i], run == nil, "iteration %d, series %d: %q", iter, i, body[starts[i]:])
			if run == nil {
				continue
			}
			testutil.Assert(t, len(run) > 0 || len(got[i].Labels) == 0, "series %d: empty run for %v", i, got[i].Labels)
			testutil.Equals(t, string(body[starts[i]:starts[i]+len(run)]), string(run), "series %d: the run is not its start", i)
			alone, err := DecodeV1(protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), run), &Options{MaxLabels: maxLabels})
			testutil.Ok(t, err)
			testutil.Equals(t, 1, len(alone))
			testutil.Equals(t, len(got[i].Labels), len(alone[0].Labels), "series %d", i)
			for k, l := range got[i].Labels {
				testutil.Equals(t, l.Name, alone[0].Labels[k].Name)
				testutil.Equals(t, l.Value, alone[0].Labels[k].Value)
			}
		}
	}
}

// TestDecodeReusedSlabs: slabs are not cleared between requests, so the decoder must write every element it
// hands out whole. Random requests (exemplars, histograms, labels dropped for empty values, truncated at
// MaxLabels) decoded one after another into the same slabs, Reset between them or not, each decode exactly as
// into fresh memory (proto.Equal, so a field left over from an earlier request shows); and the slabs refer to
// nothing beyond what the last request uses, and to nothing at all once Reset after a request larger than
// maxPinnedBody.
func TestDecodeReusedSlabs(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	names := []string{"__name__", "a", "b", "c", "job", "instance"}
	values := []string{"", "v", "w", strings.Repeat("x", 200)}
	randomRequest := func(series int) *prompb.WriteRequest {
		req := &prompb.WriteRequest{}
		for range series {
			ts := &prompb.TimeSeries{}
			for range rng.Intn(8) {
				ts.Labels = append(ts.Labels, &labelpb.Label{Name: names[rng.Intn(len(names))], Value: values[rng.Intn(len(values))]})
			}
			for range rng.Intn(3) {
				// Zero values and timestamps too: fields left out, which the decoder must not take from the slab.
				ts.Samples = append(ts.Samples, &prompb.Sample{Value: float64(rng.Intn(2)) * rng.Float64(), Timestamp: rng.Int63n(2) * rng.Int63()})
			}
			if rng.Intn(4) == 0 {
				ts.Exemplars = append(ts.Exemplars, &prompb.Exemplar{Labels: []*labelpb.Label{{Name: "trace_id", Value: "t"}}, Value: 1, Timestamp: 5})
			}
			if rng.Intn(5) == 0 {
				ts.Histograms = append(ts.Histograms, &prompb.Histogram{Count: &prompb.Histogram_CountInt{CountInt: 3}, Sum: 2, Schema: 1, Timestamp: 7})
			}
			req.Timeseries = append(req.Timeseries, ts)
		}
		return req
	}
	// pinned counts the elements of s that refer to anything: in use or not, they must be within the lengths.
	nonZero := func(s *Slabs) (inUse, beyond int) {
		count := func(n int, zero func(i int) bool, length int) {
			for i := range n {
				if !zero(i) {
					if i < length {
						inUse++
					} else {
						beyond++
					}
				}
			}
		}
		series, labels, samples := s.series[:cap(s.series)], s.labels[:cap(s.labels)], s.samples[:cap(s.samples)]
		count(len(series), func(i int) bool { return proto.Equal(&series[i], &prompb.TimeSeries{}) && series[i].Labels == nil }, len(s.series))
		count(len(labels), func(i int) bool { return labels[i].Name == "" && labels[i].Value == "" }, len(s.labels))
		count(len(samples), func(i int) bool { return samples[i].Value == 0 && samples[i].Timestamp == 0 }, len(s.samples))
		lp, sp, tp := s.labelPtrs[:cap(s.labelPtrs)], s.samplePtrs[:cap(s.samplePtrs)], s.seriesPtrs[:cap(s.seriesPtrs)]
		count(len(lp), func(i int) bool { return lp[i] == nil }, len(s.labelPtrs))
		count(len(sp), func(i int) bool { return sp[i] == nil }, len(s.samplePtrs))
		count(len(tp), func(i int) bool { return tp[i] == nil }, len(s.seriesPtrs))
		return inUse, beyond
	}
	slabs := &Slabs{}
	for iter := range 2000 {
		req := randomRequest(1 + rng.Intn(12))
		buf, err := req.MarshalVT()
		testutil.Ok(t, err)
		if iter%3 == 0 {
			buf = encodeUnchecked(t, req.Timeseries...) // empty values written: dropped (MaxLabels) or kept
			for _, ts := range req.Timeseries {
				ts.Exemplars, ts.Histograms = nil, nil // encodeUnchecked writes labels and samples only
			}
		}
		maxLabels := 0
		if iter%2 == 0 {
			maxLabels = 1 + rng.Intn(4)
		}
		want, err := DecodeV1(buf, &Options{MaxLabels: maxLabels})
		testutil.Ok(t, err)
		if iter%4 != 3 {
			slabs.Reset()
		}
		got, err := DecodeV1(buf, &Options{MaxLabels: maxLabels, Slabs: slabs, AliasBuf: iter%5 == 0, KeepFrames: true, KeepLabelRuns: true})
		testutil.Ok(t, err)
		testutil.Equals(t, len(want), len(got))
		for i := range want {
			testutil.Assert(t, proto.Equal(want[i], got[i]), "iteration %d, series %d: got %v, want %v", iter, i, got[i], want[i])
		}
		_, beyond := nonZero(slabs)
		testutil.Equals(t, 0, beyond, "iteration %d: slab elements beyond the request's", iter)
	}

	// A request larger than maxPinnedBody is let go at Reset; a smaller one is kept until overwritten.
	for _, tc := range []struct {
		series int
		value  string
		pinned bool
	}{
		{series: 10, value: "v", pinned: true},
		{series: 10, value: strings.Repeat("x", maxPinnedBody/10+1), pinned: false},
	} {
		req := &prompb.WriteRequest{}
		for range tc.series {
			req.Timeseries = append(req.Timeseries, &prompb.TimeSeries{Labels: []*labelpb.Label{{Name: "__name__", Value: tc.value}},
				Samples: []*prompb.Sample{{Value: 1, Timestamp: 1}}})
		}
		buf, err := req.MarshalVT()
		testutil.Ok(t, err)
		slabs := &Slabs{}
		_, err = DecodeV1(buf, &Options{Slabs: slabs})
		testutil.Ok(t, err)
		slabs.Reset()
		inUse, beyond := nonZero(slabs)
		testutil.Equals(t, 0, beyond)
		testutil.Equals(t, tc.pinned, inUse > 0, "body of %d bytes", len(buf))
	}
}

// TestDecodeSkipLabels: a series skipped (Options.SkipLabels) by its run decodes as it does otherwise but for
// its labels (none), with the same run and frame, and DecodeLabelRun gives its labels back from the run; the runs
// SkipLabels is given are those decoding finds, for every series that has one. Random series in every layout
// TestDecodeKeepLabelRuns uses (a label after a sample, value before name, long strings, empty values, invalid
// UTF-8, truncation), exemplars and histograms, a random subset of those with a run skipped, into reused slabs
// that then hold no label element beyond the labels decoded (which would keep an older request alive).
func TestDecodeSkipLabels(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	strs := []string{"__name__", "a", "b", "", "v", strings.Repeat("x", 200), "é", "\xff"}
	slabs := &Slabs{}
	for iter := range 3000 {
		var body []byte
		for range 1 + rng.Intn(5) {
			var sb []byte
			for range rng.Intn(6) {
				if rng.Intn(6) == 0 { // a sample among the labels
					sb = protowire.AppendBytes(protowire.AppendTag(sb, 2, protowire.BytesType), []byte{0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f})
				}
				name, value := strs[rng.Intn(len(strs))], strs[rng.Intn(len(strs))]
				sb = appendLabelField(sb, name, value, rng.Intn(4) == 0)
			}
			for range rng.Intn(3) {
				smp, err := (&prompb.Sample{Value: rng.Float64(), Timestamp: rng.Int63n(1000)}).MarshalVT()
				testutil.Ok(t, err)
				sb = protowire.AppendBytes(protowire.AppendTag(sb, 2, protowire.BytesType), smp)
			}
			if rng.Intn(4) == 0 {
				ex, err := (&prompb.Exemplar{Labels: []*labelpb.Label{{Name: "trace_id", Value: "t"}}, Value: 1, Timestamp: 5}).MarshalVT()
				testutil.Ok(t, err)
				sb = protowire.AppendBytes(protowire.AppendTag(sb, 3, protowire.BytesType), ex)
			}
			if rng.Intn(5) == 0 {
				h, err := (&prompb.Histogram{Count: &prompb.Histogram_CountInt{CountInt: 3}, Sum: 2, Schema: 1, Timestamp: 7}).MarshalVT()
				testutil.Ok(t, err)
				sb = protowire.AppendBytes(protowire.AppendTag(sb, 4, protowire.BytesType), h)
			}
			if rng.Intn(8) == 0 { // an unknown field
				sb = protowire.AppendVarint(protowire.AppendTag(sb, 9, protowire.VarintType), 1)
			}
			body = protowire.AppendBytes(protowire.AppendTag(body, 1, protowire.BytesType), sb)
		}
		maxLabels := []int{0, 30, 2}[iter%3]
		wo := &Options{KeepLabelRuns: true, KeepFrames: true, MarkInvalidUTF8: true, MaxLabels: maxLabels}
		want, err := DecodeV1(body, wo)
		testutil.Ok(t, err)
		wantRuns, wantFrames := wo.LabelRuns(), wo.Frames()
		skip := make([]bool, len(want))
		for i, run := range wantRuns {
			// As a caller would: a run decoded before, of labels validation left unchanged (no empty value).
			skip[i] = run != nil && rng.Intn(3) != 0
			for _, l := range want[i].Labels {
				skip[i] = skip[i] && l.Value != ""
			}
		}
		if iter%2 == 1 {
			slabs.Reset()
		}
		asked := 0
		o := &Options{KeepFrames: true, MarkInvalidUTF8: true, MaxLabels: maxLabels, Slabs: slabs, AliasBuf: iter%3 == 0,
			SkipLabels: func(runs [][]byte) []bool {
				asked++
				testutil.Equals(t, len(want), len(runs))
				for i, run := range runs {
					if wantRuns[i] != nil {
						testutil.Equals(t, string(wantRuns[i]), string(run), "iteration %d, series %d: the run given", iter, i)
					}
				}
				return skip
			}}
		got, err := DecodeV1(body, o)
		testutil.Ok(t, err)
		testutil.Equals(t, 1, asked)
		testutil.Equals(t, len(want), len(got))
		for i := range want {
			testutil.Equals(t, string(wantRuns[i]), string(o.LabelRuns()[i]), "iteration %d, series %d: run", iter, i)
			testutil.Equals(t, string(wantFrames[i]), string(o.Frames()[i]), "iteration %d, series %d: frame", iter, i)
			w := proto.Clone(want[i]).(*prompb.TimeSeries)
			if skip[i] {
				testutil.Equals(t, 0, len(got[i].Labels), "iteration %d, series %d: skipped, yet labels", iter, i)
				ls, err := DecodeLabelRun(o.LabelRuns()[i])
				testutil.Ok(t, err)
				testutil.Equals(t, len(w.Labels), len(ls), "iteration %d, series %d: %v from %q, want %v", iter, i, ls, o.LabelRuns()[i], w.Labels)
				for k, l := range w.Labels {
					testutil.Equals(t, l.Name, ls[k].Name)
					testutil.Equals(t, l.Value, ls[k].Value)
				}
				w.Labels = nil
			}
			testutil.Assert(t, proto.Equal(w, got[i]), "iteration %d, series %d: got %v, want %v", iter, i, got[i], w)
		}
		full := &Slabs{}
		_, err = DecodeV1(body, &Options{MarkInvalidUTF8: true, MaxLabels: maxLabels, Slabs: full})
		testutil.Ok(t, err)
		skipped := 0
		for i := range want {
			if skip[i] {
				skipped += len(want[i].Labels)
			}
		}
		testutil.Equals(t, len(full.labels)-skipped, len(slabs.labels), "iteration %d: label slab", iter)
		beyond := slabs.labels[len(slabs.labels):cap(slabs.labels)]
		for k := range beyond {
			testutil.Assert(t, beyond[k].Name == "" && beyond[k].Value == "", "iteration %d: a label element beyond the request's", iter)
		}
	}
}

// appendLabelField appends a label field (a series' field 1) of name and value to b, the value first when
// valueFirst (a layout no encoder writes, which proto.Unmarshal accepts).
func appendLabelField(b []byte, name, value string, valueFirst bool) []byte {
	var lb []byte
	if valueFirst {
		lb = protowire.AppendString(protowire.AppendTag(lb, 2, protowire.BytesType), value)
		lb = protowire.AppendString(protowire.AppendTag(lb, 1, protowire.BytesType), name)
	} else {
		lb = protowire.AppendString(protowire.AppendTag(lb, 1, protowire.BytesType), name)
		lb = protowire.AppendString(protowire.AppendTag(lb, 2, protowire.BytesType), value)
	}
	return protowire.AppendBytes(protowire.AppendTag(b, 1, protowire.BytesType), lb)
}

package remotewrite

import (
	"strings"
	"testing"

	"github.com/efficientgo/core/testutil"
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

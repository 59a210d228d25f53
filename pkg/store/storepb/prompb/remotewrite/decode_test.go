package remotewrite

import (
	"testing"

	"github.com/efficientgo/core/testutil"
	"google.golang.org/protobuf/proto"

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

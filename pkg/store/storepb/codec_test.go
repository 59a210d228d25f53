package storepb

import (
	"testing"

	"github.com/efficientgo/core/testutil"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// TestVTCodec: the "proto" codec gRPC uses is the vtprotobuf one, and what it writes the reflection-based
// protobuf runtime reads back identically, and the other way round, unknown fields included.
func TestVTCodec(t *testing.T) {
	c, ok := encoding.GetCodecV2("proto").(*vtCodec)
	testutil.Assert(t, ok, "the registered proto codec is %T", encoding.GetCodecV2("proto"))

	msgs := []proto.Message{
		&WriteRequest{Tenant: "t", Replica: 2, Timeseries: []*prompb.TimeSeries{{
			Labels:     []*labelpb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "é"}},
			Samples:    []*prompb.Sample{{Timestamp: 1, Value: 2.5}, {Timestamp: 2, Value: -1}},
			Histograms: []*prompb.Histogram{{Count: &prompb.Histogram_CountInt{CountInt: 3}, Sum: 1, Schema: -2, PositiveDeltas: []int64{1, -1}, Timestamp: 3}},
		}}},
		&SeriesResponse{Result: &SeriesResponse_Series{Series: &Series{Labels: []*labelpb.Label{{Name: "a", Value: "b"}}, Chunks: []*AggrChunk{{MinTime: 1, MaxTime: 2, Raw: &Chunk{Type: Chunk_XOR, Data: []byte{1, 2, 3}}}}}}},
		&SeriesResponse{Result: &SeriesResponse_Batch{Batch: &SeriesBatch{Series: []*Series{{Labels: []*labelpb.Label{{Name: "a", Value: "b"}}}}}}},
		&SeriesRequest{MinTime: -5, MaxTime: 10, Matchers: []*LabelMatcher{{Type: LabelMatcher_RE, Name: "a", Value: ".+"}}, ResponseBatchSize: 64, PartialResponseStrategy: PartialResponseStrategy_ABORT},
	}
	for _, m := range msgs {
		data, err := c.Marshal(m)
		testutil.Ok(t, err)
		got := m.ProtoReflect().New().Interface()
		testutil.Ok(t, proto.Unmarshal(data.Materialize(), got))
		testutil.Assert(t, proto.Equal(m, got), "%T: vt bytes read back differently", m)

		ref, err := proto.Marshal(m)
		testutil.Ok(t, err)
		// An unknown field (number 999) survives too.
		ref = protowire.AppendBytes(protowire.AppendTag(ref, 999, protowire.BytesType), []byte("future"))
		back := m.ProtoReflect().New().Interface()
		testutil.Ok(t, c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(ref)}, back))
		again, err := c.Marshal(back)
		testutil.Ok(t, err)
		want := m.ProtoReflect().New().Interface()
		testutil.Ok(t, proto.Unmarshal(ref, want))
		testutil.Assert(t, proto.Equal(want, back), "%T: reference bytes read differently", m)
		testutil.Equals(t, len(ref), again.Len(), "%T: the unknown field was lost", m)
	}
}

// inPlaceMsg records what the codec hands an InPlaceUnmarshaler.
type inPlaceMsg struct {
	data    []byte
	release func()
}

func (m *inPlaceMsg) UnmarshalInPlace(data []byte, release func()) error {
	m.data, m.release = data, release
	return nil
}

// TestVTCodecInPlace: a message that decodes in place gets the whole message in one buffer (even when gRPC
// received it in several), which stays its own until it releases it.
func TestVTCodecInPlace(t *testing.T) {
	c, ok := encoding.GetCodecV2("proto").(*vtCodec)
	testutil.Assert(t, ok, "the registered proto codec is %T", encoding.GetCodecV2("proto"))
	want := make([]byte, 3<<10)
	for i := range want {
		want[i] = byte(i)
	}
	// Received in three pieces, the last of which the codec's caller frees once Unmarshal returns.
	in := mem.BufferSlice{mem.SliceBuffer(want[:1000]), mem.SliceBuffer(want[1000:2000]), mem.SliceBuffer(want[2000:])}
	var m inPlaceMsg
	testutil.Ok(t, c.Unmarshal(in, &m))
	in.Free()
	testutil.Equals(t, want, m.data)
	testutil.Assert(t, m.release != nil, "no release")
	m.release()
}

// TestUnclearedPool: every buffer handed out holds the length asked for, a buffer given back is handed out again
// for any length its class holds, and sizes outside the classes are served but not kept.
func TestUnclearedPool(t *testing.T) {
	p := &unclearedPool{}
	for _, n := range []int{0, 1, 4095, 4096, 4097, 1 << 20, 1<<20 + 1, 40 << 20} {
		b := p.Get(n)
		testutil.Equals(t, n, len(*b))
		testutil.Assert(t, cap(*b) >= n, "cap %d < %d", cap(*b), n)
		p.Put(b)
	}
	b := p.Get(3 << 20) // class 4 MiB
	(*b)[0] = 42
	p.Put(b)
	for again := p.Get(2<<20 + 1); ; again = p.Get(2<<20 + 1) { // sync.Pool may drop it; a new one is fine too
		testutil.Equals(t, 2<<20+1, len(*again))
		testutil.Assert(t, cap(*again) >= 4<<20, "class 4 MiB buffer of cap %d", cap(*again))
		if (*again)[0] == 42 {
			break // the same buffer, not cleared
		}
		p.Put(b)
		b = again
		(*b)[0] = 42
		p.Put(b)
	}
}

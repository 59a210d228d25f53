package receive

import (
	"context"
	"strings"
	"testing"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
)

// forwardCorpus are forwarded write requests: every field set, and malformed ones.
func forwardCorpus(t testing.TB) map[string][]byte {
	t.Helper()
	full := &storepb.WriteRequest{
		Tenant:  "team-a",
		Replica: 3,
		Timeseries: []*prompb.TimeSeries{
			{
				Labels:    []*labelpb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}},
				Samples:   []*prompb.Sample{{Value: 1, Timestamp: 10}, {Value: 2, Timestamp: 20}},
				Exemplars: []*prompb.Exemplar{{Labels: []*labelpb.Label{{Name: "trace_id", Value: "x"}}, Value: 1, Timestamp: 10}},
			},
			{
				Labels:     []*labelpb.Label{{Name: "__name__", Value: "h"}},
				Histograms: []*prompb.Histogram{{Count: &prompb.Histogram_CountInt{CountInt: 3}, Sum: 1.5, Schema: 1, Timestamp: 30, PositiveDeltas: []int64{1, 2}, PositiveSpans: []*prompb.BucketSpan{{Offset: 0, Length: 2}}}},
			},
			{Labels: []*labelpb.Label{{Name: "__name__", Value: "bad\xff"}}, Samples: []*prompb.Sample{{Value: 1, Timestamp: 5}}},
		},
		Metadata: []*prompb.MetricMetadata{{MetricFamilyName: "up", Help: "is it up", Type: prompb.MetricMetadata_GAUGE}},
	}
	marshal := func(m *storepb.WriteRequest) []byte {
		b, err := m.MarshalVT()
		testutil.Ok(t, err)
		return b
	}
	fullB := marshal(full)
	return map[string][]byte{
		"full":             fullB,
		"empty":            nil,
		"tenant only":      marshal(&storepb.WriteRequest{Tenant: "b"}),
		"metadata only":    marshal(&storepb.WriteRequest{Tenant: "b", Metadata: full.Metadata}),
		"tenant data":      marshal(&storepb.WriteRequest{TimeseriesTenantData: []*storepb.TimeSeriesTenantTuple{{Tenant: "x"}}}),
		"unknown field":    protowire.AppendBytes(protowire.AppendTag(fullB, 99, protowire.BytesType), []byte("zz")),
		"truncated":        fullB[:len(fullB)-3],
		"tenant as varint": protowire.AppendVarint(protowire.AppendTag(nil, fwdFieldTenant, protowire.VarintType), 7),
		"replica as bytes": protowire.AppendBytes(protowire.AppendTag(nil, fwdFieldReplica, protowire.BytesType), []byte("r")),
		"series as varint": protowire.AppendVarint(protowire.AppendTag(nil, fwdFieldTimeseries, protowire.VarintType), 1),
		"bad series":       protowire.AppendBytes(protowire.AppendTag(nil, fwdFieldTimeseries, protowire.BytesType), []byte{0x0a, 0x05, 0x0a}),
	}
}

// dirtyForward is a decoded request left in w, as a pooled forwardedWrite holds one before put resets it.
func dirtyForward(t testing.TB, w *forwardedWrite) {
	t.Helper()
	req := manySeries(50, 7)
	req.Tenant = "dirty"
	req.Metadata = []*prompb.MetricMetadata{{MetricFamilyName: "dirty"}}
	b, err := req.MarshalVT()
	testutil.Ok(t, err)
	testutil.Ok(t, w.decode(b))
}

// checkForwardedMatchesProto holds forwardedWrite to proto.Unmarshal into storepb.WriteRequest, unknown fields
// discarded: same bodies accepted and the same request, except bodies that would decode into far more memory
// than their size, which it refuses on purpose, and label values that are not valid UTF-8, which it leaves to
// the ingester's validation (the generated UnmarshalVT the ingester used before did not check them either, but
// let some invalid protobuf pass, and refused some valid bodies: a known field with another wire type). It
// decodes into a forwardedWrite that held another request and went through the pool's reset, as in the ingester.
func checkForwardedMatchesProto(t *testing.T, body []byte) {
	t.Helper()
	var want storepb.WriteRequest
	wantErr := proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, &want)
	if wantErr != nil && strings.Contains(wantErr.Error(), "UTF-8") {
		return
	}

	w := &forwardedWrite{}
	dirtyForward(t, w)
	newForwardedPool(1).put(w)
	err := w.decode(body)
	if wantErr != nil {
		testutil.NotOk(t, err, "proto.Unmarshal refused the body (%v); forwardedWrite must too", wantErr)
		return
	}
	if errors.Is(err, remotewrite.ErrDecodeTooExpensive) {
		return
	}
	testutil.Ok(t, err, "proto.Unmarshal accepted the body")
	testutil.Equals(t, want.Tenant, w.tenant)
	testutil.Equals(t, len(want.TimeseriesTenantData) > 0, w.tenantData)
	testutil.Equals(t, len(want.Timeseries), len(w.series))
	for k := range w.series {
		testutil.Assert(t, proto.Equal(want.Timeseries[k], w.series[k]), "series %d: got %v, want %v", k, w.series[k], want.Timeseries[k])
	}
	testutil.Equals(t, len(want.Metadata), len(w.metadata))
	for k := range w.metadata {
		discardUnknown(w.metadata[k].ProtoReflect())
		testutil.Assert(t, proto.Equal(want.Metadata[k], w.metadata[k]), "metadata %d: got %v, want %v", k, w.metadata[k], want.Metadata[k])
	}
}

func TestForwardedWriteMatchesProto(t *testing.T) {
	for name, body := range forwardCorpus(t) {
		t.Run(name, func(t *testing.T) { checkForwardedMatchesProto(t, body) })
	}
}

func FuzzForwardedWrite(f *testing.F) {
	for _, body := range forwardCorpus(f) {
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkForwardedMatchesProto(t, body) })
}

// TestForwardPoolPutForgetsTheRequest: a pooled forwardedWrite keeps no string, series or metadata of the
// request it held (a kept string would keep a window of that request alive, and a stale series could be read).
func TestForwardPoolPutForgetsTheRequest(t *testing.T) {
	w := &forwardedWrite{}
	dirtyForward(t, w)
	testutil.Equals(t, 50, len(w.series))
	newForwardedPool(1).put(w)
	testutil.Equals(t, "", w.tenant)
	testutil.Equals(t, 0, len(w.series))
	testutil.Equals(t, 0, len(w.metadata))
	for _, m := range w.metadata[:cap(w.metadata)] {
		testutil.Assert(t, m == nil, "metadata kept")
	}
	w2 := &forwardedWrite{}
	testutil.Ok(t, w2.decode(nil))
	testutil.Equals(t, 0, len(w2.series))
}

// discardUnknown drops the unknown fields of m and of every message in it.
func discardUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Message() == nil || fd.IsMap():
		case fd.IsList():
			for k := 0; k < v.List().Len(); k++ {
				discardUnknown(v.List().Get(k).Message())
			}
		default:
			discardUnknown(v.Message())
		}
		return true
	})
}

// TestForwardedWriteMarksInvalidUTF8: a label that is not valid UTF-8 marks the request (the ingester then
// checks each series and drops that one alone) instead of failing it; a valid request is not marked, so its
// series are not checked again.
func TestForwardedWriteMarksInvalidUTF8(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  bool
	}{{value: "ok", want: false}, {value: "bad\xff", want: true}, {value: string(make([]byte, 200)) + "\xfe", want: true}} {
		req := manySeries(3, 1)
		req.Tenant = "a"
		req.Timeseries[1].Labels = append(req.Timeseries[1].Labels, &labelpb.Label{Name: "zz", Value: tc.value})
		b, err := req.MarshalVT()
		testutil.Ok(t, err)
		w := &forwardedWrite{}
		testutil.Ok(t, w.decode(b))
		testutil.Equals(t, tc.want, w.invalidUTF8, "value %q", tc.value)
		testutil.Equals(t, 3, len(w.series))
		testutil.Equals(t, tc.value, w.series[1].Labels[len(w.series[1].Labels)-1].GetValue())
	}
}

// TestRemoteWriteHandlerMalformedIsInvalidArgument: a malformed forward request is the client's error
// (InvalidArgument, which a distributor answers 400), not Internal (which it would take for the ingester's
// failure, its client retrying the request for ever); nothing is written.
func TestRemoteWriteHandlerMalformedIsInvalidArgument(t *testing.T) {
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry())
	defer ing.Close()
	body := forwardCorpus(t)["truncated"]
	_, err := remoteWriteHandler(ing, context.Background(), func(v any) error { return v.(*forwardedWrite).UnmarshalVT(body) }, nil)
	testutil.Equals(t, codes.InvalidArgument, status.Code(err), "error: %v", err)
	testutil.Equals(t, 0, len(ing.Tenants()))
}

package metadatapb_test

import (
	"testing"

	"github.com/efficientgo/core/testutil"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/metadatapb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

func tagBytes(b []byte, num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

func tagString(b []byte, num protowire.Number, v string) []byte { return tagBytes(b, num, []byte(v)) }

func tagVarint(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

// TestMetadataWireCompatibleWithThanos: the Metadata API's method path and messages are Thanos's
// (pkg/metadata/metadatapb/rpc.proto): reference encodings built with protowire from Thanos's field numbers decode
// into the generated messages, and the messages encode to the same bytes.
func TestMetadataWireCompatibleWithThanos(t *testing.T) {
	testutil.Equals(t, "/thanos.Metadata/MetricMetadata", metadatapb.Metadata_MetricMetadata_FullMethodName)

	// MetricMetadataRequest{metric=1, limit=2, partial_response_strategy=3}.
	ref := tagVarint(tagVarint(tagString(nil, 1, "up"), 2, 10), 3, 1)
	req := &metadatapb.MetricMetadataRequest{}
	testutil.Ok(t, proto.Unmarshal(ref, req))
	testutil.Equals(t, "up", req.Metric)
	testutil.Equals(t, int32(10), req.Limit)
	testutil.Equals(t, storepb.PartialResponseStrategy_ABORT, req.PartialResponseStrategy)

	// MetricMetadataResponse{metadata=1: MetricMetadata{metadata=1: map<string, MetricMetadataEntry{metas=2:
	// Meta{type=1, help=2, unit=3}}>}}, and {warning=2}.
	meta := tagString(tagString(tagString(nil, 1, "counter"), 2, "Requests."), 3, "seconds")
	entry := tagBytes(nil, 2, meta)
	mapEntry := tagBytes(tagString(nil, 1, "http_requests_total"), 2, entry)
	res := tagBytes(nil, 1, tagBytes(nil, 1, mapEntry))
	msg := &metadatapb.MetricMetadataResponse{Result: &metadatapb.MetricMetadataResponse_Metadata{Metadata: &metadatapb.MetricMetadata{
		Metadata: map[string]*metadatapb.MetricMetadataEntry{"http_requests_total": {Metas: []*metadatapb.Meta{{Type: "counter", Help: "Requests.", Unit: "seconds"}}}},
	}}}
	got, err := proto.Marshal(msg)
	testutil.Ok(t, err)
	testutil.Equals(t, res, got)
	dec := &metadatapb.MetricMetadataResponse{}
	testutil.Ok(t, proto.Unmarshal(res, dec))
	testutil.Assert(t, proto.Equal(msg, dec), "decoded %v", dec)

	warn := &metadatapb.MetricMetadataResponse{}
	testutil.Ok(t, proto.Unmarshal(tagString(nil, 2, "partial"), warn))
	testutil.Equals(t, "partial", warn.GetWarning())
}

// TestWriteRequestMetadataField: the forward write's metadata is field 5, which Thanos's WriteRequest does not use
// (1 timeseries, 2 tenant, 3 replica, 4 timeseriesTenantData): a Thanos receiver skips it as unknown, and its
// entries are prometheus_copy.MetricMetadata with Prometheus's field numbers.
func TestWriteRequestMetadataField(t *testing.T) {
	req := &storepb.WriteRequest{Tenant: "a", Metadata: []*prompb.MetricMetadata{{
		Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "x_total", Help: "X.", Unit: "bytes",
	}}}
	got, err := proto.Marshal(req)
	testutil.Ok(t, err)
	md := tagString(tagString(tagString(tagVarint(nil, 1, 1), 2, "x_total"), 4, "X."), 5, "bytes")
	testutil.Equals(t, tagBytes(tagString(nil, 2, "a"), 5, md), got)
	vt, err := req.MarshalVT()
	testutil.Ok(t, err)
	testutil.Equals(t, got, vt)
}

package remotewrite

import (
	"fmt"
	"testing"

	"github.com/efficientgo/core/testutil"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// benchWriteV1 is a realistic remote write 1.0 body (decompressed): 2000 series × 15 labels, one sample each.
func benchWriteV1(tb testing.TB) []byte {
	names := []string{"__name__", "cluster", "container", "endpoint", "instance", "job", "namespace", "node", "pod", "prometheus", "region", "service", "team", "uid", "zone"}
	req := &prompb.WriteRequest{}
	for i := range 2000 {
		ts := &prompb.TimeSeries{Samples: []*prompb.Sample{{Value: float64(i), Timestamp: 1_700_000_000_000}}}
		for j, n := range names {
			v := fmt.Sprintf("%s-value-%d", n, i%(j*7+3))
			if j == 0 {
				v = fmt.Sprintf("metric_name_%d_total", i%50)
			}
			ts.Labels = append(ts.Labels, &labelpb.Label{Name: n, Value: v})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	buf, err := req.MarshalVT()
	testutil.Ok(tb, err)
	return buf
}

// BenchmarkDecodeV1 compares the hand-written 1.0 decoder with vtprotobuf's generated UnmarshalVT (the code
// scripts/genproto.sh generates: features marshal+unmarshal+size, so neither unmarshal_unsafe nor pool).
func BenchmarkDecodeV1(b *testing.B) {
	buf := benchWriteV1(b)
	b.Run("hand-written", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			series, err := DecodeV1(buf, nil)
			if err != nil || len(series) != 2000 {
				b.Fatalf("decode: %d series, %v", len(series), err)
			}
		}
	})
	b.Run("hand-written-reused-slabs", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		o := &Options{Slabs: &Slabs{}}
		for b.Loop() {
			series, err := DecodeV1(buf, o)
			if err != nil || len(series) != 2000 {
				b.Fatalf("decode: %d series, %v", len(series), err)
			}
		}
	})
	b.Run("ingester", func(b *testing.B) { // as an ingester decodes a forwarded write
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		o := &Options{Slabs: &Slabs{}, MarkInvalidUTF8: true, AliasBuf: true, ThanosWriteRequest: true}
		for b.Loop() {
			o.Slabs.Reset()
			series, err := DecodeV1(buf, o)
			if err != nil || len(series) != 2000 || len(o.InvalidUTF8()) != 0 {
				b.Fatalf("decode: %d series, %v", len(series), err)
			}
		}
	})
	b.Run("distributor", func(b *testing.B) { // as a distributor decodes a remote write (Mimir's 30 labels at most)
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		o := &Options{Slabs: &Slabs{}, MaxLabels: 30, AliasBuf: true, KeepFrames: true}
		for b.Loop() {
			o.Slabs.Reset()
			series, err := DecodeV1(buf, o)
			if err != nil || len(series) != 2000 || len(o.Frames()) != 2000 {
				b.Fatalf("decode: %d series, %v", len(series), err)
			}
		}
	})
	b.Run("vtproto", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			var req prompb.WriteRequest
			if err := req.UnmarshalVT(buf); err != nil || len(req.Timeseries) != 2000 {
				b.Fatalf("decode: %d series, %v", len(req.Timeseries), err)
			}
		}
	})
}

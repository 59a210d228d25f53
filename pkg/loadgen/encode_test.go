package loadgen

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage/remote"
)

// TestEncodeRequest decodes encoded requests with Prometheus's own decoder and compares them with the series
// they should carry.
func TestEncodeRequest(t *testing.T) {
	const ts = int64(1_790_000_000_123)
	for _, tc := range []struct {
		name                                string
		protocol                            Protocol
		series, labelsPerSeries, perRequest int
		round                               int
	}{
		{name: "v1 one request", protocol: ProtocolV1, series: 50, labelsPerSeries: 10, perRequest: 50},
		{name: "v1 uneven split", protocol: ProtocolV1, series: 1001, labelsPerSeries: 20, perRequest: 300, round: 7},
		{name: "v2 one request", protocol: ProtocolV2, series: 50, labelsPerSeries: 10, perRequest: 50},
		{name: "v2 uneven split", protocol: ProtocolV2, series: 1001, labelsPerSeries: 20, perRequest: 300, round: 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			batches := newBatches(tc.protocol, tc.series, tc.labelsPerSeries, tc.perRequest)
			testutil.Equals(t, (tc.series+tc.perRequest-1)/tc.perRequest, len(batches))
			order := sendOrder(tc.series)
			gen := newSeriesGen(tc.labelsPerSeries)
			var enc encoder
			next := 0
			for _, b := range batches {
				got := decode(t, tc.protocol, enc.encode(b, tc.round, ts))
				testutil.Equals(t, b.len(), len(got))
				for k, s := range got {
					id := order[next]
					next++
					testutil.Equals(t, gen.labels(int(id)).String(), s.labels.String())
					testutil.Equals(t, ts, s.ts)
					testutil.Equals(t, float64(tc.round+1)*(1+float64(id%16)/4), s.value, "series %d", k)
				}
			}
			testutil.Equals(t, tc.series, next)
		})
	}
}

// decodedSample is one series of a decoded request with its only sample.
type decodedSample struct {
	labels labels.Labels
	ts     int64
	value  float64
}

// decode decodes a snappy-compressed request with Prometheus's remote.DecodeWriteRequest or
// DecodeWriteV2Request and checks what every well-formed loadgen request must be: one float sample per series,
// labels in order and valid (the raw order, before Prometheus sorts them), v2 symbols starting with "".
func decode(t testing.TB, p Protocol, compressed []byte) []decodedSample {
	t.Helper()
	var out []decodedSample
	sb := labels.NewScratchBuilder(MaxLabelsPerSeries)
	checkRaw := func(names []string) {
		t.Helper()
		for i := 1; i < len(names); i++ {
			testutil.Assert(t, names[i-1] < names[i], "label names not sorted: %v", names)
		}
	}
	switch p {
	case ProtocolV1:
		req, err := remote.DecodeWriteRequest(bytes.NewReader(compressed))
		testutil.Ok(t, err)
		for _, ts := range req.Timeseries {
			names := make([]string, 0, len(ts.Labels))
			for _, l := range ts.Labels {
				names = append(names, l.Name)
			}
			checkRaw(names)
			testutil.Equals(t, 1, len(ts.Samples))
			testutil.Equals(t, 0, len(ts.Histograms)+len(ts.Exemplars))
			out = append(out, decodedSample{labels: ts.ToLabels(&sb, nil), ts: ts.Samples[0].Timestamp, value: ts.Samples[0].Value})
		}
	case ProtocolV2:
		req, err := remote.DecodeWriteV2Request(bytes.NewReader(compressed))
		testutil.Ok(t, err)
		testutil.Assert(t, len(req.Symbols) > 0 && req.Symbols[0] == "", "symbols must start with the empty string")
		for _, ts := range req.Timeseries {
			names := make([]string, 0, len(ts.LabelsRefs)/2)
			for i := 0; i+1 < len(ts.LabelsRefs); i += 2 {
				names = append(names, req.Symbols[ts.LabelsRefs[i]])
			}
			checkRaw(names)
			lset, err := ts.ToLabels(&sb, req.Symbols)
			testutil.Ok(t, err)
			testutil.Equals(t, 1, len(ts.Samples))
			testutil.Equals(t, 0, len(ts.Histograms)+len(ts.Exemplars))
			wantType := writev2.Metadata_METRIC_TYPE_GAUGE
			if strings.HasSuffix(lset.Get(model.MetricNameLabel), "_total") {
				wantType = writev2.Metadata_METRIC_TYPE_COUNTER
			}
			testutil.Equals(t, wantType, ts.Metadata.Type, "metadata type of %s", lset)
			out = append(out, decodedSample{labels: lset, ts: ts.Samples[0].Timestamp, value: ts.Samples[0].Value})
		}
	}
	for _, s := range out {
		testutil.Assert(t, s.labels.IsValid(model.LegacyValidation), "invalid labels %s", s.labels)
		testutil.Assert(t, s.value > 0 && !math.IsInf(s.value, 0) && !math.IsNaN(s.value), "value %v", s.value)
	}
	return out
}

// BenchmarkEncodeRequest measures what the load tool spends per sample to build a request of the default shape
// (2000 series of 15 labels): appending the samples to the pre-encoded series, then snappy compression.
func BenchmarkEncodeRequest(b *testing.B) {
	cfg := DefaultConfig()
	for _, p := range []Protocol{ProtocolV1, ProtocolV2} {
		// The default 100k series (so requests that mix 2000 series of many targets, as in a run), sent in turn.
		batches := newBatches(p, cfg.Series, cfg.LabelsPerSeries, cfg.SeriesPerRequest)
		for _, compressor := range []struct {
			name   string
			encode func(dst, src []byte) []byte
		}{
			{name: "s2.EncodeSnappy", encode: nil}, // What the encoder uses.
			{name: "snappy.Encode", encode: snappy.Encode},
		} {
			b.Run(string(p)+"/"+compressor.name, func(b *testing.B) {
				var enc encoder
				var compressed int
				ts := int64(1_790_000_000_000)
				b.ReportAllocs()
				round := 0
				for b.Loop() {
					bt := batches[round%len(batches)]
					var out []byte
					if compressor.encode == nil {
						out = enc.encode(bt, round, ts)
					} else {
						enc.raw = bt.appendRequest(enc.raw[:0], round, ts)
						out = compressor.encode(enc.compressed[:cap(enc.compressed)], enc.raw)
						enc.compressed = out
					}
					compressed += len(out)
					round++
					ts += 15_000
				}
				samples := float64(round * cfg.SeriesPerRequest)
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/samples, "ns/sample")
				b.ReportMetric(float64(compressed)/samples, "B/sample")
				b.ReportMetric(float64(len(enc.raw))/float64(cfg.SeriesPerRequest), "raw-B/sample")
			})
		}
	}
}

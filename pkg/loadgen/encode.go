package loadgen

import (
	"math"

	"github.com/klauspost/compress/s2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the remote-write messages (prompb/types.proto, prompb/remote.proto and
// prompb/io/prometheus/write/v2/types.proto in Prometheus).
const (
	v1WriteRequestTimeseries = 1 // prometheus.WriteRequest.timeseries
	v1TimeSeriesLabels       = 1 // prometheus.TimeSeries.labels
	v1LabelName              = 1 // prometheus.Label.name
	v1LabelValue             = 2 // prometheus.Label.value
	v2RequestSymbols         = 4 // io.prometheus.write.v2.Request.symbols
	v2RequestTimeseries      = 5 // io.prometheus.write.v2.Request.timeseries
	v2TimeSeriesLabelsRefs   = 1 // io.prometheus.write.v2.TimeSeries.labels_refs (packed)
	v2TimeSeriesMetadata     = 5 // io.prometheus.write.v2.TimeSeries.metadata
	v2MetadataType           = 1 // io.prometheus.write.v2.Metadata.type
	// Both versions: TimeSeries.samples is field 2, Sample.value field 1 (double), Sample.timestamp field 2 (int64).
	timeSeriesSamples = 2
	sampleValue       = 1
	sampleTimestamp   = 2
)

// batch is the series one request carries, pre-encoded: appendRequest adds only a sample per series and the
// framing. It is read-only once built, so senders may share it.
type batch struct {
	// seriesTag is the tag of the request's repeated TimeSeries field.
	seriesTag []byte
	// prefix goes first in every request: v2's symbol table, nothing for v1.
	prefix []byte
	// fixed holds each series' TimeSeries fields other than samples, back to back; series k's are
	// fixed[ends[k-1]:ends[k]]. v1: the labels; v2: labels_refs and metadata.
	fixed []byte
	ends  []int32
	// steps[k] is the amount series k's counter grows by per round.
	steps []float64
}

// newBatches splits the series, in sendOrder, into requests of at most perRequest series each, and pre-encodes them.
// extra labels are added to every series (replacing a generated label of the same name).
func newBatches(p Protocol, series, labelsPerSeries, perRequest int, extra ...labels.Label) []*batch {
	order := sendOrder(series)
	gen := newSeriesGen(labelsPerSeries)
	gen.extra = extra
	batches := make([]*batch, 0, (series+perRequest-1)/perRequest)
	refs := make([]uint32, 0, 2*labelsPerSeries)
	for start := 0; start < series; start += perRequest {
		ids := order[start:min(start+perRequest, series)]
		b := &batch{ends: make([]int32, len(ids)), steps: make([]float64, len(ids))}
		var symbols writev2.SymbolsTable
		if p == ProtocolV2 {
			b.seriesTag = protowire.AppendTag(nil, v2RequestTimeseries, protowire.BytesType)
			symbols = writev2.NewSymbolTable()
		} else {
			b.seriesTag = protowire.AppendTag(nil, v1WriteRequestTimeseries, protowire.BytesType)
		}
		for k, id := range ids {
			lset := gen.labels(int(id))
			if p == ProtocolV2 {
				refs = symbols.SymbolizeLabels(lset, refs)
				b.fixed = appendV2Fixed(b.fixed, refs, metricType(lset))
			} else {
				b.fixed = appendV1Labels(b.fixed, lset)
			}
			b.ends[k] = int32(len(b.fixed))
			b.steps[k] = 1 + float64(id%16)/4
		}
		if p == ProtocolV2 {
			for _, s := range symbols.Symbols() {
				b.prefix = protowire.AppendTag(b.prefix, v2RequestSymbols, protowire.BytesType)
				b.prefix = protowire.AppendString(b.prefix, s)
			}
		}
		batches = append(batches, b)
	}
	return batches
}

// appendV1Labels appends lset as the repeated prometheus.TimeSeries.labels field.
func appendV1Labels(dst []byte, lset labels.Labels) []byte {
	lset.Range(func(l labels.Label) {
		dst = protowire.AppendTag(dst, v1TimeSeriesLabels, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(
			1+protowire.SizeBytes(len(l.Name))+1+protowire.SizeBytes(len(l.Value))))
		dst = protowire.AppendTag(dst, v1LabelName, protowire.BytesType)
		dst = protowire.AppendString(dst, l.Name)
		dst = protowire.AppendTag(dst, v1LabelValue, protowire.BytesType)
		dst = protowire.AppendString(dst, l.Value)
	})
	return dst
}

// appendV2Fixed appends a v2 TimeSeries' labels_refs (packed) and its metadata (the metric type only).
func appendV2Fixed(dst []byte, refs []uint32, typ writev2.Metadata_MetricType) []byte {
	n := 0
	for _, r := range refs {
		n += protowire.SizeVarint(uint64(r))
	}
	dst = protowire.AppendTag(dst, v2TimeSeriesLabelsRefs, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(n))
	for _, r := range refs {
		dst = protowire.AppendVarint(dst, uint64(r))
	}
	dst = protowire.AppendTag(dst, v2TimeSeriesMetadata, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(1+protowire.SizeVarint(uint64(typ))))
	dst = protowire.AppendTag(dst, v2MetadataType, protowire.VarintType)
	return protowire.AppendVarint(dst, uint64(typ))
}

// metricType guesses a series' type from its name the way exposition conventions name them.
func metricType(lset labels.Labels) writev2.Metadata_MetricType {
	name := lset.Get(model.MetricNameLabel)
	if len(name) > len("_total") && name[len(name)-len("_total"):] == "_total" {
		return writev2.Metadata_METRIC_TYPE_COUNTER
	}
	return writev2.Metadata_METRIC_TYPE_GAUGE
}

// appendRequest appends to dst the uncompressed request carrying round's sample of every series of b, all at
// timestamp ts (ms). Series k's value is (round+1) × steps[k]: a counter that grows every round.
func (b *batch) appendRequest(dst []byte, round int, ts int64) []byte {
	// A sample is value (tag + fixed64) and timestamp (tag + varint); the same size for every series.
	sampleLen := 1 + 8 + 1 + protowire.SizeVarint(uint64(ts))
	samplesLen := 1 + protowire.SizeBytes(sampleLen)
	dst = append(dst, b.prefix...)
	start := int32(0)
	for k, end := range b.ends {
		fixed := b.fixed[start:end]
		start = end
		dst = append(dst, b.seriesTag...)
		dst = protowire.AppendVarint(dst, uint64(len(fixed)+samplesLen))
		dst = append(dst, fixed...)
		dst = protowire.AppendTag(dst, timeSeriesSamples, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(sampleLen))
		dst = protowire.AppendTag(dst, sampleValue, protowire.Fixed64Type)
		dst = protowire.AppendFixed64(dst, math.Float64bits(float64(round+1)*b.steps[k]))
		dst = protowire.AppendTag(dst, sampleTimestamp, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(ts))
	}
	return dst
}

// len returns the number of series (so samples) in a request of b.
func (b *batch) len() int { return len(b.ends) }

// encoder builds requests in buffers it reuses. It is not safe for concurrent use; each sender has its own.
type encoder struct {
	raw, compressed []byte
}

// encode returns the snappy-compressed (block format) request for round of b at ts. The result is valid until
// the next call.
func (e *encoder) encode(b *batch, round int, ts int64) []byte {
	e.raw = b.appendRequest(e.raw[:0], round, ts)
	// s2.EncodeSnappy writes the Snappy block format (what remote write requires) at S2's default speed; it
	// reuses e.compressed once that is large enough.
	e.compressed = s2.EncodeSnappy(e.compressed, e.raw)
	return e.compressed
}

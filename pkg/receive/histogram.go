package receive

import (
	"github.com/prometheus/prometheus/model/histogram"

	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// HistogramFromPB converts a remote-write native histogram into Prometheus's form: an integer histogram when
// its counts are integers (deltas), else a float histogram. Exactly one of the results is non-nil.
func HistogramFromPB(h *prompb.Histogram) (*histogram.Histogram, *histogram.FloatHistogram) {
	if _, isFloat := h.GetCount().(*prompb.Histogram_CountFloat); isFloat {
		return nil, &histogram.FloatHistogram{
			CounterResetHint: resetHintFromPB(h.GetResetHint()),
			Schema:           h.GetSchema(),
			ZeroThreshold:    h.GetZeroThreshold(),
			ZeroCount:        h.GetZeroCountFloat(),
			Count:            h.GetCountFloat(),
			Sum:              h.GetSum(),
			PositiveSpans:    spansFromPB(h.GetPositiveSpans()),
			NegativeSpans:    spansFromPB(h.GetNegativeSpans()),
			PositiveBuckets:  h.GetPositiveCounts(),
			NegativeBuckets:  h.GetNegativeCounts(),
			CustomValues:     h.GetCustomValues(),
		}
	}
	return &histogram.Histogram{
		CounterResetHint: resetHintFromPB(h.GetResetHint()),
		Schema:           h.GetSchema(),
		ZeroThreshold:    h.GetZeroThreshold(),
		ZeroCount:        h.GetZeroCountInt(),
		Count:            h.GetCountInt(),
		Sum:              h.GetSum(),
		PositiveSpans:    spansFromPB(h.GetPositiveSpans()),
		NegativeSpans:    spansFromPB(h.GetNegativeSpans()),
		PositiveBuckets:  h.GetPositiveDeltas(),
		NegativeBuckets:  h.GetNegativeDeltas(),
		CustomValues:     h.GetCustomValues(),
	}, nil
}

func spansFromPB(spans []*prompb.BucketSpan) []histogram.Span {
	if len(spans) == 0 {
		return nil
	}
	out := make([]histogram.Span, len(spans))
	for i, s := range spans {
		out[i] = histogram.Span{Offset: s.GetOffset(), Length: s.GetLength()}
	}
	return out
}

func resetHintFromPB(h prompb.Histogram_ResetHint) histogram.CounterResetHint {
	switch h {
	case prompb.Histogram_YES:
		return histogram.CounterReset
	case prompb.Histogram_NO:
		return histogram.NotCounterReset
	case prompb.Histogram_GAUGE:
		return histogram.GaugeType
	}
	return histogram.UnknownCounterReset
}

package receive

import (
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	otlptranslator "github.com/prometheus/prometheus/storage/remote/otlptranslator/prometheusremotewrite"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// otlpLookbackDelta is the PromQL lookback delta the translator spaces target_info samples for (half of it
// between two samples), the querier's default.
const otlpLookbackDelta = 5 * time.Minute

// otlpTranslatorSettings are the Prometheus OTLP translator's settings for a tenant's limits (see the otel_*
// keys of tenancy.Limits). Names are always escaped to Prometheus's legacy character set (Strata validates
// series with it), with or without the unit and type suffixes.
func otlpTranslatorSettings(l *tenancy.Limits) otlptranslator.Settings {
	return otlptranslator.Settings{
		AddMetricSuffixes: l.OTelMetricSuffixesEnabled,
		AllowUTF8:         false,
		PromoteResourceAttributes: otlptranslator.NewPromoteResourceAttributes(config.OTLPConfig{
			PromoteResourceAttributes: l.PromoteOTelResourceAttributes,
		}),
		KeepIdentifyingResourceAttributes:    l.OTelKeepIdentifyingResourceAttributes,
		ConvertHistogramsToNHCB:              l.OTelConvertHistogramsToNHCB,
		PromoteScopeMetadata:                 l.OTelPromoteScopeMetadata,
		AllowDeltaTemporality:                l.OTelNativeDeltaIngestion,
		LookbackDelta:                        otlpLookbackDelta,
		LabelNameUnderscoreSanitization:      l.OTelLabelNameUnderscoreSanitization,
		LabelNamePreserveMultipleUnderscores: l.OTelLabelNamePreserveMultipleUnderscores,
	}
}

// Estimated bytes of the messages otlpAppender builds, reserved against the instance's in-flight bytes limit
// before building them (so a request's translation is bounded like its decoding).
const (
	otlpSeriesOverhead    = 160 // a TimeSeries, its slices' headers and its map entry
	otlpLabelOverhead     = 64  // a labelpb.Label
	otlpSampleSize        = 48  // a prompb.Sample
	otlpHistogramOverhead = 256 // a prompb.Histogram without its buckets
	otlpExemplarOverhead  = 96  // a prompb.Exemplar without its labels
)

// otlpAppender is the storage.AppenderV2 the Prometheus OTLP translator writes into: it collects one request's
// samples as remote write series (one TimeSeries per label set, samples in the order appended) and one metadata
// entry per metric family, for Distributor.Push. Every byte it keeps is reserved first; once a reservation
// fails, Append fails with that error (kept in err). Not safe for concurrent use.
type otlpAppender struct {
	reserve func(int) error
	// budget bounds the bytes reserved (errOTLPTooExpensive beyond); used is what was reserved.
	budget, used int
	err          error

	byHash   map[uint64][]otlpSeries
	series   []*prompb.TimeSeries
	families map[string]struct{}
	metadata []*prompb.MetricMetadata
	points   int // samples and histograms appended
}

type otlpSeries struct {
	lset labels.Labels
	ts   *prompb.TimeSeries
}

// newOTLPAppender returns an appender reserving what it builds with reserve, at most budget bytes.
func newOTLPAppender(reserve func(int) error, budget int) *otlpAppender {
	return &otlpAppender{reserve: reserve, budget: budget, byHash: map[uint64][]otlpSeries{}, families: map[string]struct{}{}}
}

// errOTLPTooExpensive marks a request that translates into far more series bytes than its size justifies
// (otlpTranslateRatio; answered 400, as remote write's remotewrite.ErrDecodeTooExpensive): every bucket of an
// explicit histogram becomes a series carrying all of its point's labels, so a small request can otherwise
// make gigabytes of series, and a 503 would have the exporter send it again for ever.
var errOTLPTooExpensive = errors.New("request translates into too many series bytes for its size")

// take reserves n bytes, within the budget.
func (a *otlpAppender) take(n int) error {
	a.used += n
	if a.budget > 0 && a.used > a.budget {
		return errors.Wrapf(errOTLPTooExpensive, "its series would take more than %d bytes", a.budget)
	}
	return a.reserve(n)
}

var _ storage.AppenderV2 = (*otlpAppender)(nil)

// Append adds one float (h and fh nil) or histogram sample of the series ls, its exemplars, and its metric
// family's metadata the first time the family is seen. The start timestamp st is not stored.
func (a *otlpAppender) Append(_ storage.SeriesRef, ls labels.Labels, _, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AOptions) (storage.SeriesRef, error) {
	if a.err != nil {
		return 0, a.err
	}
	hash := ls.Hash()
	ts := a.lookup(hash, ls)
	size := otlpSampleSize
	if ts == nil {
		size += otlpSeriesOverhead + int(ls.ByteSize()) + ls.Len()*otlpLabelOverhead
	}
	switch {
	case fh != nil:
		size += otlpHistogramOverhead + 8*(len(fh.PositiveBuckets)+len(fh.NegativeBuckets)+len(fh.CustomValues)) +
			16*(len(fh.PositiveSpans)+len(fh.NegativeSpans))
	case h != nil:
		size += otlpHistogramOverhead + 8*(len(h.PositiveBuckets)+len(h.NegativeBuckets)+len(h.CustomValues)) +
			16*(len(h.PositiveSpans)+len(h.NegativeSpans))
	}
	for _, e := range opts.Exemplars {
		size += otlpExemplarOverhead + int(e.Labels.ByteSize()) + e.Labels.Len()*otlpLabelOverhead
	}
	if err := a.take(size); err != nil {
		a.err = err
		return 0, err
	}
	if ts == nil {
		ts = &prompb.TimeSeries{Labels: labelsToPB(ls)}
		a.byHash[hash] = append(a.byHash[hash], otlpSeries{lset: ls, ts: ts})
		a.series = append(a.series, ts)
	}
	switch {
	case fh != nil:
		ts.Histograms = append(ts.Histograms, floatHistogramToPB(t, fh))
	case h != nil:
		ts.Histograms = append(ts.Histograms, histogramToPB(t, h))
	default:
		ts.Samples = append(ts.Samples, &prompb.Sample{Value: v, Timestamp: t})
	}
	a.points++
	for _, e := range opts.Exemplars {
		ts.Exemplars = append(ts.Exemplars, &prompb.Exemplar{Labels: labelsToPB(e.Labels), Value: e.Value, Timestamp: e.Ts})
	}
	if name := opts.MetricFamilyName; name != "" && !opts.Metadata.IsEmpty() {
		if _, ok := a.families[name]; !ok {
			if err := a.take(otlpSeriesOverhead + len(name) + len(opts.Metadata.Help) + len(opts.Metadata.Unit)); err != nil {
				a.err = err
				return 0, err
			}
			a.families[name] = struct{}{}
			a.metadata = append(a.metadata, &prompb.MetricMetadata{
				Type:             metadataTypeToPB(opts.Metadata.Type),
				MetricFamilyName: name,
				Help:             opts.Metadata.Help,
				Unit:             opts.Metadata.Unit,
			})
		}
	}
	return storage.SeriesRef(hash), nil
}

// lookup returns the series of ls appended before, or nil.
func (a *otlpAppender) lookup(hash uint64, ls labels.Labels) *prompb.TimeSeries {
	for _, s := range a.byHash[hash] {
		if labels.Equal(s.lset, ls) {
			return s.ts
		}
	}
	return nil
}

// Commit and Rollback do nothing: the collected series are handed to Distributor.Push by the handler.
func (*otlpAppender) Commit() error   { return nil }
func (*otlpAppender) Rollback() error { return nil }

// labelsToPB converts ls (sorted, as labels.Labels always are). The strings are shared with ls, which is
// immutable.
func labelsToPB(ls labels.Labels) []*labelpb.Label {
	out := make([]*labelpb.Label, 0, ls.Len())
	ls.Range(func(l labels.Label) {
		out = append(out, &labelpb.Label{Name: l.Name, Value: l.Value})
	})
	return out
}

// metadataTypeToPB maps a Prometheus metric type to remote write's.
func metadataTypeToPB(t model.MetricType) prompb.MetricMetadata_MetricType {
	switch t {
	case model.MetricTypeCounter:
		return prompb.MetricMetadata_COUNTER
	case model.MetricTypeGauge:
		return prompb.MetricMetadata_GAUGE
	case model.MetricTypeHistogram:
		return prompb.MetricMetadata_HISTOGRAM
	case model.MetricTypeGaugeHistogram:
		return prompb.MetricMetadata_GAUGEHISTOGRAM
	case model.MetricTypeSummary:
		return prompb.MetricMetadata_SUMMARY
	case model.MetricTypeInfo:
		return prompb.MetricMetadata_INFO
	case model.MetricTypeStateset:
		return prompb.MetricMetadata_STATESET
	}
	return prompb.MetricMetadata_UNKNOWN
}

// histogramToPB converts an integer native histogram sampled at t (milliseconds) into remote write's form,
// copying its slices (the translator may reuse them).
func histogramToPB(t int64, h *histogram.Histogram) *prompb.Histogram {
	return &prompb.Histogram{
		Count:          &prompb.Histogram_CountInt{CountInt: h.Count},
		Sum:            h.Sum,
		Schema:         h.Schema,
		ZeroThreshold:  h.ZeroThreshold,
		ZeroCount:      &prompb.Histogram_ZeroCountInt{ZeroCountInt: h.ZeroCount},
		NegativeSpans:  spansToPB(h.NegativeSpans),
		NegativeDeltas: cloneOrNil(h.NegativeBuckets),
		PositiveSpans:  spansToPB(h.PositiveSpans),
		PositiveDeltas: cloneOrNil(h.PositiveBuckets),
		ResetHint:      resetHintToPB(h.CounterResetHint),
		Timestamp:      t,
		CustomValues:   cloneOrNil(h.CustomValues),
	}
}

// floatHistogramToPB is histogramToPB for a float histogram.
func floatHistogramToPB(t int64, fh *histogram.FloatHistogram) *prompb.Histogram {
	return &prompb.Histogram{
		Count:          &prompb.Histogram_CountFloat{CountFloat: fh.Count},
		Sum:            fh.Sum,
		Schema:         fh.Schema,
		ZeroThreshold:  fh.ZeroThreshold,
		ZeroCount:      &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: fh.ZeroCount},
		NegativeSpans:  spansToPB(fh.NegativeSpans),
		NegativeCounts: cloneOrNil(fh.NegativeBuckets),
		PositiveSpans:  spansToPB(fh.PositiveSpans),
		PositiveCounts: cloneOrNil(fh.PositiveBuckets),
		ResetHint:      resetHintToPB(fh.CounterResetHint),
		Timestamp:      t,
		CustomValues:   cloneOrNil(fh.CustomValues),
	}
}

func spansToPB(spans []histogram.Span) []*prompb.BucketSpan {
	if len(spans) == 0 {
		return nil
	}
	out := make([]*prompb.BucketSpan, len(spans))
	for i, s := range spans {
		out[i] = &prompb.BucketSpan{Offset: s.Offset, Length: s.Length}
	}
	return out
}

func resetHintToPB(h histogram.CounterResetHint) prompb.Histogram_ResetHint {
	switch h {
	case histogram.CounterReset:
		return prompb.Histogram_YES
	case histogram.NotCounterReset:
		return prompb.Histogram_NO
	case histogram.GaugeType:
		return prompb.Histogram_GAUGE
	}
	return prompb.Histogram_UNKNOWN
}

func cloneOrNil[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return append([]T(nil), s...)
}

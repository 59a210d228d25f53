package receive

import (
	"context"
	"sync"

	"github.com/efficientgo/core/errors"
	deltatocumulative "github.com/open-telemetry/opentelemetry-collector-contrib/processor/deltatocumulativeprocessor"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/otel/metric/noop"
)

// defaultDeltaMaxStreams bounds a tenant's delta-to-cumulative state when it has no series limit.
const defaultDeltaMaxStreams = 1 << 20

// deltaConverters turn delta sums and histograms into cumulative ones, with the OpenTelemetry Collector's
// deltatocumulative processor (what Prometheus's --enable-feature=otlp-deltatocumulative uses): one processor
// per tenant that enables otel_convert_delta_to_cumulative, so tenants' streams never mix. A processor keeps
// each stream's running total in memory (streams idle for 5 minutes are forgotten) for at most the tenant's
// max_global_series_per_user streams when it is created (defaultDeltaMaxStreams without one); points of
// streams beyond are dropped. The totals are this distributor's: a stream must always reach the same one. A
// point is added to its stream's total before the request is written, so a request retried after a 429 or 503
// is counted twice (as with Prometheus's conversion). It is safe for concurrent use.
type deltaConverters struct {
	mu       sync.Mutex
	byTenant map[string]processor.Metrics
	closed   bool
}

func newDeltaConverters() *deltaConverters {
	return &deltaConverters{byTenant: map[string]processor.Metrics{}}
}

// convertedKey is the context key of the *pmetric.Metrics a processor's output is captured into.
type convertedKey struct{}

// captureConsumer is every processor's next consumer: it hands the converted metrics back to the caller of
// convert, through the call's context (the processor calls it synchronously).
type captureConsumer struct{}

func (captureConsumer) ConsumeMetrics(ctx context.Context, md pmetric.Metrics) error {
	if out, ok := ctx.Value(convertedKey{}).(*pmetric.Metrics); ok {
		*out = md
	}
	return nil
}

func (captureConsumer) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

// convert returns md with its delta metrics made cumulative (md is modified), using tenant's state. maxStreams
// sizes the state of a tenant seen for the first time.
func (c *deltaConverters) convert(ctx context.Context, tenant string, maxStreams int, md pmetric.Metrics) (pmetric.Metrics, error) {
	p, err := c.get(tenant, maxStreams)
	if err != nil {
		return md, err
	}
	out := pmetric.NewMetrics()
	if err := p.ConsumeMetrics(context.WithValue(ctx, convertedKey{}, &out), md); err != nil {
		return md, errors.Wrap(err, "convert delta metrics to cumulative")
	}
	return out, nil // empty when every metric was dropped
}

func (c *deltaConverters) get(tenant string, maxStreams int) (processor.Metrics, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("delta conversion is shutting down")
	}
	if p, ok := c.byTenant[tenant]; ok {
		return p, nil
	}
	if maxStreams <= 0 {
		maxStreams = defaultDeltaMaxStreams
	}
	fac := deltatocumulative.NewFactory()
	cfg := fac.CreateDefaultConfig().(*deltatocumulative.Config)
	cfg.MaxStreams = maxStreams
	set := processor.Settings{
		ID:                component.NewIDWithName(fac.Type(), tenant),
		TelemetrySettings: component.TelemetrySettings{MeterProvider: noop.NewMeterProvider()},
	}
	p, err := fac.CreateMetrics(context.Background(), set, cfg, captureConsumer{})
	if err != nil {
		return nil, errors.Wrapf(err, "create the delta-to-cumulative processor of tenant %s", tenant)
	}
	if err := p.Start(context.Background(), nil); err != nil {
		return nil, errors.Wrapf(err, "start the delta-to-cumulative processor of tenant %s", tenant)
	}
	c.byTenant[tenant] = p
	return p, nil
}

// Close stops every tenant's processor (their stale-stream loops).
func (c *deltaConverters) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for tenant, p := range c.byTenant {
		if err := p.Shutdown(context.Background()); err != nil {
			errs = append(errs, errors.Wrapf(err, "stop the delta-to-cumulative processor of tenant %s", tenant))
		}
		delete(c.byTenant, tenant)
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// hasDeltaMetrics says whether md has a sum or histogram of delta temporality.
func hasDeltaMetrics(md pmetric.Metrics) bool {
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				m := ms.At(k)
				var t pmetric.AggregationTemporality
				switch m.Type() {
				case pmetric.MetricTypeSum:
					t = m.Sum().AggregationTemporality()
				case pmetric.MetricTypeHistogram:
					t = m.Histogram().AggregationTemporality()
				case pmetric.MetricTypeExponentialHistogram:
					t = m.ExponentialHistogram().AggregationTemporality()
				}
				if t == pmetric.AggregationTemporalityDelta {
					return true
				}
			}
		}
	}
	return false
}

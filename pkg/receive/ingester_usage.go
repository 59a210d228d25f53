package receive

import (
	"context"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// usageMetadataKey is the gRPC response header in which an ingester reports, after a RemoteWrite, the tenant's
// series and its use of its share of the series limits (seriesUsage.encode). A distributor reads it
// (RingPusher.observeRemote); other clients, such as a Thanos receive router, ignore it.
const usageMetadataKey = "strata-limit-usage"

// topMetric is the metric with the most series of a tenant in an ingester.
type topMetric struct {
	name   string
	series int
}

// created notes that metric name has n series now. O(1): a series is only ever created one at a time.
func (t *topMetric) created(name string, n int) {
	if n > t.series || (n == t.series && name < t.name) {
		t.name, t.series = name, n
	}
}

// recompute finds the top metric again after series were deleted (a head GC: rare, and O(metrics)).
func (t *topMetric) recompute(perMetric map[string]int) {
	*t = topMetric{}
	for name, n := range perMetric {
		t.created(name, n)
	}
}

// seriesUsage is one ingester's report of one tenant: its series there and how much of the ingester's share of
// the series limits they use.
type seriesUsage struct {
	// series is the tenant's in-memory series in the ingester.
	series int64
	// perUser is series / the ingester's share of max_global_series_per_user (0: no limit).
	perUser float64
	// perMetric is topMetric's series / the ingester's share of max_global_series_per_metric (0: no limit).
	perMetric float64
	// topMetric is the metric with the most series (empty: none, or not printable ASCII).
	topMetric string
}

// seriesUsage returns the tenant's usage of this ingester's share of its series limits, false when the tenant
// has no open TSDB here. It costs two overrides lookups, the limit share and a lock: once per write, never per
// series.
func (i *Ingester) seriesUsage(tenant string) (seriesUsage, bool) {
	u := i.get(tenant)
	if u == nil {
		return seriesUsage{}, false
	}
	u.closeMtx.RLock()
	defer u.closeMtx.RUnlock()
	if u.closed {
		return seriesUsage{}, false
	}
	u.mtx.Lock()
	top := u.top
	u.mtx.Unlock()
	su := seriesUsage{series: int64(u.db.Head().NumSeries()), topMetric: top.name}
	if limit := u.localLimit(i.overrides.MaxGlobalSeriesPerUser(tenant)); limit > 0 {
		su.perUser = float64(su.series) / float64(limit)
	}
	if limit := u.localLimit(i.overrides.MaxGlobalSeriesPerMetric(tenant)); limit > 0 {
		su.perMetric = float64(top.series) / float64(limit)
	}
	return su, true
}

// reportUsage sets the tenant's seriesUsage as the RemoteWrite's response header. Outside a gRPC call (the
// method called in-process) there is no header to set: it does nothing.
func (i *Ingester) reportUsage(ctx context.Context, tenant string) {
	if grpc.ServerTransportStreamFromContext(ctx) == nil {
		return
	}
	if su, ok := i.seriesUsage(tenant); ok {
		_ = grpc.SetHeader(ctx, metadata.MD{usageMetadataKey: []string{su.encode()}})
	}
}

// encode is the header value: "<series> <perUser> <perMetric> <topMetric>".
func (su seriesUsage) encode() string {
	var arr [128]byte
	b := strconv.AppendInt(arr[:0], su.series, 10)
	b = append(b, ' ')
	b = strconv.AppendFloat(b, su.perUser, 'g', -1, 64)
	b = append(b, ' ')
	b = strconv.AppendFloat(b, su.perMetric, 'g', -1, 64)
	if printableASCII(su.topMetric) {
		b = append(b, ' ')
		b = append(b, su.topMetric...)
	}
	return string(b)
}

// parseSeriesUsage parses an encoded seriesUsage; false when malformed (a report is advisory: it is dropped).
func parseSeriesUsage(v string) (seriesUsage, bool) {
	var (
		su               seriesUsage
		f1, f2, f3, rest string
		ok               bool
		err              error
	)
	if f1, rest, ok = strings.Cut(v, " "); !ok {
		return su, false
	}
	if f2, rest, ok = strings.Cut(rest, " "); !ok {
		return su, false
	}
	f3, su.topMetric, _ = strings.Cut(rest, " ")
	if su.series, err = strconv.ParseInt(f1, 10, 64); err != nil || su.series < 0 {
		return seriesUsage{}, false
	}
	if su.perUser, err = strconv.ParseFloat(f2, 64); err != nil || !(su.perUser >= 0) {
		return seriesUsage{}, false
	}
	if su.perMetric, err = strconv.ParseFloat(f3, 64); err != nil || !(su.perMetric >= 0) {
		return seriesUsage{}, false
	}
	if len(su.topMetric) > maxTopMetricLen || !printableASCII(su.topMetric) {
		su.topMetric = ""
	}
	return su, true
}

// maxTopMetricLen bounds the metric name a distributor keeps from an ingester's report.
const maxTopMetricLen = 1024

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

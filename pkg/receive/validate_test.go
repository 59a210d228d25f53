package receive

import (
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/common/model"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

func lbls(kv ...string) []*labelpb.Label {
	var out []*labelpb.Label
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &labelpb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestFormatSeries(t *testing.T) {
	for _, tc := range []struct {
		ls   []*labelpb.Label
		want string
	}{
		{nil, "{}"},
		{lbls("__name__", "up"), `{__name__="up"}`},
		{lbls("__name__", "up", "job", `a "quoted"`+"\n"), `{__name__="up", job="a \"quoted\"\n"}`},
		{lbls("job-name", "a", "ö", "ü"), `{"job-name"="a", "ö"="ü"}`},
		{append(lbls("a", "1"), nil), `{a="1", ""=""}`},
	} {
		testutil.Equals(t, tc.want, formatSeries(tc.ls))
	}
	// A huge value costs a bounded string: the messages keep 200 characters anyway.
	huge := formatSeries(lbls("__name__", "up", "v", strings.Repeat("x", 1<<20), "w", "1"))
	testutil.Assert(t, len(huge) < 2100, "rendered %d bytes", len(huge))
	testutil.Assert(t, strings.HasPrefix(huge, `{__name__="up", v="xxx`))
}

// TestSeriesValidatorZeroLimits: a limit of 0 is no limit.
func TestSeriesValidatorZeroLimits(t *testing.T) {
	v := newSeriesValidator(&tenancy.Limits{}, time.Unix(0, 0))
	ts := &prompb.TimeSeries{Labels: lbls("__name__", "up", "a", strings.Repeat("v", 5000), strings.Repeat("n", 5000), "x")}
	testutil.Equals(t, violation{}, v.check(ts))
	ts.Samples = []*prompb.Sample{{Timestamp: 1}}
	testutil.Equals(t, ReasonTooFarInFuture, v.check(ts).reason, "grace period 0: now is the newest allowed")
}

// TestSeriesValidatorOrder: with several rules broken, the first in Mimir's order is reported.
func TestSeriesValidatorOrder(t *testing.T) {
	l := tenancy.DefaultLimits()
	l.MaxLabelNamesPerSeries = 2
	v := newSeriesValidator(&l, time.Unix(0, 0))
	for _, tc := range []struct {
		ls     []*labelpb.Label
		reason string
		label  int
	}{
		{lbls("b", "1", "a", "2", "bad-name", "3"), ReasonMissingMetricName, 0},
		{lbls("__name__", "bad.name", "b", "1", "a", "2"), ReasonLabelInvalid, 0},
		{lbls("__name__", "up", "b", "1", "a", "2"), ReasonMaxLabelNamesPerSeries, 0},
		{lbls("b", "1", "__name__", "up"), "", 0}, // sorted, not refused
		{lbls("__name__", "up", "__name__", "up"), ReasonDuplicateLabelNames, 1},
		{lbls("__name__", "up", "a", ""), "", 0},
	} {
		vi := v.check(&prompb.TimeSeries{Labels: tc.ls})
		testutil.Equals(t, tc.reason, vi.reason, "%v", tc.ls)
		if tc.reason != "" && tc.label > 0 {
			testutil.Equals(t, tc.label, vi.label)
		}
	}
}

// TestLegacyNames holds the byte-wise name checks to prometheus/common's.
func TestLegacyNames(t *testing.T) {
	for _, s := range []string{"", "a", "_", ":", "a:b", "__name__", "0a", "a0", "A_Z", "a-b", "a.b", "ö", "aö", "a b", "a\x00", ":0", "_0", "\xff", "http_requests_total"} {
		testutil.Equals(t, model.LegacyValidation.IsValidLabelName(s), isLegacyLabelName(s), "label name %q", s)
		testutil.Equals(t, model.LegacyValidation.IsValidMetricName(s), isLegacyMetricName(s), "metric name %q", s)
	}
	// Every byte, first and after a valid one.
	for c := range 256 {
		for _, s := range []string{string([]byte{byte(c)}), "a" + string([]byte{byte(c)}), string([]byte{byte(c)}) + "a"} {
			testutil.Equals(t, model.LegacyValidation.IsValidLabelName(s), isLegacyLabelName(s), "label name %q", s)
			testutil.Equals(t, model.LegacyValidation.IsValidMetricName(s), isLegacyMetricName(s), "metric name %q", s)
		}
	}
}

// TestSeriesValidatorSortsLabels: labels not sorted by name are sorted in place (as Mimir's distributor does),
// then checked; only duplicate names are refused.
func TestSeriesValidatorSortsLabels(t *testing.T) {
	v := newSeriesValidator(&tenancy.Limits{}, time.Unix(0, 0))
	for _, tc := range []struct {
		name   string
		in     []*labelpb.Label
		want   []*labelpb.Label
		reason string
	}{
		{
			name: "already sorted",
			in:   lbls("__name__", "up", "job", "a", "zone", "z"),
			want: lbls("__name__", "up", "job", "a", "zone", "z"),
		},
		{
			name: "Mimir continuous test order",
			in:   lbls("__name__", "mimir_continuous_test_sine_wave_v2", "series_id", "7", "hash_extra", "0"),
			want: lbls("__name__", "mimir_continuous_test_sine_wave_v2", "hash_extra", "0", "series_id", "7"),
		},
		{
			name: "reversed",
			in:   lbls("zone", "z", "job", "a", "instance", "i", "__name__", "up"),
			want: lbls("__name__", "up", "instance", "i", "job", "a", "zone", "z"),
		},
		{
			name: "unsorted with empty values dropped",
			in:   lbls("job", "a", "empty", "", "__name__", "up", "a", ""),
			want: lbls("__name__", "up", "job", "a"),
		},
		{
			name:   "unsorted duplicate",
			in:     lbls("job", "a", "__name__", "up", "job", "b"),
			want:   lbls("__name__", "up", "job", "a", "job", "b"),
			reason: ReasonDuplicateLabelNames,
		},
		{
			name:   "unsorted, invalid name found after sorting",
			in:     lbls("job", "a", "__name__", "up", "bad-name", "b"),
			want:   lbls("__name__", "up", "bad-name", "b", "job", "a"),
			reason: ReasonLabelInvalid,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := &prompb.TimeSeries{Labels: tc.in}
			vi := v.check(ts)
			testutil.Equals(t, tc.reason, vi.reason)
			testutil.Equals(t, formatSeries(tc.want), formatSeries(ts.Labels))
		})
	}
}

// TestSeriesValidatorNoAllocs: checking a series allocates nothing, sorted or not.
func TestSeriesValidatorNoAllocs(t *testing.T) {
	v := newSeriesValidator(&tenancy.Limits{}, time.Unix(0, 0))
	sorted := lbls("__name__", "up", "instance", "i", "job", "a", "zone", "z")
	unsorted := lbls("zone", "z", "job", "a", "__name__", "up", "instance", "i")
	ts := &prompb.TimeSeries{}
	testutil.Equals(t, 0.0, testing.AllocsPerRun(100, func() {
		ts.Labels = sorted
		if v.check(ts).reason != "" {
			t.Fatal("sorted series refused")
		}
	}))
	testutil.Equals(t, 0.0, testing.AllocsPerRun(100, func() {
		ts.Labels = append(ts.Labels[:0], unsorted...)
		if v.check(ts).reason != "" {
			t.Fatal("unsorted series refused")
		}
	}))
}

// TestSeriesValidatorOrderDoesNotMatter: labels checked as they come (sorted) and labels sorted first by the
// validator (sent out of order) get the same verdict, with the same label named, over random label sets with
// empty values, duplicate, invalid and long names, and a missing or invalid metric name.
func TestSeriesValidatorOrderDoesNotMatter(t *testing.T) {
	v := newSeriesValidator(&tenancy.Limits{MaxLabelNameLength: 8, MaxLabelValueLength: 8, MaxLabelNamesPerSeries: 6}, time.Unix(0, 0))
	names := []string{"__name__", "a", "b", "c", "bad-name", "toolong_name", "_x", "0a"}
	values := []string{"", "v", "up", "bad.metric", "too_long_value"}
	rng := rand.New(rand.NewSource(1))
	reasons := map[string]int{}
	for range 5000 {
		var ls []*labelpb.Label
		for range rng.Intn(8) {
			ls = append(ls, &labelpb.Label{Name: names[rng.Intn(len(names))], Value: values[rng.Intn(len(values))]})
		}
		sorted := slices.Clone(ls)
		slices.SortStableFunc(sorted, compareLabelNames)
		shuffled := slices.Clone(ls)
		want := v.check(&prompb.TimeSeries{Labels: sorted})
		got := v.check(&prompb.TimeSeries{Labels: shuffled})
		testutil.Equals(t, want.reason, got.reason, "%v", ls)
		if want.reason != "" {
			testutil.Equals(t, want.label, got.label, "%v", ls)
		}
		reasons[want.reason]++
	}
	// Every rule was met.
	for _, r := range []string{"", ReasonMissingMetricName, ReasonLabelInvalid, ReasonLabelNameTooLong, ReasonLabelValueTooLong, ReasonDuplicateLabelNames, ReasonMaxLabelNamesPerSeries} {
		testutil.Assert(t, reasons[r] > 0, "no series refused for %q: %v", r, reasons)
	}
}

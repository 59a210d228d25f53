package loadgen

import (
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

func TestSeriesGen(t *testing.T) {
	const series = 100_000
	for _, tc := range []struct {
		labelsPerSeries int
		// wantValues is the number of distinct values of some labels over the 100k series.
		wantValues map[string]int
	}{
		{
			labelsPerSeries: MinLabelsPerSeries,
			wantValues: map[string]int{"__name__": 200, "job": 12, "instance": 500, "pod": 500, "namespace": 7,
				"container": 12, "cluster": 4, "region": 3, "service": 12},
		},
		{
			labelsPerSeries: 15,
			wantValues:      map[string]int{"zone": 9, "env": 2, "team": 7, "app": 12, "version": 30},
		},
		{
			labelsPerSeries: MaxLabelsPerSeries,
			wantValues: map[string]int{"instance": 500, "method": 4, "status_code": 8, "handler": 8,
				"endpoint": 1, "scheme": 1},
		},
	} {
		t.Run(labelOrder[tc.labelsPerSeries-1], func(t *testing.T) {
			gen := newSeriesGen(tc.labelsPerSeries)
			seen := make(map[string]struct{}, series)
			values := map[string]map[string]struct{}{}
			for i := range series {
				lset := gen.labels(i)
				testutil.Equals(t, tc.labelsPerSeries, lset.Len())
				testutil.Assert(t, lset.IsValid(model.LegacyValidation), "invalid labels %s", lset)
				prev := ""
				lset.Range(func(l labels.Label) {
					testutil.Assert(t, prev < l.Name, "labels not sorted or repeated: %s", lset)
					testutil.Assert(t, l.Value != "", "empty value in %s", lset)
					prev = l.Name
					if values[l.Name] == nil {
						values[l.Name] = map[string]struct{}{}
					}
					values[l.Name][l.Value] = struct{}{}
				})
				key := lset.String()
				_, dup := seen[key]
				testutil.Assert(t, !dup, "series %d repeats %s", i, key)
				seen[key] = struct{}{}
			}
			for name, want := range tc.wantValues {
				testutil.Equals(t, want, len(values[name]), "distinct values of %s", name)
			}
		})
	}
}

// TestSeriesGen_ExtraLabels: constant labels are added to every series, replacing a generated one of the same
// name, and the series stay distinct and sorted.
func TestSeriesGen_ExtraLabels(t *testing.T) {
	gen := newSeriesGen(MinLabelsPerSeries)
	gen.extra = []labels.Label{{Name: "cluster", Value: "c1"}, {Name: "__replica__", Value: "a"}}
	seen := map[string]struct{}{}
	for i := range 5000 {
		lset := gen.labels(i)
		testutil.Equals(t, MinLabelsPerSeries+1, lset.Len())
		testutil.Equals(t, "c1", lset.Get("cluster"))
		testutil.Equals(t, "a", lset.Get("__replica__"))
		testutil.Assert(t, lset.IsValid(model.LegacyValidation), "invalid labels %s", lset)
		seen[lset.String()] = struct{}{}
	}
	testutil.Equals(t, 5000, len(seen))
}

func TestSendOrder(t *testing.T) {
	for _, n := range []int{1, 2, 7, 10_000} {
		order := sendOrder(n)
		seen := make([]bool, n)
		moved := 0
		for i, id := range order {
			testutil.Assert(t, !seen[id], "%d twice", id)
			seen[id] = true
			if int(id) != i {
				moved++
			}
		}
		if n >= 100 {
			testutil.Assert(t, moved > n/2, "order of %d barely shuffled: %d moved", n, moved)
		}
	}
}

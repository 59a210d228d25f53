package store

import (
	"math"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/labelpb"
)

func TestMergeInfos(t *testing.T) {
	info := func(minT, maxT int64, lsets ...labels.Labels) *infopb.InfoResponse {
		r := &infopb.InfoResponse{Store: &infopb.StoreInfo{MinTime: minT, MaxTime: maxT}}
		for _, ls := range lsets {
			r.LabelSets = append(r.LabelSets, &labelpb.ZLabelSet{Labels: LabelsToPB(ls)})
		}
		return r
	}
	a, b := labels.FromStrings("tenant_id", "a"), labels.FromStrings("tenant_id", "b")
	for _, tc := range []struct {
		name  string
		parts []*infopb.InfoResponse
		want  *infopb.InfoResponse
	}{
		{name: "ingester and store-gateway: union of ranges and label sets",
			parts: []*infopb.InfoResponse{info(500, math.MaxInt64, b, a), info(100, 400, a)},
			want:  info(100, math.MaxInt64, a, b)},
		{name: "an empty ingester adds nothing",
			parts: []*infopb.InfoResponse{info(math.MaxInt64, math.MinInt64), info(100, 400, a)},
			want:  info(100, 400, a)},
		{name: "a store-gateway before its first sync makes the label sets unknown",
			parts: []*infopb.InfoResponse{info(500, math.MaxInt64, a), info(math.MinInt64, math.MaxInt64)},
			want:  info(math.MinInt64, math.MaxInt64)},
		{name: "no data anywhere: unbounded",
			parts: []*infopb.InfoResponse{info(math.MaxInt64, math.MinInt64), nil},
			want:  info(math.MinInt64, math.MaxInt64)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.want.ComponentType = ComponentQuery
			got := MergeInfos(ComponentQuery, tc.parts...)
			testutil.Equals(t, tc.want.String(), got.String())
		})
	}
}

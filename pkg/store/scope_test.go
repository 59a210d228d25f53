package store

import (
	"context"
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

func TestProxyInfoUnknownLabelSets(t *testing.T) {
	a, b := labels.FromStrings("tenant_id", "a"), labels.FromStrings("tenant_id", "b")
	for _, tc := range []struct {
		name       string
		stores     []StoreClient
		wantLabels []labels.Labels
		wantMin    int64
		wantMax    int64
	}{
		{name: "every store names its label sets: their union",
			stores:     []StoreClient{&countingClient{minT: 10, maxT: 20, labelSets: []labels.Labels{b}}, &countingClient{minT: 5, maxT: 15, labelSets: []labels.Labels{a, b}}},
			wantLabels: []labels.Labels{a, b}, wantMin: 5, wantMax: 20},
		{name: "a store with unknown label sets (the store-gateways) makes them unknown",
			stores:  []StoreClient{&countingClient{minT: 10, maxT: 20, labelSets: []labels.Labels{a}}, &countingClient{minT: math.MinInt64, maxT: math.MaxInt64}},
			wantMin: math.MinInt64, wantMax: math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := newTestProxy(0, tc.stores...).Info(context.Background(), &infopb.InfoRequest{})
			testutil.Ok(t, err)
			var got []labels.Labels
			for _, ls := range resp.GetLabelSets() {
				got = append(got, LabelsFromPB(ls.GetLabels()))
			}
			testutil.Equals(t, tc.wantLabels, got)
			testutil.Equals(t, tc.wantMin, resp.GetStore().GetMinTime())
			testutil.Equals(t, tc.wantMax, resp.GetStore().GetMaxTime())
		})
	}
}

package main

import (
	"context"
	"math"
	"testing"

	"github.com/efficientgo/core/testutil"

	"github.com/stratametrics/strata/pkg/store/infopb"
)

type fixedInfo struct {
	infopb.UnimplementedInfoServer
	minT, maxT int64
}

func (f fixedInfo) Info(context.Context, *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	return &infopb.InfoResponse{Store: &infopb.StoreInfo{MinTime: f.minT, MaxTime: f.maxT}}, nil
}

type instances int

func (n instances) InstancesCount() int { return int(n) }

func TestSoleInstanceInfo(t *testing.T) {
	for _, tc := range []struct {
		name       string
		instances  int
		minT, maxT int64
	}{
		{name: "alone in its ring: the component's own info", instances: 1, minT: 100, maxT: 200},
		{name: "others in its ring hold a share: unknown", instances: 3, minT: math.MinInt64, maxT: math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := soleInstanceInfo{local: fixedInfo{minT: 100, maxT: 200}, ring: instances(tc.instances)}.Info(context.Background(), &infopb.InfoRequest{})
			testutil.Ok(t, err)
			testutil.Equals(t, tc.minT, resp.GetStore().GetMinTime())
			testutil.Equals(t, tc.maxT, resp.GetStore().GetMaxTime())
			testutil.Equals(t, 0, len(resp.GetLabelSets()))
		})
	}
}

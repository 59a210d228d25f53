package query

import (
	"context"
	"fmt"
	"io"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log/level"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/hintspb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// gatewaySeries is one gateway's answer to a Series request.
type gatewaySeries struct {
	series   []*storepb.Series
	warnings []string
}

// Series implements storepb.StoreClient. The blocks' series come back as one stream sorted by labels, warnings
// first. Blocks that could not be queried end the stream with a codes.Unavailable error after the series
// (a partial answer) or, when the request aborts on partial responses, fail the call itself.
func (s *BlocksStore) Series(ctx context.Context, req *storepb.SeriesRequest, opts ...grpc.CallOption) (storepb.Store_SeriesClient, error) {
	ctx, tenants, err := blocksRequestTenants(ctx)
	if err != nil {
		return nil, err
	}
	var queryStats bool
	if h := req.GetHints(); h != nil {
		var rh hintspb.SeriesRequestHints
		if h.UnmarshalTo(&rh) == nil {
			queryStats = rh.GetEnableQueryStats()
		}
	}
	d, err := queryBlocks(ctx, s, "series", tenants, req.GetMinTime(), req.GetMaxTime(), func(ctx context.Context, c storepb.StoreClient, addr string, ids []string) (gatewaySeries, []string, error) {
		var out gatewaySeries
		hints, err := anypb.New(&hintspb.SeriesRequestHints{BlockMatchers: blockMatchers(ids), EnableQueryStats: queryStats})
		if err != nil {
			return out, nil, errors.Wrap(err, "encode series request hints")
		}
		r := proto.Clone(req).(*storepb.SeriesRequest)
		r.Hints = hints
		stream, err := c.Series(ctx, r, opts...)
		if err != nil {
			return out, nil, err
		}
		var queried []string
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return out, queried, nil
			}
			if err != nil {
				return out, nil, err
			}
			switch res := resp.GetResult().(type) {
			case *storepb.SeriesResponse_Series:
				out.series = append(out.series, res.Series)
			case *storepb.SeriesResponse_Batch:
				out.series = append(out.series, res.Batch.GetSeries()...)
			case *storepb.SeriesResponse_Warning:
				out.warnings = append(out.warnings, fmt.Sprintf("store-gateway %s: %s", addr, res.Warning))
			case *storepb.SeriesResponse_Hints:
				var rh hintspb.SeriesResponseHints
				if err := res.Hints.UnmarshalTo(&rh); err != nil {
					level.Debug(s.logger).Log("msg", "store-gateway series hints of an unknown type", "gateway", addr, "type", res.Hints.GetTypeUrl())
					continue
				}
				for _, b := range rh.GetQueriedBlocks() {
					queried = append(queried, b.GetId())
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if d == nil {
		return &seriesStream{ctx: ctx}, nil
	}
	partial := d.unqueriedError()
	if partial != nil && strictRequest(req.GetPartialResponseStrategy(), req.GetPartialResponseDisabled()) {
		return nil, partial
	}

	var (
		all      []*storepb.Series
		warnings []string
	)
	for _, a := range d.answers {
		all = append(all, a.val.series...)
		warnings = append(warnings, a.val.warnings...)
	}
	merged := store.MergeSeries(all)
	if req.GetLimit() > 0 && int64(len(merged)) > req.GetLimit() {
		merged = merged[:req.GetLimit()]
	}
	return newSeriesStream(ctx, uniqueWarnings(warnings), merged, int(req.GetResponseBatchSize()), partial), nil
}

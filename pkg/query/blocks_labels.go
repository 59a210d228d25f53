package query

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log/level"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/stratametrics/strata/pkg/store/hintspb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// labelsAnswer is one gateway's answer to LabelNames or LabelValues.
type labelsAnswer struct {
	values   []string
	warnings []string
}

// labelsRange is the finder's time range of a label request (end 0: unbounded, as the proxy reads it).
func labelsRange(start, end int64) (int64, int64) {
	if end == 0 {
		end = math.MaxInt64
	}
	return start, end
}

// finishLabels unions the answers; left-over blocks fail the request or become a warning by its strategy.
func finishLabels(d *distribution[labelsAnswer], strict bool, limit int64) ([]string, []string, error) {
	var values, warnings []string
	for _, a := range d.answers {
		values = append(values, a.val.values...)
		warnings = append(warnings, a.val.warnings...)
	}
	if err := d.unqueriedError(); err != nil {
		if strict {
			return nil, nil, err
		}
		warnings = append(warnings, err.Error())
	}
	slices.Sort(values)
	values = slices.Compact(values)
	if limit > 0 && int64(len(values)) > limit {
		values = values[:limit]
	}
	return values, uniqueWarnings(warnings), nil
}

func queriedIDs(bs []*hintspb.Block) []string {
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.GetId())
	}
	return out
}

func prefixWarnings(addr string, ws []string) []string {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, fmt.Sprintf("store-gateway %s: %s", addr, w))
	}
	return out
}

// LabelNames implements storepb.StoreClient: the union of the gateways' answers over the request's blocks.
func (s *BlocksStore) LabelNames(ctx context.Context, req *storepb.LabelNamesRequest, opts ...grpc.CallOption) (*storepb.LabelNamesResponse, error) {
	ctx, tenants, err := blocksRequestTenants(ctx)
	if err != nil {
		return nil, err
	}
	minT, maxT := labelsRange(req.GetStart(), req.GetEnd())
	d, err := queryBlocks(ctx, s, "label_names", tenants, minT, maxT, func(ctx context.Context, c storepb.StoreClient, addr string, ids []string) (labelsAnswer, []string, error) {
		hints, err := anypb.New(&hintspb.LabelNamesRequestHints{BlockMatchers: blockMatchers(ids)})
		if err != nil {
			return labelsAnswer{}, nil, errors.Wrap(err, "encode label names request hints")
		}
		r := proto.Clone(req).(*storepb.LabelNamesRequest)
		r.Hints = hints
		resp, err := c.LabelNames(ctx, r, opts...)
		if err != nil {
			return labelsAnswer{}, nil, err
		}
		var rh hintspb.LabelNamesResponseHints
		if h := resp.GetHints(); h != nil {
			if err := h.UnmarshalTo(&rh); err != nil {
				level.Debug(s.logger).Log("msg", "store-gateway label names hints of an unknown type", "gateway", addr, "type", h.GetTypeUrl())
			}
		}
		return labelsAnswer{values: resp.GetNames(), warnings: prefixWarnings(addr, resp.GetWarnings())}, queriedIDs(rh.GetQueriedBlocks()), nil
	})
	if err != nil || d == nil {
		return &storepb.LabelNamesResponse{}, err
	}
	names, warnings, err := finishLabels(d, strictRequest(req.GetPartialResponseStrategy(), req.GetPartialResponseDisabled()), req.GetLimit())
	if err != nil {
		return nil, err
	}
	return &storepb.LabelNamesResponse{Names: names, Warnings: warnings}, nil
}

// LabelValues implements storepb.StoreClient: the union of the gateways' answers over the request's blocks.
func (s *BlocksStore) LabelValues(ctx context.Context, req *storepb.LabelValuesRequest, opts ...grpc.CallOption) (*storepb.LabelValuesResponse, error) {
	ctx, tenants, err := blocksRequestTenants(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetLabel() == "" {
		return nil, status.Error(codes.InvalidArgument, "label name parameter cannot be empty")
	}
	minT, maxT := labelsRange(req.GetStart(), req.GetEnd())
	d, err := queryBlocks(ctx, s, "label_values", tenants, minT, maxT, func(ctx context.Context, c storepb.StoreClient, addr string, ids []string) (labelsAnswer, []string, error) {
		hints, err := anypb.New(&hintspb.LabelValuesRequestHints{BlockMatchers: blockMatchers(ids)})
		if err != nil {
			return labelsAnswer{}, nil, errors.Wrap(err, "encode label values request hints")
		}
		r := proto.Clone(req).(*storepb.LabelValuesRequest)
		r.Hints = hints
		resp, err := c.LabelValues(ctx, r, opts...)
		if err != nil {
			return labelsAnswer{}, nil, err
		}
		var rh hintspb.LabelValuesResponseHints
		if h := resp.GetHints(); h != nil {
			if err := h.UnmarshalTo(&rh); err != nil {
				level.Debug(s.logger).Log("msg", "store-gateway label values hints of an unknown type", "gateway", addr, "type", h.GetTypeUrl())
			}
		}
		return labelsAnswer{values: resp.GetValues(), warnings: prefixWarnings(addr, resp.GetWarnings())}, queriedIDs(rh.GetQueriedBlocks()), nil
	})
	if err != nil || d == nil {
		return &storepb.LabelValuesResponse{}, err
	}
	values, warnings, err := finishLabels(d, strictRequest(req.GetPartialResponseStrategy(), req.GetPartialResponseDisabled()), req.GetLimit())
	if err != nil {
		return nil, err
	}
	return &storepb.LabelValuesResponse{Values: values, Warnings: warnings}, nil
}

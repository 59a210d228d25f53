package store

import (
	"context"
	"math"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

const (
	// ScopeMetadataKey is the gRPC metadata key with which a Strata querier asks an ingester's address for the
	// ingester's own data. In `strata all` that address also serves the merged view (ingester and bucket) to
	// other queriers; without the key a querier of the ring would ask the merged view of every other `all`
	// process, which asks it back.
	ScopeMetadataKey = "strata-store-scope"
	// ScopeIngester is the value of ScopeMetadataKey that selects the ingester's data.
	ScopeIngester = "ingester"
)

// IngesterDialOptions are the dial options of a connection to an ingester's StoreAPI: every call carries
// ScopeMetadataKey=ScopeIngester.
func IngesterDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(ingesterScope(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(ingesterScope(ctx), desc, cc, method, opts...)
		}),
	}
}

func ingesterScope(ctx context.Context) context.Context {
	if md, ok := metadata.FromOutgoingContext(ctx); ok && len(md.Get(ScopeMetadataKey)) > 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, ScopeMetadataKey, ScopeIngester)
}

// StoreInfoServer is a StoreAPI with its Info.
type StoreInfoServer interface {
	storepb.StoreServer
	infopb.InfoServer
}

// ScopedServer is the StoreAPI of a `strata all` gRPC port: calls that carry ScopeMetadataKey=ScopeIngester (a
// Strata querier asking the ingester of the ring) reach the ingester; every other call (a Thanos querier, a
// Strata querier's --endpoint) reaches the merged view of ingesters and store-gateways, as `strata querier`
// serves it, and its Info is the union of the Infos of the process's ingester and store-gateway.
type ScopedServer struct {
	storepb.UnimplementedStoreServer
	infopb.UnimplementedInfoServer

	ingester StoreInfoServer
	merged   storepb.StoreServer
	infos    []infopb.InfoServer
}

// NewScopedServer returns the StoreAPI that routes between ingester and merged; infos answer the merged Info.
func NewScopedServer(ingester StoreInfoServer, merged storepb.StoreServer, infos ...infopb.InfoServer) *ScopedServer {
	return &ScopedServer{ingester: ingester, merged: merged, infos: infos}
}

func (s *ScopedServer) ingesterScoped(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return slices.Contains(md.Get(ScopeMetadataKey), ScopeIngester)
}

func (s *ScopedServer) store(ctx context.Context) storepb.StoreServer {
	if s.ingesterScoped(ctx) {
		return s.ingester
	}
	return s.merged
}

// Series implements thanos.Store.
func (s *ScopedServer) Series(r *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	return s.store(srv.Context()).Series(r, srv)
}

// LabelNames implements thanos.Store.
func (s *ScopedServer) LabelNames(ctx context.Context, r *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	return s.store(ctx).LabelNames(ctx, r)
}

// LabelValues implements thanos.Store.
func (s *ScopedServer) LabelValues(ctx context.Context, r *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	return s.store(ctx).LabelValues(ctx, r)
}

// Info implements thanos.info.Info: the ingester's, or the union of the infos.
func (s *ScopedServer) Info(ctx context.Context, r *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	if s.ingesterScoped(ctx) {
		return s.ingester.Info(ctx, r)
	}
	resps := make([]*infopb.InfoResponse, 0, len(s.infos))
	for _, i := range s.infos {
		resp, err := i.Info(ctx, r)
		if err != nil {
			return nil, err
		}
		resps = append(resps, resp)
	}
	return MergeInfos(ComponentQuery, resps...), nil
}

// MergeInfos is the Info of a store that answers with the data of all of resps: the union of their time ranges
// and label sets. A part with data but unknown label sets (none given while its time range is unbounded, as a
// store-gateway before its first sync) makes the label sets unknown, so that no querier rules the store out by
// them; a part without data (an empty time range) adds nothing. Without any data the range is unbounded.
func MergeInfos(component string, resps ...*infopb.InfoResponse) *infopb.InfoResponse {
	out := &infopb.InfoResponse{ComponentType: component, Store: &infopb.StoreInfo{MinTime: math.MaxInt64, MaxTime: math.MinInt64}}
	unknownLabels := false
	seen := map[string]bool{}
	var lsets []labels.Labels
	for _, r := range resps {
		st := r.GetStore()
		if st == nil || st.GetMinTime() > st.GetMaxTime() {
			continue
		}
		out.Store.MinTime = min(out.Store.MinTime, st.GetMinTime())
		out.Store.MaxTime = max(out.Store.MaxTime, st.GetMaxTime())
		if len(r.GetLabelSets()) == 0 {
			unknownLabels = true
		}
		for _, ls := range r.GetLabelSets() {
			l := LabelsFromPB(ls.GetLabels())
			if k := l.String(); !seen[k] {
				seen[k] = true
				lsets = append(lsets, l)
			}
		}
	}
	if out.Store.MinTime > out.Store.MaxTime {
		out.Store.MinTime, out.Store.MaxTime = math.MinInt64, math.MaxInt64
	}
	if unknownLabels {
		return out
	}
	slices.SortFunc(lsets, labels.Compare)
	for _, ls := range lsets {
		out.LabelSets = append(out.LabelSets, &labelpb.ZLabelSet{Labels: LabelsToPB(ls)})
	}
	return out
}

package receive

import (
	"context"
	"strings"

	"github.com/efficientgo/core/errors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
)

// RegisterWriteableStore registers ing as the thanos.WriteableStore gRPC service (the forward RPC from
// distributors and from a stock Thanos receive router) on s. It is storepb.RegisterWriteableStoreServer with
// the request decoded by forwardedWrite instead of the generated UnmarshalVT: the same wire format, the same
// answers, but decoded into pooled slabs (remotewrite.DecodeV1 with Options.Slabs), where UnmarshalVT allocated
// a message and two strings per label — most of an ingester's CPU per sample went to that and its garbage.
func RegisterWriteableStore(s grpc.ServiceRegistrar, ing *Ingester) {
	desc := storepb.WriteableStore_ServiceDesc // for its names; its handler is not used
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: desc.ServiceName,
		HandlerType: desc.HandlerType,
		Methods:     []grpc.MethodDesc{{MethodName: "RemoteWrite", Handler: remoteWriteHandler}},
		Streams:     desc.Streams,
		Metadata:    desc.Metadata,
	}, ing)
}

// remoteWriteHandler is the gRPC method handler of RemoteWrite. The codec hands it the request's bytes; they
// are decoded (and appended) once the interceptors let the call through and one of the ingester's push slots is
// free (IngesterConfig.MaxConcurrentPushes), so that a request waiting holds no more than its bytes, and one
// whose caller gave up meanwhile is dropped undecoded. The decoded request goes back to the pool when the handler
// returns: Push keeps nothing of it (the TSDB copies the labels of a new series; metadata are decoded into their
// own messages; the tenant is a copy).
func remoteWriteHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	ing := srv.(*Ingester)
	// Only the bytes until a slot is free: a pooled forwardedWrite (its slabs) is taken once one is.
	w := &forwardedWrite{}
	defer w.releaseRaw()
	r, err := ing.admitWrite(dec, w, func() int { return len(w.raw) })
	defer r.end()
	if err != nil {
		return nil, err
	}
	return ing.interceptWrite(ctx, srv, w, storepb.WriteableStore_RemoteWrite_FullMethodName, interceptor)
}

// admitWrite admits a forwarded write within the instance limits (the count before the bytes are gathered, the
// bytes once they are), or refuses it at once: Unavailable, a replica's failure to the distributor, which
// retrying later may cure. dec gathers its bytes into m, size tells how many. The reservation holds them until
// its end (call it in any case).
func (i *Ingester) admitWrite(dec func(any) error, m any, size func() int) (*reservation, error) {
	r := &reservation{l: i.inflight}
	if err := i.inflight.start(); err != nil {
		i.metrics.rejectedInflight.Inc()
		r.l = nil
		return r, status.Error(codes.Unavailable, err.Error())
	}
	if err := dec(m); err != nil {
		return r, err
	}
	if err := r.reserve(size()); err != nil {
		i.metrics.rejectedInflightBytes.Inc()
		return r, status.Error(codes.Unavailable, err.Error())
	}
	return r, nil
}

// interceptWrite runs the interceptors of method, then decodes and appends w (remoteWriteRaw).
func (i *Ingester) interceptWrite(ctx context.Context, srv any, w *forwardedWrite, method string, interceptor grpc.UnaryServerInterceptor) (any, error) {
	var (
		resp any
		err  error
	)
	if interceptor == nil {
		resp, err = i.remoteWriteRaw(ctx, w)
	} else {
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: method}
		resp, err = interceptor(ctx, w, info, func(ctx context.Context, req any) (any, error) {
			return i.remoteWriteRaw(ctx, req.(*forwardedWrite))
		})
	}
	return resp, detachedStatus(err)
}

// remoteWriteRaw takes a push slot, decodes w's bytes and appends them.
func (i *Ingester) remoteWriteRaw(ctx context.Context, w *forwardedWrite) (*storepb.WriteResponse, error) {
	waiting := i.metrics.pushes.WithLabelValues("waiting")
	waiting.Inc()
	select {
	case i.pushSlots <- struct{}{}:
		waiting.Dec()
	case <-ctx.Done():
		waiting.Dec()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	running := i.metrics.pushes.WithLabelValues("running")
	running.Inc()
	defer func() {
		running.Dec()
		<-i.pushSlots
	}()
	if w.alias {
		// Decoded into a pooled forwardedWrite, which takes over the bytes (and their release).
		d := i.forwards.get()
		defer i.forwards.put(d)
		d.raw, d.alias, d.release, d.tenant, d.v1 = w.raw, true, w.release, w.tenant, w.v1
		d.snappyBody, d.snappyLen = w.snappyBody, w.snappyLen
		w.raw, w.release, w.snappyBody = nil, nil, nil
		w = d
	}
	w.skipKnown = func(w *forwardedWrite, runs [][]byte) []bool { return i.skipKnownLabels(ctx, w, runs) }
	if err := w.decodeRaw(); err != nil {
		i.received.put(w.received)
		w.received = nil
		// The client's error, which retrying cannot fix (gRPC would answer a codec error Internal, which a
		// distributor takes for the ingester's failure and its client retries for ever).
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp, err := i.remoteWriteForwarded(ctx, w)
	w.received = nil                 // remoteWrite put it back
	return resp, detachedStatus(err) // before the deferred put releases the bytes
}

// detachedStatus is err as the gRPC status it is answered with, its message copied: the request's strings
// alias its receive buffer (forwardedWrite.UnmarshalInPlace), which goes back to the codec's pool once the
// request is appended, before gRPC reads the error. Every message is built by formatting (a copy) today; this keeps it so
// whatever an error comes to quote.
func detachedStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err) // as gRPC's server converts it: context errors keep their code
	}
	return status.Error(st.Code(), strings.Clone(st.Message()))
}

func (i *Ingester) remoteWriteForwarded(ctx context.Context, w *forwardedWrite) (*storepb.WriteResponse, error) {
	return i.remoteWrite(ctx, w.tenant, w.tenantData, &storepb.WriteRequest{Timeseries: w.series, Metadata: w.metadata}, w.labelRuns, w.invalidUTF8, w.received)
}

// skipOptions sets o.SkipLabels to w.skipKnown's, if any.
func (w *forwardedWrite) skipOptions(o *remotewrite.Options) {
	if w.skipKnown != nil {
		o.SkipLabels = func(runs [][]byte) []bool { return w.skipKnown(w, runs) }
	}
}

// forwardedWrite is a storepb.WriteRequest as the ingester decodes it (see RegisterWriteableStore). It
// implements the storepb codec's message methods, so gRPC decodes into it; it is never sent.
type forwardedWrite struct {
	tenant     string
	tenantData bool // timeseriesTenantData (field 4) is present: refused by remoteWriteTenant
	series     []*prompb.TimeSeries
	// labelRuns are the series' labels as received (remotewrite.Options.KeepLabelRuns), aliasing the bytes.
	labelRuns [][]byte
	metadata  []*prompb.MetricMetadata
	slabs     remotewrite.Slabs
	// invalidUTF8: some series has a label that is not valid UTF-8 (the decoder checked every label).
	invalidUTF8 bool
	// decodeErr: the request is malformed (answered InvalidArgument by the handler).
	decodeErr error
	// raw are the received bytes, decoded by decodeRaw; alias: the series' strings alias them, and release
	// gives them back (UnmarshalInPlace).
	raw     []byte
	alias   bool
	release func()
	// v1: raw is a prometheus.WriteRequest without metadata (RemoteWriteCompressed's body, decompressed), of
	// tenant; else a storepb.WriteRequest.
	v1 bool
	// snappyBody, when not nil, is the v1 body still compressed (aliasing raw, the received message), of
	// snappyLen bytes decompressed: decodeRaw decompresses it first.
	snappyBody []byte
	snappyLen  int
	// skipKnown, when not nil, is the decoder's SkipLabels: it looks the series up in the tenant's seriesRefs
	// and sets received (Ingester.skipKnownLabels).
	skipKnown func(w *forwardedWrite, runs [][]byte) []bool
	received  *receivedSeries
}

// The storepb.WriteRequest fields the ingester reads (rpc.proto).
const (
	fwdFieldTimeseries = 1
	fwdFieldTenant     = 2
	fwdFieldReplica    = 3 // not used
	fwdFieldTenantData = 4
	fwdFieldMetadata   = 5
)

// UnmarshalInPlace implements storepb.InPlaceUnmarshaler: w keeps b (and releases it when it goes back to its
// pool, after the handler returned); decodeRaw then decodes it as UnmarshalVT does, the series' strings aliasing
// b. What the ingester keeps of a request is copied: the TSDB copies the labels of a series it creates, errors
// format their messages, metadata and the tenant are decoded into strings of their own.
func (w *forwardedWrite) UnmarshalInPlace(b []byte, release func()) error {
	w.raw, w.release, w.alias = b, release, true
	return nil
}

// releaseRaw gives back the bytes UnmarshalInPlace kept, unless they were handed over.
func (w *forwardedWrite) releaseRaw() {
	if w.release != nil {
		w.release()
		w.release = nil
	}
}

// decodeRaw decodes the bytes UnmarshalInPlace kept.
func (w *forwardedWrite) decodeRaw() error {
	switch {
	case !w.alias:
		return w.decodeErr // decoded by UnmarshalVT already
	case w.v1:
		if w.snappyBody != nil {
			if err := w.decompress(); err != nil {
				return err
			}
		}
		return w.decodeV1Body(w.raw)
	}
	return w.decode(w.raw)
}

// UnmarshalVT decodes a storepb.WriteRequest. It accepts what proto.Unmarshal accepts (unknown fields
// ignored), except that a request decoding into far more memory than its size (empty series or labels by the
// million) is refused, as the distributor refuses such a remote write, and that a label that is not valid
// UTF-8 only marks the request (invalidUTF8): the ingester drops such a series alone (validateForwarded).
//
// A malformed request is not an error here but decodeErr, which decodeRaw returns for the handler to answer.
func (w *forwardedWrite) UnmarshalVT(b []byte) error {
	w.decodeErr = w.decode(b)
	return nil
}

// decode decodes b into w; see UnmarshalVT.
func (w *forwardedWrite) decode(b []byte) error {
	series := false
	for rest := b; len(rest) > 0; {
		num, typ, n := remotewrite.ConsumeTag(rest)
		if n < 0 {
			return remotewrite.WireError(n, "forwarded write request")
		}
		rest = rest[n:]
		// As proto.Unmarshal: a known field with another wire type is an unknown field (the replica, a varint,
		// is not used).
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, rest)
			if n < 0 {
				return remotewrite.WireError(n, "forwarded write request")
			}
			rest = rest[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(rest)
		if n < 0 {
			return remotewrite.WireError(n, "forwarded write request")
		}
		rest = rest[n:]
		switch num {
		case fwdFieldTimeseries:
			series = true
		case fwdFieldTenant:
			w.tenant = string(v)
		case fwdFieldTenantData:
			// Refused anyway (remoteWriteTenant), but a malformed one is a malformed request, as before.
			if err := proto.Unmarshal(v, &storepb.TimeSeriesTenantTuple{}); err != nil {
				return errors.Wrap(err, "decode forwarded write request: timeseriesTenantData")
			}
			w.tenantData = true
		case fwdFieldMetadata:
			m := &prompb.MetricMetadata{}
			// proto.Unmarshal, as the series decoder follows it (UnmarshalVT differs on malformed bodies).
			if err := proto.Unmarshal(v, m); err != nil {
				return errors.Wrapf(err, "decode forwarded write request: metadata %d", len(w.metadata))
			}
			w.metadata = append(w.metadata, m)
		}
	}
	if !series {
		return nil
	}
	var err error
	o := remotewrite.Options{Slabs: &w.slabs, MarkInvalidUTF8: true, ThanosWriteRequest: true, AliasBuf: w.alias, KeepLabelRuns: true}
	w.skipOptions(&o)
	w.series, err = remotewrite.DecodeV1(b, &o)
	w.labelRuns = o.LabelRuns()
	w.invalidUTF8 = len(o.InvalidUTF8()) > 0
	return errors.Wrap(err, "decode forwarded write request")
}

// SizeVT and MarshalToSizedBufferVT complete the codec's interface; a forwardedWrite is only ever received.
func (w *forwardedWrite) SizeVT() int { return 0 }

func (w *forwardedWrite) MarshalToSizedBufferVT([]byte) (int, error) {
	return 0, errors.New("a decoded forwarded write is not sent")
}

// maxPooledForwardSlabs: slabs that grew beyond this (a request far larger than usual) are not pooled, so that
// one outsized request does not stay in memory for good.
const maxPooledForwardSlabs = 16 << 20

// newForwardedPool returns the free list of decoded forward requests, slabs included: n, as many as the
// ingester decodes at once (its push slots), are kept.
func newForwardedPool(n int) *freeList[forwardedWrite] {
	return newFreeList(n, func(w *forwardedWrite) bool {
		w.releaseRaw() // nothing reads the series any more: their bytes go back to the codec's pool
		if w.slabs.Size() > maxPooledForwardSlabs {
			return false
		}
		w.slabs.Reset()
		clear(w.metadata)
		*w = forwardedWrite{slabs: w.slabs, metadata: w.metadata[:0]}
		return true
	})
}

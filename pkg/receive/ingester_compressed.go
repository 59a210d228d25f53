package receive

import (
	"context"
	"encoding/binary"

	"github.com/efficientgo/core/errors"
	"github.com/klauspost/compress/snappy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
)

// RemoteWriteCompressed is Strata's own forward of a write from a distributor to an ingester, beside Thanos's
// RemoteWrite: the remote-write 1.0 request as its client sent it, snappy-compressed, when the distributor's
// validation left every series of it as it was (the usual case). The distributor then neither encodes the
// request again nor sends it uncompressed to each of the replicas: with replication factor 3 it wrote three
// times the decompressed request (~5× the body) to the network, which cost it more CPU than anything but
// decoding. The ingester decompresses it and goes on as with a RemoteWrite (the same decoder, validation,
// limits and answers).
//
// The message, by hand as storepb's (field numbers of a protobuf message):
//
//	message CompressedWriteRequest {
//	  string tenant = 1;
//	  bytes snappy_v1 = 2; // a prometheus.WriteRequest without metadata, snappy block format
//	}
//
// and the answer is a thanos.WriteResponse. An ingester of a Strata version without it answers Unimplemented,
// and the distributor sends such an ingester RemoteWrites (see compressedSupport).
const (
	ingesterServiceName = "strata.Ingester"
	// RemoteWriteCompressedFullMethodName is the full gRPC method name of RemoteWriteCompressed.
	RemoteWriteCompressedFullMethodName = "/" + ingesterServiceName + "/RemoteWriteCompressed"

	compressedFieldTenant = 1
	compressedFieldBody   = 2
	// v1FieldMetadata is prometheus.WriteRequest's metadata field, which a compressed write does not carry.
	v1FieldMetadata = 3
)

// compressedWriteServer is the gRPC server of RemoteWriteCompressed.
type compressedWriteServer struct {
	ing *Ingester
	// maxDecoded bounds a write's decompressed size: the largest message the gRPC server takes, so that a write
	// too large as a RemoteWrite is too large compressed too.
	maxDecoded int
}

// RegisterCompressedWrites registers the strata.Ingester service (RemoteWriteCompressed) of ing on s;
// maxDecoded is the gRPC server's largest message (grpc_server_max_recv_msg_size), which bounds a write's
// decompressed size as it bounds a RemoteWrite's.
func RegisterCompressedWrites(s grpc.ServiceRegistrar, ing *Ingester, maxDecoded int) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: ingesterServiceName,
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "RemoteWriteCompressed", Handler: remoteWriteCompressedHandler}},
		Metadata:    "strata/ingester.proto",
	}, &compressedWriteServer{ing: ing, maxDecoded: maxDecoded})
}

// remoteWriteCompressedHandler is RemoteWriteCompressed's method handler: remoteWriteHandler's steps (the
// instance limits, the request's bytes reserved before they are held, interceptors, a push slot), with the body
// decompressed into a pooled buffer before the rest is decoded from it.
func remoteWriteCompressedHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	cs := srv.(*compressedWriteServer)
	ing := cs.ing
	m := &compressedWrite{}
	defer m.releaseRaw()
	r, err := ing.admitWrite(dec, m, func() int { return len(m.raw) })
	defer r.end()
	if err != nil {
		return nil, err
	}
	if err := m.parse(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// The decompressed size, from the snappy header: checked before anything that large is allocated.
	n, err := snappy.DecodedLen(m.body)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, errors.Wrap(err, "decompress forwarded write: read the snappy block header").Error())
	}
	if n > cs.maxDecoded {
		return nil, status.Errorf(codes.InvalidArgument, "decompressed forwarded write of %d bytes exceeds the limit of %d bytes (grpc_server_max_recv_msg_size)", n, cs.maxDecoded)
	}
	if err := r.reserve(n); err != nil {
		ing.metrics.rejectedInflightBytes.Inc()
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	// Decompressed once it has a push slot (decodeRaw): a request waiting for one holds only what it was sent.
	w := &forwardedWrite{tenant: m.tenant, v1: true, raw: m.raw, alias: true, release: m.release, snappyBody: m.body, snappyLen: n}
	m.raw, m.body, m.release = nil, nil, nil
	defer w.releaseRaw() // unless handed over to a pooled forwardedWrite
	return ing.interceptWrite(ctx, srv, w, RemoteWriteCompressedFullMethodName, interceptor)
}

// decompress replaces w's received message with its body decompressed (snappyLen bytes, checked against the
// limit by the handler) into a pooled buffer.
func (w *forwardedWrite) decompress() error {
	pool := storepb.BufferPool()
	buf := pool.Get(w.snappyLen)
	decoded, err := snappy.Decode((*buf)[:w.snappyLen], w.snappyBody)
	if err == nil && len(decoded) != w.snappyLen {
		err = errors.Newf("%d bytes decompressed, the header said %d", len(decoded), w.snappyLen)
	}
	if err != nil {
		pool.Put(buf)
		return errors.Wrap(err, "decompress forwarded write (snappy block)")
	}
	w.releaseRaw() // the received message: what is left of it is decompressed
	w.raw, w.snappyBody, w.release = decoded, nil, func() { pool.Put(buf) }
	return nil
}

// decodeV1Body decodes b, a prometheus.WriteRequest without metadata (RemoteWriteCompressed's body), into w as
// decode does a forwarded storepb.WriteRequest.
func (w *forwardedWrite) decodeV1Body(b []byte) error {
	if err := forEachBytesField(b, v1FieldMetadata, "compressed forwarded write", func([]byte) error {
		return errors.New("decode compressed forwarded write: it carries metadata, which only RemoteWrite forwards")
	}); err != nil {
		return err
	}
	o := remotewrite.Options{Slabs: &w.slabs, MarkInvalidUTF8: true, AliasBuf: w.alias, KeepLabelRuns: true}
	w.skipOptions(&o)
	var err error
	w.series, err = remotewrite.DecodeV1(b, &o)
	w.labelRuns = o.LabelRuns()
	w.invalidUTF8 = len(o.InvalidUTF8()) > 0
	return errors.Wrap(err, "decode compressed forwarded write")
}

// compressedWrite is a RemoteWriteCompressed request: sent by the distributor (tenant, body), received by the
// ingester (raw, parsed into tenant and body aliasing it).
type compressedWrite struct {
	tenant string
	body   []byte
	// raw are the received bytes (UnmarshalInPlace), which body aliases; release gives them back.
	raw     []byte
	release func()
}

// SizeVT is the size of the marshalled request.
func (m *compressedWrite) SizeVT() int {
	n := 0
	if m.tenant != "" {
		n += 1 + protowire.SizeBytes(len(m.tenant))
	}
	return n + 1 + protowire.SizeBytes(len(m.body))
}

// MarshalToSizedBufferVT writes the request at the end of dAtA, as vtprotobuf's does.
func (m *compressedWrite) MarshalToSizedBufferVT(dAtA []byte) (int, error) {
	size := m.SizeVT()
	if len(dAtA) < size {
		return 0, errors.Newf("compressed write of %d bytes does not fit %d", size, len(dAtA))
	}
	out := dAtA[len(dAtA)-size:]
	n := 0
	if m.tenant != "" {
		out[n] = compressedFieldTenant<<3 | byte(protowire.BytesType)
		n++
		n += binary.PutUvarint(out[n:], uint64(len(m.tenant)))
		n += copy(out[n:], m.tenant)
	}
	out[n] = compressedFieldBody<<3 | byte(protowire.BytesType)
	n++
	n += binary.PutUvarint(out[n:], uint64(len(m.body)))
	n += copy(out[n:], m.body)
	return n, nil
}

// UnmarshalVT keeps a copy of b (the codec gives the message in place instead: UnmarshalInPlace).
func (m *compressedWrite) UnmarshalVT(b []byte) error {
	m.raw, m.release = append([]byte(nil), b...), nil
	return nil
}

// UnmarshalInPlace implements storepb.InPlaceUnmarshaler: m keeps b until releaseRaw.
func (m *compressedWrite) UnmarshalInPlace(b []byte, release func()) error {
	m.raw, m.release = b, release
	return nil
}

// releaseRaw gives back the received bytes, once.
func (m *compressedWrite) releaseRaw() {
	if m.release != nil {
		m.release()
		m.release = nil
	}
	m.raw, m.body = nil, nil
}

// parse reads the tenant and the body out of raw, as proto.Unmarshal would (unknown fields skipped, the last of
// a repeated field kept).
func (m *compressedWrite) parse() error {
	const what = "compressed forwarded write request"
	if err := forEachBytesField(m.raw, compressedFieldTenant, what, func(v []byte) error {
		m.tenant = string(v)
		return nil
	}); err != nil {
		return err
	}
	body := false
	if err := forEachBytesField(m.raw, compressedFieldBody, what, func(v []byte) error {
		m.body, body = v, true
		return nil
	}); err != nil {
		return err
	}
	if !body {
		return errors.New("compressed forwarded write request without a body")
	}
	return nil
}

package storepb

import (
	"math/bits"
	"sync"

	"github.com/efficientgo/core/errors"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the default "proto" codec this one falls back to
	"google.golang.org/grpc/mem"
)

// vtMessage is a message with vtprotobuf-generated (reflection-free) marshalling: every StoreAPI message.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT(dAtA []byte) (int, error)
	UnmarshalVT(dAtA []byte) error
}

// InPlaceUnmarshaler is a message that decodes in place: what it decodes may refer to data's bytes (strings
// aliasing them), so it keeps data until it calls release, exactly once, when nothing refers to it any more.
// The codec gives it a pooled buffer and does not free it itself. (The ingester's forwarded writes: a request's
// strings are then never copied.)
type InPlaceUnmarshaler interface {
	UnmarshalInPlace(data []byte, release func()) error
}

// The codec is registered process-wide under gRPC's "proto" name, as gRPC requires; importing storepb is enough
// for both clients and servers to use it. The bytes are the same protobuf wire format either way: only the Go
// code that produces and reads them differs.
func init() {
	encoding.RegisterCodecV2(&vtCodec{fallback: encoding.GetCodecV2("proto")})
}

// vtCodec marshals messages that have vtprotobuf methods with them (several times faster than reflection, and
// without UTF-8 validation of every label, which the write path does once at the edge), and any other message
// with gRPC's default protobuf codec.
type vtCodec struct {
	fallback encoding.CodecV2
}

func (c *vtCodec) Name() string { return "proto" }

func (c *vtCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMessage)
	if !ok {
		return c.fallback.Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVT(buf); err != nil {
			return nil, errors.Wrapf(err, "marshal %T", v)
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	buf := codecPool.Get(size)
	if _, err := m.MarshalToSizedBufferVT((*buf)[:size]); err != nil {
		codecPool.Put(buf)
		return nil, errors.Wrapf(err, "marshal %T", v)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, codecPool)}, nil
}

func (c *vtCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(InPlaceUnmarshaler); ok {
		buf := data.MaterializeToBuffer(codecPool)
		return errors.Wrapf(m.UnmarshalInPlace(buf.ReadOnlyData(), buf.Free), "unmarshal %T", v)
	}
	m, ok := v.(vtMessage)
	if !ok {
		return c.fallback.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(codecPool)
	defer buf.Free()
	// UnmarshalVT copies what it keeps (strings, bytes): the buffer goes back to the pool afterwards.
	return errors.Wrapf(m.UnmarshalVT(buf.ReadOnlyData()), "unmarshal %T", v)
}

// codecPool holds the buffers large messages are marshalled into, and received ones gathered into. Unlike gRPC's
// default pool it does not clear a buffer it hands out: vtprotobuf's MarshalToSizedBufferVT writes every byte
// of the sized buffer, and gathering copies every byte received (a distributor sends megabytes per request to
// each ingester, and clearing them first cost a few percent of its CPU, and of the ingesters').
var codecPool mem.BufferPool = &unclearedPool{}

// BufferPool is the pool of the codec's buffers, for bytes a message is decoded from that the codec did not
// receive (the ingester's decompressed writes). Its buffers are not cleared: write every byte of one before
// reading it.
func BufferPool() mem.BufferPool { return codecPool }

// unclearedPool is a mem.BufferPool of byte slices in power-of-two size classes, handed out as they were given
// back.
type unclearedPool struct {
	classes [unclearedMaxClass - unclearedMinClass + 1]sync.Pool
}

const (
	unclearedMinClass = 12 // 4 KiB
	unclearedMaxClass = 24 // 16 MiB: larger buffers are not kept (one outsized message does not stay in memory)
)

func (u *unclearedPool) Get(n int) *[]byte {
	c := max(unclearedMinClass, bits.Len(uint(max(n, 1)-1))) // the smallest class that holds n
	if c <= unclearedMaxClass {
		if b, ok := u.classes[c-unclearedMinClass].Get().(*[]byte); ok {
			*b = (*b)[:n]
			return b
		}
	}
	b := make([]byte, n, max(n, 1<<c))
	return &b
}

func (u *unclearedPool) Put(b *[]byte) {
	c := bits.Len(uint(cap(*b))) - 1 // the largest class it holds
	if c < unclearedMinClass || c > unclearedMaxClass {
		return
	}
	u.classes[c-unclearedMinClass].Put(b)
}

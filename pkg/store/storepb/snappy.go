package storepb

import (
	"io"
	"sync"

	"github.com/efficientgo/core/errors"
	"github.com/klauspost/compress/snappy"
	"google.golang.org/grpc/encoding"
)

// SnappyCompressorName is the gRPC compressor name ("grpc-encoding: snappy")
// under which Thanos components send and accept snappy-compressed messages.
const SnappyCompressorName = "snappy"

// The compressor is registered process-wide, as gRPC requires; importing
// storepb is enough to make both clients (grpc.UseCompressor) and servers
// accept "snappy".
func init() {
	encoding.RegisterCompressor(newSnappyCompressor())
}

// snappyCompressor implements encoding.Compressor with the snappy framing
// format (stream identifier chunk followed by compressed/uncompressed data
// chunks with CRC-32C), i.e. what github.com/golang/snappy's
// NewBufferedWriter/NewReader produce and consume. This is the format of
// github.com/mostynb/go-grpc-compression/snappy and of Thanos' own snappy
// compressor, so the bytes are interchangeable with Thanos.
type snappyCompressor struct {
	writers sync.Pool
	readers sync.Pool
}

func newSnappyCompressor() *snappyCompressor {
	return &snappyCompressor{
		writers: sync.Pool{New: func() any { return snappy.NewBufferedWriter(nil) }},
		readers: sync.Pool{New: func() any { return snappy.NewReader(nil) }},
	}
}

// Name implements encoding.Compressor.
func (c *snappyCompressor) Name() string { return SnappyCompressorName }

// Compress implements encoding.Compressor. The returned writer must be closed
// to flush the last frame; closing returns the encoder to the pool.
func (c *snappyCompressor) Compress(w io.Writer) (io.WriteCloser, error) {
	sw := c.writers.Get().(*snappy.Writer)
	sw.Reset(w)
	return &snappyWriteCloser{w: sw, pool: &c.writers}, nil
}

// Decompress implements encoding.Compressor. The decoder goes back to the pool
// once the stream has been read to io.EOF or the reader is closed.
func (c *snappyCompressor) Decompress(r io.Reader) (io.Reader, error) {
	sr := c.readers.Get().(*snappy.Reader)
	sr.Reset(r)
	return &snappyReader{r: sr, pool: &c.readers}, nil
}

type snappyWriteCloser struct {
	w    *snappy.Writer
	pool *sync.Pool
}

func (s *snappyWriteCloser) Write(p []byte) (int, error) {
	if s.w == nil {
		return 0, errors.New("snappy: write after close")
	}
	return s.w.Write(p)
}

func (s *snappyWriteCloser) Close() error {
	if s.w == nil {
		return nil
	}
	err := s.w.Close()
	// Reset detaches the destination writer so the pooled encoder does not
	// keep it alive.
	s.w.Reset(nil)
	s.pool.Put(s.w)
	s.w = nil
	if err != nil {
		return errors.Wrap(err, "snappy: flush")
	}
	return nil
}

type snappyReader struct {
	r    *snappy.Reader
	pool *sync.Pool
}

func (s *snappyReader) Read(p []byte) (int, error) {
	if s.r == nil {
		return 0, io.EOF
	}
	n, err := s.r.Read(p)
	if errors.Is(err, io.EOF) {
		s.release()
	}
	return n, err
}

// Close returns the decoder to the pool if Read has not already done so at
// io.EOF. gRPC closes decompression readers that implement io.Closer, which
// also recycles decoders of messages that failed or were not read to the end.
func (s *snappyReader) Close() error {
	if s.r != nil {
		s.release()
	}
	return nil
}

// release returns the decoder to the pool; it must be called at most once.
func (s *snappyReader) release() {
	s.r.Reset(nil)
	s.pool.Put(s.r)
	s.r = nil
}

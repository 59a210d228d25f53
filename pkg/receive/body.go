package receive

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/efficientgo/core/errors"
	"github.com/klauspost/compress/snappy"

	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
)

// writeProto is the protobuf message of a remote write request, from its Content-Type.
type writeProto = remotewrite.Version

const (
	// writeV1 is remote write 1.0's prometheus.WriteRequest.
	writeV1 = remotewrite.V1
	// writeV2 is remote write 2.0's io.prometheus.write.v2.Request.
	writeV2 = remotewrite.V2
)

// The media type and "proto" parameter values of remote write (the 1.0 and 2.0 specs, and Prometheus's
// client_golang exp/api/remote, which Prometheus's own receiver uses).
const (
	contentTypeProtobuf = remotewrite.ContentTypeProtobuf
	protoMessageV1      = remotewrite.ProtoMessageV1
	protoMessageV2      = remotewrite.ProtoMessageV2
	contentTypeV2       = remotewrite.ContentTypeV2
	encodingSnappy      = "snappy"
)

// parseWriteContentType returns the message a Content-Type names, as Prometheus's receiver does: an empty
// Content-Type or application/x-protobuf without a proto parameter is 1.0 (the 1.0 spec sends no parameter),
// proto=prometheus.WriteRequest is 1.0, proto=io.prometheus.write.v2.Request is 2.0. Anything else is an error
// (the handler answers 415). Unlike Prometheus's parser it follows RFC 9110: case-insensitive media type and
// parameter name, optional spaces around ";".
func parseWriteContentType(contentType string) (writeProto, error) {
	if strings.TrimSpace(contentType) == "" {
		return writeV1, nil
	}
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return 0, errors.Wrapf(err, "parse Content-Type %q", contentType)
	}
	if mediaType != contentTypeProtobuf {
		return 0, errors.Newf("unsupported Content-Type %q: remote write expects %s (1.0) or %s (2.0)",
			contentType, contentTypeProtobuf, contentTypeV2)
	}
	switch params["proto"] {
	case "", protoMessageV1:
		return writeV1, nil
	case protoMessageV2:
		return writeV2, nil
	}
	return 0, errors.Newf("unsupported protobuf message %q in Content-Type: this server accepts %s and %s",
		params["proto"], protoMessageV1, protoMessageV2)
}

// checkContentEncoding accepts snappy, the only encoding both specs define, and an empty Content-Encoding
// (Prometheus's receiver decodes that as snappy too).
func checkContentEncoding(enc string) error {
	if enc == "" || strings.EqualFold(strings.TrimSpace(enc), encodingSnappy) {
		return nil
	}
	return errors.Newf("unsupported Content-Encoding %q: remote write bodies are %s-compressed (block format)", enc, encodingSnappy)
}

// errBodyTooLarge marks a body larger than max_recv_msg_size, before or after decompression (answered 413).
var errBodyTooLarge = errors.New("request body too large")

// snappyBodyReader reads and decompresses request bodies into pooled buffers. It is safe for concurrent use.
type snappyBodyReader struct {
	maxSize    int
	compressed sync.Pool // *bytes.Buffer
	decoded    sync.Pool // *[]byte
}

func newSnappyBodyReader(maxSize int) *snappyBodyReader {
	return &snappyBodyReader{
		maxSize:    maxSize,
		compressed: sync.Pool{New: func() any { return new(bytes.Buffer) }},
		decoded:    sync.Pool{New: func() any { return new([]byte) }},
	}
}

// read returns the decompressed body of r, and the body as received (compressed; valid until release too). Both the body (at most
// maxSize bytes) and its decompressed length (read from the snappy header before decompressing, so a small
// "decompression bomb" is refused without allocating) are checked against maxSize: over it, the error wraps
// errBodyTooLarge. reserve (nil: none) is told the bytes the request will hold before they are allocated: the
// body's Content-Length before reading it (its length once read when it has none), the decompressed length
// before decompressing; its error is returned as is. The decoded bytes live in a pooled buffer: call release
// once nothing refers to them.
func (s *snappyBodyReader) read(r *http.Request, reserve func(int) error) (decoded, compressed []byte, release func(), err error) {
	decoded, compressed, release, err = s.readBody(r, reserve)
	if release == nil {
		release = func() {}
	}
	return decoded, compressed, release, err
}

// readBody is read; on error, compressed is what was received (its length the size to report), and release
// may be nil.
func (s *snappyBodyReader) readBody(r *http.Request, reserve func(int) error) (decoded, compressed []byte, release func(), err error) {
	if reserve == nil {
		reserve = func(int) error { return nil }
	}
	if r.ContentLength > int64(s.maxSize) {
		return nil, nil, nil, errors.Wrapf(errBodyTooLarge,
			"request body of %d bytes exceeds the limit of %d bytes (max_recv_msg_size)", r.ContentLength, s.maxSize)
	}
	if r.ContentLength > 0 {
		if err := reserve(int(r.ContentLength)); err != nil {
			return nil, nil, nil, err
		}
	}
	buf := s.compressed.Get().(*bytes.Buffer)
	held := false // buf is handed to the caller (release puts it back)
	defer func() {
		if !held {
			s.compressed.Put(buf)
		}
	}()
	buf.Reset()
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, int64(s.maxSize)+1)); err != nil {
		return nil, buf.Bytes(), nil, errors.Wrap(err, "read request body")
	}
	body := buf.Bytes()
	if len(body) > s.maxSize {
		return nil, body, nil, errors.Wrapf(errBodyTooLarge,
			"request body exceeds the limit of %d bytes (max_recv_msg_size)", s.maxSize)
	}
	if r.ContentLength <= 0 {
		if err := reserve(len(body)); err != nil {
			return nil, body, nil, err
		}
	}

	n, err := snappy.DecodedLen(body)
	if err != nil {
		return nil, body, nil, errors.Wrap(err, "decompress request body: read the snappy block header")
	}
	if n > s.maxSize {
		return nil, body, nil, errors.Wrapf(errBodyTooLarge,
			"decompressed request body of %d bytes exceeds the limit of %d bytes (max_recv_msg_size)", n, s.maxSize)
	}
	if err := reserve(n); err != nil {
		return nil, body, nil, err
	}
	dst := s.decoded.Get().(*[]byte)
	if cap(*dst) < n {
		*dst = make([]byte, n)
	}
	decoded, err = snappy.Decode((*dst)[:cap(*dst)], body)
	if err != nil {
		s.decoded.Put(dst)
		return nil, body, nil, errors.Wrap(err, "decompress request body (snappy block)")
	}
	held = true
	return decoded, body, func() {
		s.decoded.Put(dst)
		s.compressed.Put(buf)
	}, nil
}

package storepb_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"math/rand"
	"strings"
	"sync"
	"testing"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/klauspost/compress/snappy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// snappyStreamID is the stream identifier chunk that starts every stream in
// the snappy framing format (github.com/golang/snappy, framing_format.txt).
const snappyStreamID = "\xff\x06\x00\x00sNaPpY"

func snappyCompressor(t testing.TB) encoding.Compressor {
	t.Helper()
	c := encoding.GetCompressor("snappy")
	testutil.Assert(t, c != nil, "snappy compressor not registered")
	testutil.Equals(t, "snappy", c.Name())
	return c
}

func compress(t testing.TB, c encoding.Compressor, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := c.Compress(&buf)
	testutil.Ok(t, err)
	_, err = w.Write(data)
	testutil.Ok(t, err)
	testutil.Ok(t, w.Close())
	return buf.Bytes()
}

func decompress(c encoding.Compressor, data []byte) ([]byte, error) {
	r, err := c.Decompress(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// decodeFramed is an independent decoder of the snappy framing format as
// specified by golang/snappy's framing_format.txt: chunks of
// [type:1][length:3 LE][payload], a stream identifier first, compressed (0x00)
// and uncompressed (0x01) data chunks carrying a masked CRC-32C of the
// uncompressed data and at most 65536 bytes of it, skippable chunks
// 0x80-0xfe, and reserved unskippable chunks 0x02-0x7f being an error.
func decodeFramed(b []byte) ([]byte, error) {
	var out []byte
	for first := true; len(b) > 0; first = false {
		if len(b) < 4 {
			return nil, errors.New("truncated chunk header")
		}
		typ, n := b[0], int(b[1])|int(b[2])<<8|int(b[3])<<16
		b = b[4:]
		if len(b) < n {
			return nil, errors.New("truncated chunk")
		}
		payload := b[:n]
		b = b[n:]
		if first && typ != 0xff {
			return nil, errors.Newf("stream starts with chunk type %#x", typ)
		}
		switch {
		case typ == 0xff:
			if string(payload) != "sNaPpY" {
				return nil, errors.Newf("bad stream identifier %q", payload)
			}
		case typ == 0x00 || typ == 0x01:
			if n < 4 {
				return nil, errors.New("data chunk without checksum")
			}
			data := payload[4:]
			if typ == 0x00 {
				var err error
				if data, err = snappy.Decode(nil, data); err != nil {
					return nil, errors.Wrap(err, "decode block")
				}
			}
			if len(data) > 65536 {
				return nil, errors.Newf("chunk of %d bytes exceeds the snappy block size", len(data))
			}
			c := crc32.Checksum(data, crcTable)
			if masked := (c>>15 | c<<17) + 0xa282ead8; masked != binary.LittleEndian.Uint32(payload[:4]) {
				return nil, errors.New("checksum mismatch")
			}
			out = append(out, data...)
		case typ >= 0x80:
			// Skippable.
		default:
			return nil, errors.Newf("reserved unskippable chunk type %#x", typ)
		}
	}
	return out, nil
}

func testPayloads() map[string][]byte {
	rnd := rand.New(rand.NewSource(1))
	random := make([]byte, 200_000)
	_, _ = rnd.Read(random)
	return map[string][]byte{
		"empty":         {},
		"small":         []byte("hello thanos"),
		"random 200KB":  random,
		"repeated 1MiB": []byte(strings.Repeat("__name__=up,job=node,instance=host:9100;", 1<<20/40)),
		"exactly 64KiB": bytes.Repeat([]byte{'x'}, 65536),
	}
}

// TestSnappyCompressor_Format checks the compressor speaks the snappy framing
// format: its output is read by klauspost/compress/snappy.NewReader (the
// golang/snappy-compatible reader Thanos uses) and by an independent framing
// decoder, and it reads what snappy.NewBufferedWriter produces.
// Every case runs several times to exercise pooled encoders and decoders.
func TestSnappyCompressor_Format(t *testing.T) {
	c := snappyCompressor(t)
	for name, data := range testPayloads() {
		t.Run(name, func(t *testing.T) {
			for range 3 {
				out := compress(t, c, data)
				if len(data) > 0 {
					testutil.Assert(t, bytes.HasPrefix(out, []byte(snappyStreamID)), "no snappy stream identifier: %x", out[:min(len(out), 16)])
				}
				if len(data) > 1000 && name != "random 200KB" {
					testutil.Assert(t, len(out) < len(data)/2, "not compressed: %d -> %d bytes", len(data), len(out))
				}

				got, err := io.ReadAll(snappy.NewReader(bytes.NewReader(out)))
				testutil.Ok(t, err, "klauspost snappy.NewReader")
				testutil.Assert(t, bytes.Equal(data, got), "snappy.NewReader: data mismatch")

				got, err = decodeFramed(out)
				testutil.Ok(t, err, "framing decoder")
				testutil.Assert(t, bytes.Equal(data, got), "framing decoder: data mismatch")

				got, err = decompress(c, out)
				testutil.Ok(t, err)
				testutil.Assert(t, bytes.Equal(data, got), "own decompressor: data mismatch")

				var buf bytes.Buffer
				w := snappy.NewBufferedWriter(&buf)
				_, err = w.Write(data)
				testutil.Ok(t, err)
				testutil.Ok(t, w.Close())
				got, err = decompress(c, buf.Bytes())
				testutil.Ok(t, err, "snappy.NewBufferedWriter output")
				testutil.Assert(t, bytes.Equal(data, got), "snappy.NewBufferedWriter output: data mismatch")
			}
		})
	}
}

func TestSnappyCompressor_CorruptInput(t *testing.T) {
	c := snappyCompressor(t)
	valid := compress(t, c, []byte(strings.Repeat("abcdefgh", 1000)))
	for _, tc := range []struct {
		name  string
		input []byte
	}{
		{name: "flipped payload byte", input: func() []byte {
			b := bytes.Clone(valid)
			b[len(b)-3] ^= 0xff
			return b
		}()},
		{name: "truncated", input: valid[:len(valid)-5]},
		{name: "reserved chunk type", input: append(bytes.Clone(valid), 0x02, 0x01, 0x00, 0x00, 0x00)},
		{name: "raw block without framing", input: snappy.Encode(nil, []byte("hello hello hello"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decompress(c, tc.input)
			testutil.NotOk(t, err)
			// A decoder that failed must not poison the pool.
			got, err := decompress(c, valid)
			testutil.Ok(t, err)
			testutil.Equals(t, 8000, len(got))
		})
	}
}

func TestSnappyCompressor_WriteAfterClose(t *testing.T) {
	c := snappyCompressor(t)
	var buf bytes.Buffer
	w, err := c.Compress(&buf)
	testutil.Ok(t, err)
	_, err = w.Write([]byte("x"))
	testutil.Ok(t, err)
	testutil.Ok(t, w.Close())
	testutil.Ok(t, w.Close(), "second close")
	_, err = w.Write([]byte("y"))
	testutil.NotOk(t, err)

	got, err := decompress(c, buf.Bytes())
	testutil.Ok(t, err)
	testutil.Equals(t, "x", string(got))
}

// TestSnappyCompressor_Interleaved uses two encoders and two decoders at the
// same time after earlier ones went back to the pool: each must be a
// distinct object (gRPC compresses and decompresses messages of many streams
// concurrently).
func TestSnappyCompressor_Interleaved(t *testing.T) {
	c := snappyCompressor(t)
	// Recycle one encoder and one decoder first.
	_, err := decompress(c, compress(t, c, []byte("warm up")))
	testutil.Ok(t, err)

	var buf1, buf2 bytes.Buffer
	w1, err := c.Compress(&buf1)
	testutil.Ok(t, err)
	w2, err := c.Compress(&buf2)
	testutil.Ok(t, err)
	for i := range 100 {
		_, err = w1.Write(bytes.Repeat([]byte{'a', byte(i)}, 1000))
		testutil.Ok(t, err)
		_, err = w2.Write(bytes.Repeat([]byte{'b', byte(i)}, 1000))
		testutil.Ok(t, err)
	}
	testutil.Ok(t, w1.Close())
	testutil.Ok(t, w2.Close())

	r1, err := c.Decompress(bytes.NewReader(buf1.Bytes()))
	testutil.Ok(t, err)
	r2, err := c.Decompress(bytes.NewReader(buf2.Bytes()))
	testutil.Ok(t, err)
	p1, p2 := make([]byte, 2000), make([]byte, 2000)
	for i := range 100 {
		_, err = io.ReadFull(r1, p1)
		testutil.Ok(t, err)
		_, err = io.ReadFull(r2, p2)
		testutil.Ok(t, err)
		testutil.Assert(t, bytes.Equal(bytes.Repeat([]byte{'a', byte(i)}, 1000), p1), "stream 1 chunk %d mismatch", i)
		testutil.Assert(t, bytes.Equal(bytes.Repeat([]byte{'b', byte(i)}, 1000), p2), "stream 2 chunk %d mismatch", i)
	}
	for _, r := range []io.Reader{r1, r2} {
		n, err := r.Read(p1)
		testutil.Equals(t, 0, n)
		testutil.Equals(t, io.EOF, err)
		// Reading past the end stays at EOF (the decoder is back in the pool).
		n, err = r.Read(p1)
		testutil.Equals(t, 0, n)
		testutil.Equals(t, io.EOF, err)
	}
}

// TestSnappyCompressor_Concurrent round-trips from many goroutines, so that
// pooled encoders/decoders shared by mistake would mix data up (also run
// under -race).
func TestSnappyCompressor_Concurrent(t *testing.T) {
	c := snappyCompressor(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				data := bytes.Repeat([]byte{byte(g), byte(i)}, 1000*(1+i%5))
				var buf bytes.Buffer
				w, err := c.Compress(&buf)
				if err == nil {
					_, err = w.Write(data)
				}
				if err == nil {
					err = w.Close()
				}
				var got []byte
				if err == nil {
					got, err = decompress(c, buf.Bytes())
				}
				if err == nil && !bytes.Equal(data, got) {
					err = errors.Newf("goroutine %d iteration %d: data mismatch", g, i)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		testutil.Ok(t, err)
	}
}

// TestSnappyCompressor_GRPC streams large, compressible messages in both
// directions through a real gRPC connection on 127.0.0.1 with
// grpc.UseCompressor("snappy") and checks the messages arrive intact, were
// announced as snappy-encoded and were actually compressed.
func TestSnappyCompressor_GRPC(t *testing.T) {
	env := startTestServer(t)
	for _, tc := range []struct {
		name           string
		callOpts       []grpc.CallOption
		wantEncoding   string
		wantCompressed bool
	}{
		{name: "snappy", callOpts: []grpc.CallOption{grpc.UseCompressor("snappy")}, wantEncoding: "snappy", wantCompressed: true},
		{name: "identity", wantEncoding: "", wantCompressed: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clientStats := &statsRecorder{}
			conn := env.dial(t, grpc.WithStatsHandler(clientStats), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
			ctx := testContext(t)
			_, _ = env.serverStats.take()

			// Values spanning several 64KiB snappy blocks.
			big := strings.Repeat("instance=node-exporter-0.monitoring.svc:9100,", 10_000)
			req := &storepb.SeriesRequest{Matchers: []*storepb.LabelMatcher{
				{Name: "a", Value: big},
				{Name: "b", Value: big[:1000]},
			}}
			stream, err := storepb.NewStoreClient(conn).Series(ctx, req, tc.callOpts...)
			testutil.Ok(t, err)
			got, err := recvAll(stream)
			testutil.Ok(t, err)

			testutil.Equals(t, 3, len(got))
			testutil.Assert(t, proto.Equal(&storepb.Series{Labels: []*labelpb.Label{{Name: "a", Value: big}}}, got[0].GetSeries()), "series a mismatch")
			testutil.Assert(t, proto.Equal(&storepb.Series{Labels: []*labelpb.Label{{Name: "b", Value: big[:1000]}}}, got[1].GetSeries()), "series b mismatch")
			testutil.Equals(t, "done", got[2].GetWarning())

			serverEnc, serverIn := env.serverStats.take()
			clientEnc, clientIn := clientStats.take()
			testutil.Equals(t, []string{tc.wantEncoding}, serverEnc, "request grpc-encoding")
			testutil.Equals(t, []string{tc.wantEncoding}, clientEnc, "response grpc-encoding")

			testutil.Equals(t, 1, len(serverIn))
			testutil.Equals(t, 3, len(clientIn))
			for _, p := range append(serverIn, clientIn[0]) { // The large messages.
				testutil.Assert(t, p.length > 400_000, "unexpectedly small message: %d bytes", p.length)
				if tc.wantCompressed {
					testutil.Assert(t, p.compressedLength < p.length/10, "not compressed: %d -> %d bytes", p.length, p.compressedLength)
				} else {
					testutil.Equals(t, p.length, p.compressedLength)
				}
			}
		})
	}
}

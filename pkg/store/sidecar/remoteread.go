package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"io"
	"mime"
	"net/http"
	"slices"

	"github.com/efficientgo/core/errors"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

const (
	// streamedContentType is the Content-Type of a STREAMED_XOR_CHUNKS answer (Prometheus's read handler).
	streamedContentType = "application/x-streamed-protobuf"
	streamedProto       = "prometheus.ChunkedReadResponse"

	// maxFrameBytes bounds one frame of a streamed answer (Prometheus's own client's limit, 50 MB); Prometheus
	// cuts its frames at --storage.remote.read-max-bytes-in-frame (1 MiB by default).
	maxFrameBytes = 50e6
	// maxSamplesResponseBytes bounds a SAMPLES answer, compressed and decoded.
	maxSamplesResponseBytes = 1 << 30

	// defaultMaxReadChunkBytes bounds the chunk bytes one remote read holds in memory when the tenant sets no
	// max_fetched_chunk_bytes_per_query (the answer is decoded whole before it is sent on).
	defaultMaxReadChunkBytes = 1 << 30

	// samplesPerChunk is where sample answers are cut into chunks: TSDB's own size of a full XOR chunk.
	samplesPerChunk = 120
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ReadLimits bound what one remote read may fetch: distinct series and chunk bytes (0: no bound). They are the
// tenant's max_fetched_series_per_query and max_fetched_chunk_bytes_per_query, enforced as the store-gateway
// does, while the answer is read (so memory stays bounded too).
type ReadLimits struct {
	MaxSeries     int
	MaxChunkBytes int
}

// counter counts what a read fetched against its limits, and its chunk bytes against hardMaxBytes whatever
// the limits: memory stays bounded.
type counter struct {
	lim           ReadLimits
	hardMaxBytes  int
	series, bytes int
}

func (c *counter) addSeries() error {
	c.series++
	if c.lim.MaxSeries > 0 && c.series > c.lim.MaxSeries {
		return status.Error(codes.ResourceExhausted, tenancy.NewMaxSeriesPerQueryError(c.lim.MaxSeries).Error())
	}
	return nil
}

func (c *counter) addBytes(n int) error {
	c.bytes += n
	if c.lim.MaxChunkBytes > 0 && c.bytes > c.lim.MaxChunkBytes {
		return status.Error(codes.ResourceExhausted, tenancy.NewMaxChunkBytesPerQueryError(c.lim.MaxChunkBytes).Error())
	}
	if c.hardMaxBytes > 0 && c.bytes > c.hardMaxBytes {
		return status.Errorf(codes.ResourceExhausted, "the query fetched more than %d bytes of chunks from Prometheus, the most one read of the sidecar holds; narrow it (time range, matchers)", c.hardMaxBytes)
	}
	return nil
}

// ReadResult is the answer of one remote-read query: its series sorted by labels, each once, with chunks in time
// order; and the warnings met.
type ReadResult struct {
	Series   []storage.ChunkSeries
	Warnings annotations.Annotations
	// Streamed says Prometheus answered with streamed XOR chunks (false: samples, encoded here).
	Streamed bool
}

// Read asks Prometheus's remote-read endpoint (/api/v1/read) for the series matching ms in [mint, maxt],
// preferring streamed XOR chunks (passed on as they are) and accepting samples (encoded into XOR chunks of up
// to 120 samples), within lim (a gRPC ResourceExhausted error beyond). Series labels are Prometheus's, its
// external labels included.
func (c *Client) Read(ctx context.Context, mint, maxt int64, hints *storage.SelectHints, lim ReadLimits, ms ...*labels.Matcher) (*ReadResult, error) {
	q := &prompb.Query{StartTimestampMs: mint, EndTimestampMs: maxt}
	for _, m := range ms {
		pm, err := matcherToPB(m)
		if err != nil {
			return nil, err
		}
		q.Matchers = append(q.Matchers, pm)
	}
	if hints != nil {
		q.Hints = &prompb.ReadHints{StepMs: hints.Step, Func: hints.Func, StartMs: hints.Start, EndMs: hints.End,
			Grouping: hints.Grouping, By: hints.By, RangeMs: hints.Range}
	}
	raw, err := (&prompb.ReadRequest{
		Queries:               []*prompb.Query{q},
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS, prompb.ReadRequest_SAMPLES},
	}).MarshalVT()
	if err != nil {
		return nil, errors.Wrap(err, "encode remote-read request")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL("/api/v1/read", nil), bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		return nil, errors.Wrap(err, "build remote-read request")
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Read-Version", "0.1.0")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, unreachable(ctx, errors.Wrapf(err, "remote read from %s", c.URL("/api/v1/read", nil)))
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err := errors.Newf("remote read from %s: %s: %s", c.URL("/api/v1/read", nil), resp.Status, truncate(string(bytes.TrimSpace(body)), 512))
		if unavailableStatus(resp.StatusCode) {
			return nil, unreachable(ctx, err)
		}
		return nil, err
	}
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == streamedContentType {
		if params["proto"] != streamedProto {
			return nil, errors.Newf("remote read: streamed answer of unexpected type %q", resp.Header.Get("Content-Type"))
		}
		return readStreamed(resp.Body, &counter{lim: lim, hardMaxBytes: c.maxReadChunkBytes})
	}
	return readSamples(resp.Body, &counter{lim: lim, hardMaxBytes: c.maxReadChunkBytes})
}

func matcherToPB(m *labels.Matcher) (*prompb.LabelMatcher, error) {
	var t prompb.LabelMatcher_Type
	switch m.Type {
	case labels.MatchEqual:
		t = prompb.LabelMatcher_EQ
	case labels.MatchNotEqual:
		t = prompb.LabelMatcher_NEQ
	case labels.MatchRegexp:
		t = prompb.LabelMatcher_RE
	case labels.MatchNotRegexp:
		t = prompb.LabelMatcher_NRE
	default:
		return nil, errors.Newf("unknown matcher type %d", m.Type)
	}
	return &prompb.LabelMatcher{Type: t, Name: m.Name, Value: m.Value}, nil
}

// readStreamed decodes a STREAMED_XOR_CHUNKS answer: frames of uvarint length, big-endian CRC-32 (Castagnoli)
// and a ChunkedReadResponse each. Prometheus sends series sorted, one per frame, a long series over consecutive
// frames: those are joined.
func readStreamed(r io.Reader, cnt *counter) (*ReadResult, error) {
	br := bufio.NewReader(r)
	res := &ReadResult{Streamed: true}
	var (
		buf  []byte
		last *chunkSeries
	)
	for {
		frame, err := nextFrame(br, buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, errors.Wrap(err, "read remote-read stream")
		}
		buf = frame
		var msg prompb.ChunkedReadResponse
		if err := msg.UnmarshalVT(frame); err != nil {
			return nil, errors.Wrap(err, "decode remote-read frame")
		}
		if msg.QueryIndex != 0 {
			return nil, errors.Newf("remote read: frame of query %d, only one was asked", msg.QueryIndex)
		}
		for _, cs := range msg.ChunkedSeries {
			lset := labelsFromPB(cs.Labels)
			if last == nil || labels.Compare(last.lset, lset) != 0 {
				if err := cnt.addSeries(); err != nil {
					return nil, err
				}
				last = &chunkSeries{lset: lset}
				res.Series = append(res.Series, last)
			}
			for _, c := range cs.Chunks {
				if err := cnt.addBytes(len(c.Data)); err != nil {
					return nil, err
				}
				enc, ok := encodingFromPB(c.Type)
				if !ok {
					return nil, errors.Newf("series %s: chunk of unknown encoding %s", lset, c.Type)
				}
				// Frames are decoded into a reused buffer: the chunk keeps a copy of its bytes.
				chk, err := chunkenc.FromData(enc, slices.Clone(c.Data))
				if err != nil {
					return nil, errors.Wrapf(err, "series %s: decode chunk", lset)
				}
				last.metas = append(last.metas, chunks.Meta{MinTime: c.MinTimeMs, MaxTime: c.MaxTimeMs, Chunk: chk})
			}
		}
	}
	// Sorted as Prometheus sends them; checked, since the store relies on it.
	if !slices.IsSortedFunc(res.Series, func(a, b storage.ChunkSeries) int { return labels.Compare(a.Labels(), b.Labels()) }) {
		slices.SortStableFunc(res.Series, func(a, b storage.ChunkSeries) int { return labels.Compare(a.Labels(), b.Labels()) })
	}
	return res, nil
}

// nextFrame reads one frame of a streamed answer into buf (grown as needed) and returns its data. It is
// Prometheus's remote.ChunkedReader.Next but for one thing: a stream that ends inside a frame (after its length,
// or after its checksum with no data) is io.ErrUnexpectedEOF here, where ChunkedReader returns io.EOF and a cut
// answer would pass for a complete one (TestReadStreamed_TruncatedOrCorrupted).
func nextFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err // io.EOF at a frame boundary: the end
	}
	if size > maxFrameBytes {
		return nil, errors.Newf("frame of %d bytes, more than the limit of %d", size, int64(maxFrameBytes))
	}
	var sum [4]byte
	if _, err := io.ReadFull(r, sum[:]); err != nil {
		return nil, errors.Wrap(noEOF(err), "read frame checksum")
	}
	if cap(buf) < int(size) {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, errors.Wrap(noEOF(err), "read frame")
	}
	if crc32.Checksum(buf, castagnoli) != binary.BigEndian.Uint32(sum[:]) {
		return nil, errors.New("corrupted frame: checksum mismatch")
	}
	return buf, nil
}

// noEOF turns an EOF inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readSamples decodes a SAMPLES answer (a snappy-compressed ReadResponse) and encodes the float samples of each
// series into XOR chunks. Native histogram samples are left out with a warning.
func readSamples(r io.Reader, cnt *counter) (*ReadResult, error) {
	compressed, err := readLimited(r, maxSamplesResponseBytes)
	if err != nil {
		return nil, errors.Wrap(err, "read remote-read answer")
	}
	n, err := snappy.DecodedLen(compressed)
	if err != nil {
		return nil, errors.Wrap(err, "decode remote-read answer (snappy)")
	}
	if n > maxSamplesResponseBytes {
		return nil, errors.Newf("remote-read answer decodes into %d bytes, more than the limit of %d", n, maxSamplesResponseBytes)
	}
	raw, err := snappy.Decode(nil, compressed)
	if err != nil {
		return nil, errors.Wrap(err, "decode remote-read answer (snappy)")
	}
	var msg prompb.ReadResponse
	if err := msg.UnmarshalVT(raw); err != nil {
		return nil, errors.Wrap(err, "decode remote-read answer")
	}
	if len(msg.Results) != 1 {
		return nil, errors.Newf("remote read: %d results for one query", len(msg.Results))
	}
	res := &ReadResult{}
	for _, ts := range msg.Results[0].Timeseries {
		lset := labelsFromPB(ts.Labels)
		if len(ts.Histograms) > 0 {
			res.Warnings.Add(errors.Newf("series %s: native histogram samples are not read from a remote-read answer of samples", lset))
		}
		if len(ts.Samples) == 0 {
			continue
		}
		if err := cnt.addSeries(); err != nil {
			return nil, err
		}
		metas, err := samplesToChunks(ts.Samples)
		if err != nil {
			return nil, errors.Wrapf(err, "series %s", lset)
		}
		for _, m := range metas {
			if err := cnt.addBytes(len(m.Chunk.Bytes())); err != nil {
				return nil, err
			}
		}
		res.Series = append(res.Series, &chunkSeries{lset: lset, metas: metas})
	}
	slices.SortStableFunc(res.Series, func(a, b storage.ChunkSeries) int { return labels.Compare(a.Labels(), b.Labels()) })
	return res, nil
}

// samplesToChunks encodes time-ordered float samples into XOR chunks of at most samplesPerChunk samples.
func samplesToChunks(samples []*prompb.Sample) ([]chunks.Meta, error) {
	var (
		out []chunks.Meta
		chk *chunkenc.XORChunk
		app chunkenc.Appender
	)
	for i, s := range samples {
		if i > 0 && s.Timestamp <= samples[i-1].Timestamp {
			return nil, errors.Newf("samples out of order at %d", s.Timestamp)
		}
		if i%samplesPerChunk == 0 {
			chk = chunkenc.NewXORChunk()
			a, err := chk.Appender()
			if err != nil {
				return nil, errors.Wrap(err, "append to XOR chunk")
			}
			app = a
			out = append(out, chunks.Meta{MinTime: s.Timestamp, Chunk: chk})
		}
		app.Append(0, s.Timestamp, s.Value)
		out[len(out)-1].MaxTime = s.Timestamp
	}
	return out, nil
}

func labelsFromPB(ls []*labelpb.Label) labels.Labels {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	b.Sort()
	return b.Labels()
}

func encodingFromPB(e prompb.Chunk_Encoding) (chunkenc.Encoding, bool) {
	switch e {
	case prompb.Chunk_XOR:
		return chunkenc.EncXOR, true
	case prompb.Chunk_HISTOGRAM:
		return chunkenc.EncHistogram, true
	case prompb.Chunk_FLOAT_HISTOGRAM:
		return chunkenc.EncFloatHistogram, true
	}
	return chunkenc.EncNone, false
}

// chunkSeries is a storage.ChunkSeries over chunks held in memory.
type chunkSeries struct {
	lset  labels.Labels
	metas []chunks.Meta
}

func (s *chunkSeries) Labels() labels.Labels { return s.lset }

func (s *chunkSeries) Iterator(chunks.Iterator) chunks.Iterator {
	return &metaIterator{metas: s.metas, i: -1}
}

type metaIterator struct {
	metas []chunks.Meta
	i     int
}

func (it *metaIterator) At() chunks.Meta { return it.metas[it.i] }
func (it *metaIterator) Next() bool {
	if it.i+1 >= len(it.metas) {
		return false
	}
	it.i++
	return true
}
func (it *metaIterator) Err() error { return nil }

package sidecar

import (
	"bytes"
	"testing"

	"github.com/efficientgo/core/testutil"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// A streamed answer cut anywhere inside a frame is an error, never a shorter answer taken as complete; a frame
// whose checksum does not match is an error. (Prometheus's remote.ChunkedReader returns io.EOF — the clean end —
// for a stream cut right after a frame's length or with no data byte, which is why the sidecar reads frames
// itself.)
func TestReadStreamed_TruncatedOrCorrupted(t *testing.T) {
	msg := &prompb.ChunkedReadResponse{ChunkedSeries: []*prompb.ChunkedSeries{{
		Labels: []*labelpb.Label{{Name: "__name__", Value: "m"}},
	}}}
	raw, err := msg.MarshalVT()
	testutil.Ok(t, err)
	var full bytes.Buffer
	writeFrame(&full, raw)
	writeFrame(&full, raw)
	frame := full.Len() / 2

	res, err := readStreamed(bytes.NewReader(full.Bytes()), &counter{hardMaxBytes: 1 << 20})
	testutil.Ok(t, err)
	testutil.Equals(t, 1, len(res.Series), "one series over two frames")

	for _, tc := range []struct {
		name string
		cut  int // bytes of the stream kept
	}{
		{name: "after the second frame's length", cut: frame + 1},
		{name: "inside the checksum", cut: frame + 3},
		{name: "after the checksum, no data", cut: frame + 5},
		{name: "inside the data", cut: full.Len() - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readStreamed(bytes.NewReader(full.Bytes()[:tc.cut]), &counter{hardMaxBytes: 1 << 20})
			testutil.NotOk(t, err, "a stream cut at %d of %d bytes was taken as complete", tc.cut, full.Len())
		})
	}
	t.Run("checksum mismatch", func(t *testing.T) {
		b := bytes.Clone(full.Bytes())
		b[len(b)-1] ^= 0xff
		_, err := readStreamed(bytes.NewReader(b), &counter{hardMaxBytes: 1 << 20})
		testutil.NotOk(t, err)
	})
}

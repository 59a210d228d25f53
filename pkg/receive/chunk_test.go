package receive

import (
	"github.com/efficientgo/core/errors"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

func chunkFromAggr(c *storepb.AggrChunk) (chunkenc.Chunk, error) {
	enc, ok := store.EncodingFromPB(c.GetRaw().GetType())
	if !ok {
		return nil, errors.New("unknown encoding")
	}
	return chunkenc.FromData(enc, c.GetRaw().GetData())
}

package store

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
)

func TestEntryDecodingRejectsBadInput(t *testing.T) {
	valid := func(prefixExtra int, data []byte) []byte {
		b := binary.AppendUvarint(nil, uint64(len(data)-prefixExtra))
		b = append(b, data...)
		return binary.BigEndian.AppendUint32(b, crc32.Checksum(data, castagnoli))
	}
	huge := binary.AppendUvarint(nil, 1<<63)
	huge = append(huge, make([]byte, 32)...)

	for _, tc := range []struct {
		name      string
		decode    func([]byte) ([]byte, error)
		in        []byte
		wantShort bool
		wantErr   bool
	}{
		{name: "series ok", decode: seriesEntry, in: valid(0, []byte("abc"))},
		{name: "chunk ok", decode: chunkEntry, in: valid(1, []byte{1, 'x', 'y'})},
		{name: "series truncated", decode: seriesEntry, in: valid(0, []byte("abcdef"))[:5], wantShort: true},
		{name: "chunk truncated", decode: chunkEntry, in: valid(1, []byte{1, 'x', 'y'})[:3], wantShort: true},
		{name: "series bad crc", decode: seriesEntry, in: append(valid(0, []byte("abc"))[:4], 0, 0, 0, 0), wantErr: true},
		{name: "series huge length", decode: seriesEntry, in: huge, wantErr: true},
		{name: "chunk huge length", decode: chunkEntry, in: huge, wantErr: true},
		{name: "series bad varint", decode: seriesEntry, in: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.decode(tc.in)
			switch {
			case tc.wantShort:
				testutil.Assert(t, errors.Is(err, errShort), "want errShort, got %v", err)
			case tc.wantErr:
				testutil.NotOk(t, err)
				testutil.Assert(t, !errors.Is(err, errShort), "want a decode error, got errShort")
			default:
				testutil.Ok(t, err)
			}
		})
	}
}

func TestSplitAggrChunkRejectsBadInput(t *testing.T) {
	maxLen := binary.AppendUvarint(nil, ^uint64(0))
	for _, in := range [][]byte{nil, {5, 1}, maxLen, append(binary.AppendUvarint(nil, 2), 1, 2)} {
		_, err := splitAggrChunk(in)
		testutil.NotOk(t, err, "input %v", in)
	}
	ok := []byte{2, 1, 'a', 'b', 0, 0, 0, 0}
	parts, err := splitAggrChunk(ok)
	testutil.Ok(t, err)
	testutil.Equals(t, []byte{1, 'a', 'b'}, parts[0])
	testutil.Assert(t, parts[1] == nil && parts[4] == nil, "absent aggregates are nil")
}

package block

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/objstore"
)

// thanosWrittenMeta is what Thanos v0.42's metadata.Meta.Write produces for a block with every common field set
// (the expected output of Thanos' TestMeta_ReadWrite, "real write/read/write", copied verbatim).
const thanosWrittenMeta = `{
	"ulid": "00000000050000000000000000",
	"minTime": 2424,
	"maxTime": 134,
	"stats": {
		"numSamples": 245,
		"numSeries": 4,
		"numChunks": 14
	},
	"compaction": {
		"level": 123,
		"sources": [
			"00000000010000000000000000",
			"00000000020000000000000000"
		],
		"parents": [
			{
				"ulid": "00000000030000000000000000",
				"minTime": 442,
				"maxTime": 24225
			}
		]
	},
	"version": 1,
	"thanos": {
		"version": 1,
		"labels": {
			"ext": "lset1"
		},
		"downsample": {
			"resolution": 123144
		},
		"source": "receive",
		"files": [
			{
				"rel_path": "chunks/000001",
				"size_bytes": 3751
			},
			{
				"rel_path": "index",
				"size_bytes": 401
			},
			{
				"rel_path": "meta.json"
			}
		],
		"index_stats": {
			"series_max_size": 2000,
			"chunk_max_size": 1000
		},
		"upload_time": "0001-01-01T00:00:00Z"
	}
}
`

// thanosEmptyMeta is what Thanos' Write produces for a zero Meta (Thanos' "empty write/read/write").
const thanosEmptyMeta = `{
	"ulid": "00000000000000000000000000",
	"minTime": 0,
	"maxTime": 0,
	"stats": {},
	"compaction": {
		"level": 0
	},
	"version": 0,
	"thanos": {
		"labels": null,
		"downsample": {
			"resolution": 0
		},
		"source": "",
		"index_stats": {},
		"upload_time": "0001-01-01T00:00:00Z"
	}
}
`

// thanosReceiveMeta is a meta.json written by an older Thanos receive (no version, files, index_stats or
// upload_time), from Thanos' pkg/replicate tests.
const thanosReceiveMeta = `{
        "ulid": "01DQYXMK8G108CEBQ79Y84DYVY",
        "minTime": 1571911200000,
        "maxTime": 1571918400000,
        "stats": {
                "numSamples": 90793,
                "numSeries": 3703,
                "numChunks": 3746
        },
        "compaction": {
                "level": 1,
                "sources": [
                        "01DQYXMK8G108CEBQ79Y84DYVY"
                ]
        },
        "version": 1,
        "thanos": {
                "labels": {
                        "receive": "true",
                        "replica": "thanos-receive-default-0"
                },
                "downsample": {
                        "resolution": 0
                },
                "source": "receive"
        }
}`

func TestMeta_ThanosEncoding(t *testing.T) {
	full := Meta{
		BlockMeta: tsdb.BlockMeta{
			ULID:    ulid.MustNew(5, nil),
			MinTime: 2424,
			MaxTime: 134,
			Version: 1,
			Compaction: tsdb.BlockMetaCompaction{
				Sources: []ulid.ULID{ulid.MustNew(1, nil), ulid.MustNew(2, nil)},
				Parents: []tsdb.BlockDesc{{ULID: ulid.MustNew(3, nil), MinTime: 442, MaxTime: 24225}},
				Level:   123,
			},
			Stats: tsdb.BlockStats{NumChunks: 14, NumSamples: 245, NumSeries: 4},
		},
		Thanos: ThanosMeta{
			Version: 1,
			Labels:  map[string]string{"ext": "lset1"},
			Source:  ReceiveSource,
			Files: []File{
				{RelPath: "chunks/000001", SizeBytes: 3751},
				{RelPath: "index", SizeBytes: 401},
				{RelPath: "meta.json"},
			},
			Downsample: ThanosDownsample{Resolution: 123144},
			IndexStats: IndexStats{SeriesMaxSize: 2000, ChunkMaxSize: 1000},
		},
	}
	for _, tc := range []struct {
		name   string
		meta   Meta
		golden string
	}{
		{name: "every common field", meta: full, golden: thanosWrittenMeta},
		{name: "zero meta", meta: Meta{}, golden: thanosEmptyMeta},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Strata writes what Thanos writes, byte for byte.
			var b bytes.Buffer
			testutil.Ok(t, tc.meta.Write(&b))
			testutil.Equals(t, tc.golden, b.String())

			// What Thanos wrote decodes to the same meta and encodes back unchanged.
			var got Meta
			testutil.Ok(t, json.Unmarshal([]byte(tc.golden), &got))
			testutil.Equals(t, tc.meta, got)
			b.Reset()
			testutil.Ok(t, got.Write(&b))
			testutil.Equals(t, tc.golden, b.String())
		})
	}
}

func TestMeta_VerbatimFields(t *testing.T) {
	// Fields Strata does not interpret (rewrites, extensions, hashes, segment files) survive a read and write.
	in := `{
	"ulid": "01DQYXMK8G108CEBQ79Y84DYVY",
	"minTime": 1,
	"maxTime": 2,
	"stats": {},
	"compaction": {
		"level": 2,
		"sources": [
			"01DQYXMK8G108CEBQ79Y84DYVY"
		],
		"hints": [
			"from-out-of-order"
		]
	},
	"version": 1,
	"thanos": {
		"version": 1,
		"labels": {
			"tenant_id": "a"
		},
		"downsample": {
			"resolution": 300000
		},
		"source": "bucket.rewrite",
		"segment_files": [
			"000001"
		],
		"files": [
			{
				"rel_path": "chunks/000001",
				"size_bytes": 10,
				"hash": {
					"hashFunc": "SHA256",
					"value": "abcd"
				}
			}
		],
		"rewrites": [
			{
				"sources": [
					"01DQYXMK8G108CEBQ79Y84DYVY"
				],
				"deletions_applied": [
					{
						"matchers": [
							{
								"Type": 0,
								"Name": "a",
								"Value": "b"
							}
						],
						"intervals": [
							{
								"Mint": 1,
								"Maxt": 2
							}
						]
					}
				],
				"relabels_applied": [
					{
						"action": "drop",
						"regex": "x"
					}
				]
			}
		],
		"index_stats": {},
		"extensions": {
			"parquet_migrated": true
		},
		"upload_time": "2025-01-02T03:04:05.000000006Z"
	}
}
`
	m, err := ReadMeta(strings.NewReader(in))
	testutil.Ok(t, err)
	testutil.Equals(t, time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), m.Thanos.UploadTime)
	testutil.Equals(t, &ObjectHash{Func: "SHA256", Value: "abcd"}, m.Thanos.Files[0].Hash)
	var b bytes.Buffer
	testutil.Ok(t, m.Write(&b))
	testutil.Equals(t, in, b.String())
}

func TestReadMeta(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    func(m *Meta)
		wantErr string
	}{
		{
			name: "older Thanos receive meta",
			in:   thanosReceiveMeta,
			want: func(m *Meta) {
				m.ULID = ulid.MustParse("01DQYXMK8G108CEBQ79Y84DYVY")
				m.MinTime, m.MaxTime, m.Version = 1571911200000, 1571918400000, 1
				m.Stats = tsdb.BlockStats{NumSamples: 90793, NumSeries: 3703, NumChunks: 3746}
				m.Compaction = tsdb.BlockMetaCompaction{Level: 1, Sources: []ulid.ULID{m.ULID}}
				m.Thanos = ThanosMeta{Labels: map[string]string{"receive": "true", "replica": "thanos-receive-default-0"}, Source: ReceiveSource}
			},
		},
		{
			name: "Prometheus meta without a thanos section gets empty labels",
			in:   `{"ulid":"01DQYXMK8G108CEBQ79Y84DYVY","minTime":0,"maxTime":7200000,"stats":{"numSamples":1},"compaction":{"level":1},"version":1}`,
			want: func(m *Meta) {
				m.ULID = ulid.MustParse("01DQYXMK8G108CEBQ79Y84DYVY")
				m.MaxTime, m.Version = 7200000, 1
				m.Stats.NumSamples = 1
				m.Compaction.Level = 1
				m.Thanos.Labels = map[string]string{}
			},
		},
		{name: "not JSON", in: `{"ulid":`, wantErr: "decode meta.json"},
		{name: "no ULID", in: `{"minTime":0,"maxTime":1,"version":1}`, wantErr: "block ULID not set"},
		{name: "empty time range", in: `{"ulid":"01DQYXMK8G108CEBQ79Y84DYVY","minTime":5,"maxTime":5,"version":1}`, wantErr: "min time 5 not before max time 5"},
		{name: "TSDB version", in: `{"ulid":"01DQYXMK8G108CEBQ79Y84DYVY","minTime":0,"maxTime":1,"version":2}`, wantErr: "unexpected version 2"},
		{name: "Thanos version", in: `{"ulid":"01DQYXMK8G108CEBQ79Y84DYVY","minTime":0,"maxTime":1,"version":1,"thanos":{"version":2}}`, wantErr: "unexpected thanos section version 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ReadMeta(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				testutil.NotOk(t, err)
				testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q does not contain %q", err, tc.wantErr)
				return
			}
			testutil.Ok(t, err)
			var want Meta
			tc.want(&want)
			testutil.Equals(t, &want, m)
		})
	}
}

func TestMeta_WriteToDirAndReadBack(t *testing.T) {
	id := ulid.MustNew(10, nil)
	dir := filepath.Join(t.TempDir(), id.String())
	testutil.Ok(t, os.MkdirAll(dir, 0o750))

	_, err := ReadMetaFromDir(dir)
	testutil.Assert(t, errors.Is(err, fs.ErrNotExist), "a dir without meta.json: %v", err)

	m := &Meta{BlockMeta: tsdb.BlockMeta{ULID: id, MinTime: 1, MaxTime: 10, Version: 1}, Thanos: ThanosMeta{Version: 1, Labels: map[string]string{"tenant_id": "a"}, Source: SidecarSource}}
	for range 2 { // The second write replaces the first.
		testutil.Ok(t, m.WriteToDir(log.NewNopLogger(), dir))
	}
	entries, err := os.ReadDir(dir)
	testutil.Ok(t, err)
	testutil.Equals(t, 1, len(entries)) // No temporary file left.
	got, err := ReadMetaFromDir(dir)
	testutil.Ok(t, err)
	testutil.Equals(t, m, got)

	// ReadMetaFromBucket reads the same from a tenant's bucket.
	ctx := context.Background()
	bkt := objstore.NewPrefixedBucket(newFilesystemBucket(t), "tenant-a")
	_, err = ReadMetaFromBucket(ctx, bkt, id)
	testutil.Assert(t, errors.Is(err, ErrMetaNotFound), "no meta.json in the bucket: %v", err)
	testutil.Ok(t, objstore.UploadFile(ctx, log.NewNopLogger(), bkt, filepath.Join(dir, MetaFilename), id.String()+"/meta.json"))
	got, err = ReadMetaFromBucket(ctx, bkt, id)
	testutil.Ok(t, err)
	testutil.Equals(t, m, got)

	// A meta.json under another block's name is refused.
	other := ulid.MustNew(11, nil)
	testutil.Ok(t, objstore.UploadFile(ctx, log.NewNopLogger(), bkt, filepath.Join(dir, MetaFilename), other.String()+"/meta.json"))
	_, err = ReadMetaFromBucket(ctx, bkt, other)
	testutil.NotOk(t, err)
}

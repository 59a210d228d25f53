package storepb_test

import (
	"encoding/hex"
	"math"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/stratametrics/strata/pkg/store/hintspb"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// Hand-built reference encodings of the messages a Thanos querier and a
// Thanos store exchange, written directly with protowire from the field
// numbers of Thanos' .proto files. Fields are appended in ascending number
// order, which is how Thanos' gogo-generated marshalers emit them.

func tagVarint(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func tagInt(b []byte, num protowire.Number, v int64) []byte { return tagVarint(b, num, uint64(v)) }

func tagSint(b []byte, num protowire.Number, v int64) []byte {
	return tagVarint(b, num, protowire.EncodeZigZag(v))
}

func tagDouble(b []byte, num protowire.Number, v float64) []byte {
	return protowire.AppendFixed64(protowire.AppendTag(b, num, protowire.Fixed64Type), math.Float64bits(v))
}

func tagBytes(b []byte, num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

func tagString(b []byte, num protowire.Number, v string) []byte {
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), v)
}

// refLabel encodes thanos.Label{name=1, value=2}.
func refLabel(name, value string) []byte {
	return tagString(tagString(nil, 1, name), 2, value)
}

// refMatcher encodes thanos.LabelMatcher{type=1, name=2, value=3} (also the
// layout of prometheus_copy.LabelMatcher). Zero values are not emitted, as
// in proto3.
func refMatcher(typ uint64, name, value string) []byte {
	var b []byte
	if typ != 0 {
		b = tagVarint(b, 1, typ)
	}
	b = tagString(b, 2, name)
	if value != "" {
		b = tagString(b, 3, value)
	}
	return b
}

func TestWireReference_Golden(t *testing.T) {
	// Literal bytes, computed by hand, as a check independent of any helper.
	for _, tc := range []struct {
		name string
		hex  string
		want proto.Message
	}{
		{
			// min_time=1000 (08 e807), max_time=2000 (10 d00f),
			// matchers=[{name:"__name__" value:"up"}] (1a 0e 12 08 ... 1a 02 ...).
			name: "SeriesRequest",
			hex:  "08e80710d00f1a0e12085f5f6e616d655f5f1a027570",
			want: &storepb.SeriesRequest{
				MinTime:  1000,
				MaxTime:  2000,
				Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "up"}},
			},
		},
		{
			// warning="oops" (12 04 ...).
			name: "SeriesResponse/warning",
			hex:  "12046f6f7073",
			want: &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Warning{Warning: "oops"}},
		},
		{
			// series={labels:[{a=b}]} (0a 08 0a 06 0a 01 61 12 01 62).
			name: "SeriesResponse/series",
			hex:  "0a080a060a0161120162",
			want: &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Series{Series: &storepb.Series{
				Labels: []*labelpb.Label{{Name: "a", Value: "b"}},
			}}},
		},
		{
			// label="job" (0a 03 ...), partial_response_strategy=ABORT (18 01), start=-1 (20 ff..01).
			name: "LabelValuesRequest",
			hex:  "0a036a6f62180120ffffffffffffffffff01",
			want: &storepb.LabelValuesRequest{Label: "job", PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT, Start: -1},
		},
		{
			// ComponentType="store" (12 05 ...), store={min_time=1 max_time=2 supports_sharding} (1a 06 08 01 10 02 18 01).
			name: "InfoResponse",
			hex:  "120573746f72651a06080110021801",
			want: &infopb.InfoResponse{ComponentType: "store", Store: &infopb.StoreInfo{MinTime: 1, MaxTime: 2, SupportsSharding: true}},
		},
		{
			// schema=-3 as sint32 (20 05), count_int=5 (08 05), positive_deltas=[-1] packed sint64 (62 01 01).
			name: "prompb.Histogram",
			hex:  "08052005620101",
			want: &prompb.Histogram{Count: &prompb.Histogram_CountInt{CountInt: 5}, Schema: -3, PositiveDeltas: []int64{-1}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := hex.DecodeString(tc.hex)
			testutil.Ok(t, err)
			got := tc.want.ProtoReflect().New().Interface()
			testutil.Ok(t, proto.Unmarshal(b, got))
			testutil.Assert(t, proto.Equal(tc.want, got), "decoded %v, want %v", got, tc.want)

			out, err := proto.Marshal(tc.want)
			testutil.Ok(t, err)
			testutil.Equals(t, len(b), len(out), "encoded size")
		})
	}
}

func refSeriesRequestHints() []byte {
	// hintspb.SeriesRequestHints{block_matchers=1, enable_query_stats=2}.
	b := tagBytes(nil, 1, refMatcher(0, "__block_id", "01HBLOCK"))
	return tagVarint(b, 2, 1)
}

func refQueryStats() []byte {
	// hintspb.QueryStats: a few counters and both durations (21, 22), which
	// Thanos always emits (gogo non-nullable stdduration).
	b := tagInt(nil, 1, 3)     // blocks_queried
	b = tagInt(b, 2, 10)       // merged_series_count
	b = tagInt(b, 15, 40)      // chunks_touched
	b = tagInt(b, 20, 123_456) // data_downloaded_size_sum
	// get_all_duration = 1.5s: seconds=1 nanos=500000000.
	b = tagBytes(b, 21, tagInt(tagInt(nil, 1, 1), 2, 500_000_000))
	// merge_duration = 250ms: nanos=250000000.
	return tagBytes(b, 22, tagInt(nil, 2, 250_000_000))
}

func refSeriesResponseHints() []byte {
	// hintspb.SeriesResponseHints{queried_blocks=1 (Block{id=1}), query_stats=2}.
	b := tagBytes(nil, 1, tagString(nil, 1, "01HBLOCKA"))
	b = tagBytes(b, 1, tagString(nil, 1, "01HBLOCKB"))
	return tagBytes(b, 2, refQueryStats())
}

func refAny(url string, value []byte) []byte {
	return tagBytes(tagString(nil, 1, url), 2, value)
}

func refSeries() []byte {
	// thanos.Series{labels=1, chunks=2 (AggrChunk)}.
	b := tagBytes(nil, 1, refLabel("__name__", "up"))
	b = tagBytes(b, 1, refLabel("instance", "a:9090"))
	// AggrChunk{min_time=1, max_time=2, raw=3 (Chunk{type=1 XOR omitted, data=2, hash=3})}.
	aggr := tagInt(nil, 1, 1_700_000_000_000)
	aggr = tagInt(aggr, 2, 1_700_000_120_000)
	aggr = tagBytes(aggr, 3, tagVarint(tagBytes(nil, 2, []byte{0x00, 0x02, 0xc4, 0x8f}), 3, 77))
	// A downsampled chunk: count=4 with a float histogram encoding (type=2).
	aggr = tagBytes(aggr, 4, tagBytes(tagVarint(nil, 1, 2), 2, []byte{0x01}))
	return tagBytes(b, 2, aggr)
}

func wantSeries() *storepb.Series {
	return &storepb.Series{
		Labels: []*labelpb.Label{{Name: "__name__", Value: "up"}, {Name: "instance", Value: "a:9090"}},
		Chunks: []*storepb.AggrChunk{{
			MinTime: 1_700_000_000_000,
			MaxTime: 1_700_000_120_000,
			Raw:     &storepb.Chunk{Type: storepb.Chunk_XOR, Data: []byte{0x00, 0x02, 0xc4, 0x8f}, Hash: 77},
			Count:   &storepb.Chunk{Type: storepb.Chunk_FLOAT_HISTOGRAM, Data: []byte{0x01}},
		}},
	}
}

func refHistogramInt() []byte {
	// prometheus_copy.Histogram (integer): count_int=1, sum=3, (schema=4 is
	// 0, so absent), zero_threshold=5, zero_count_int=6, positive_spans=11
	// (BucketSpan{offset=1 sint32, length=2}), positive_deltas=12 (packed
	// sint64), reset_hint=14, timestamp=15.
	b := tagVarint(nil, 1, 10)
	b = tagDouble(b, 3, 42.5)
	b = tagDouble(b, 5, 1e-128)
	b = tagVarint(b, 6, 1)
	b = tagBytes(b, 11, tagVarint(tagSint(nil, 1, -1), 2, 3))
	var deltas []byte
	for _, d := range []int64{4, -2, 1} {
		deltas = protowire.AppendVarint(deltas, protowire.EncodeZigZag(d))
	}
	b = tagBytes(b, 12, deltas)
	b = tagVarint(b, 14, 2) // NO
	return tagInt(b, 15, 1_700_000_000_000)
}

func refHistogramFloat() []byte {
	// prometheus_copy.Histogram (float): count_float=2, sum=3, schema=4,
	// zero_count_float=7, negative_spans=8, negative_counts=10 (packed double),
	// reset_hint=14, timestamp=15, custom_values=16 (packed double).
	b := tagDouble(nil, 2, 6.5)
	b = tagDouble(b, 3, -1.25)
	b = tagSint(b, 4, -53)
	b = tagDouble(b, 7, 0.5)
	b = tagBytes(b, 8, tagVarint(tagSint(nil, 1, 2), 2, 2))
	var counts []byte
	for _, c := range []float64{1.5, 4.5} {
		counts = protowire.AppendFixed64(counts, math.Float64bits(c))
	}
	b = tagBytes(b, 10, counts)
	b = tagVarint(b, 14, 3) // GAUGE
	b = tagInt(b, 15, 1_700_000_001_000)
	var bounds []byte
	for _, c := range []float64{0.25, 1, math.Inf(1)} {
		bounds = protowire.AppendFixed64(bounds, math.Float64bits(c))
	}
	return tagBytes(b, 16, bounds)
}

func refTimeSeries() []byte {
	// prometheus_copy.TimeSeries{labels=1, samples=2, exemplars=3, histograms=4}.
	b := tagBytes(nil, 1, refLabel("__name__", "rpc_duration_seconds"))
	b = tagBytes(b, 1, refLabel("job", "api"))
	// Sample{value=1 double, timestamp=2}.
	b = tagBytes(b, 2, tagInt(tagDouble(nil, 1, 0.75), 2, 1_700_000_000_000))
	b = tagBytes(b, 2, tagInt(tagDouble(nil, 1, math.NaN()), 2, 1_700_000_015_000))
	// Exemplar{labels=1, value=2, timestamp=3}.
	b = tagBytes(b, 3, tagInt(tagDouble(tagBytes(nil, 1, refLabel("trace_id", "4bf92f")), 2, 0.3), 3, 1_700_000_000_500))
	b = tagBytes(b, 4, refHistogramInt())
	return tagBytes(b, 4, refHistogramFloat())
}

func wantTimeSeries() *prompb.TimeSeries {
	return &prompb.TimeSeries{
		Labels: []*labelpb.Label{{Name: "__name__", Value: "rpc_duration_seconds"}, {Name: "job", Value: "api"}},
		Samples: []*prompb.Sample{
			{Value: 0.75, Timestamp: 1_700_000_000_000},
			{Value: math.NaN(), Timestamp: 1_700_000_015_000},
		},
		Exemplars: []*prompb.Exemplar{{
			Labels:    []*labelpb.Label{{Name: "trace_id", Value: "4bf92f"}},
			Value:     0.3,
			Timestamp: 1_700_000_000_500,
		}},
		Histograms: []*prompb.Histogram{
			{
				Count:          &prompb.Histogram_CountInt{CountInt: 10},
				Sum:            42.5,
				ZeroThreshold:  1e-128,
				ZeroCount:      &prompb.Histogram_ZeroCountInt{ZeroCountInt: 1},
				PositiveSpans:  []*prompb.BucketSpan{{Offset: -1, Length: 3}},
				PositiveDeltas: []int64{4, -2, 1},
				ResetHint:      prompb.Histogram_NO,
				Timestamp:      1_700_000_000_000,
			},
			{
				Count:          &prompb.Histogram_CountFloat{CountFloat: 6.5},
				Sum:            -1.25,
				Schema:         -53,
				ZeroCount:      &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: 0.5},
				NegativeSpans:  []*prompb.BucketSpan{{Offset: 2, Length: 2}},
				NegativeCounts: []float64{1.5, 4.5},
				ResetHint:      prompb.Histogram_GAUGE,
				Timestamp:      1_700_000_001_000,
				CustomValues:   []float64{0.25, 1, math.Inf(1)},
			},
		},
	}
}

func TestWireReference_KeyMessages(t *testing.T) {
	for _, tc := range []struct {
		name string
		ref  []byte
		want proto.Message
		// exact: our encoder must reproduce ref byte for byte. Only false when
		// the message contains a oneof: protobuf-go emits oneof members after
		// the other fields, Thanos' gogo code in field order (both decode the
		// same).
		exact bool
	}{
		{
			name: "SeriesRequest",
			ref: func() []byte {
				b := tagInt(nil, 1, 1_699_999_000_000)                                                                // min_time
				b = tagInt(b, 2, 1_700_000_000_000)                                                                   // max_time
				b = tagBytes(b, 3, refMatcher(0, "__name__", "up"))                                                   // matchers EQ
				b = tagBytes(b, 3, refMatcher(2, "job", "api|db"))                                                    // matchers RE
				b = tagBytes(b, 3, refMatcher(1, "env", ""))                                                          // matchers NEQ
				b = tagInt(b, 4, 300_000)                                                                             // max_resolution_window
				b = tagBytes(b, 5, []byte{1, 2})                                                                      // aggregates [COUNT, SUM], packed
				b = tagVarint(b, 7, 1)                                                                                // partial_response_strategy ABORT
				b = tagBytes(b, 9, refAny("type.googleapis.com/hintspb.SeriesRequestHints", refSeriesRequestHints())) // hints
				// query_hints{step_millis=1, func=2{name=1}, grouping=4{by=1, labels=3}, range=5{millis=1}}.
				qh := tagInt(nil, 1, 60_000)
				qh = tagBytes(qh, 2, tagString(nil, 1, "rate"))
				qh = tagBytes(qh, 4, tagString(tagVarint(nil, 1, 1), 3, "job"))
				qh = tagBytes(qh, 5, tagInt(nil, 1, 300_000))
				b = tagBytes(b, 12, qh)
				// shard_info{shard_index=1, total_shards=2, by=3, labels=4}.
				b = tagBytes(b, 13, tagString(tagVarint(tagInt(tagInt(nil, 1, 1), 2, 3), 3, 1), 4, "job"))
				b = tagString(b, 14, "replica") // without_replica_labels
				b = tagInt(b, 15, 5000)         // limit
				return tagInt(b, 16, 100)       // response_batch_size
			}(),
			want: &storepb.SeriesRequest{
				MinTime: 1_699_999_000_000,
				MaxTime: 1_700_000_000_000,
				Matchers: []*storepb.LabelMatcher{
					{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "up"},
					{Type: storepb.LabelMatcher_RE, Name: "job", Value: "api|db"},
					{Type: storepb.LabelMatcher_NEQ, Name: "env", Value: ""},
				},
				MaxResolutionWindow:     300_000,
				Aggregates:              []storepb.Aggr{storepb.Aggr_COUNT, storepb.Aggr_SUM},
				PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT,
				Hints: mustAny(t, &hintspb.SeriesRequestHints{
					BlockMatchers:    []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__block_id", Value: "01HBLOCK"}},
					EnableQueryStats: true,
				}),
				QueryHints: &storepb.QueryHints{
					StepMillis: 60_000,
					Func:       &storepb.Func{Name: "rate"},
					Grouping:   &storepb.Grouping{By: true, Labels: []string{"job"}},
					Range:      &storepb.Range{Millis: 300_000},
				},
				ShardInfo:            &storepb.ShardInfo{ShardIndex: 1, TotalShards: 3, By: true, Labels: []string{"job"}},
				WithoutReplicaLabels: []string{"replica"},
				Limit:                5000,
				ResponseBatchSize:    100,
			},
			exact: true,
		},
		{
			name:  "SeriesResponse/series",
			ref:   tagBytes(nil, 1, refSeries()),
			want:  &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Series{Series: wantSeries()}},
			exact: true,
		},
		{
			name:  "SeriesResponse/warning",
			ref:   tagString(nil, 2, "fetch series for block 01H: context canceled"),
			want:  &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Warning{Warning: "fetch series for block 01H: context canceled"}},
			exact: true,
		},
		{
			name: "SeriesResponse/hints",
			ref:  tagBytes(nil, 3, refAny("type.googleapis.com/hintspb.SeriesResponseHints", refSeriesResponseHints())),
			want: &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Hints{Hints: mustAny(t, &hintspb.SeriesResponseHints{
				QueriedBlocks: []*hintspb.Block{{Id: "01HBLOCKA"}, {Id: "01HBLOCKB"}},
				QueryStats: &hintspb.QueryStats{
					BlocksQueried:         3,
					MergedSeriesCount:     10,
					ChunksTouched:         40,
					DataDownloadedSizeSum: 123_456,
					GetAllDuration:        durationpb.New(1500 * time.Millisecond),
					MergeDuration:         durationpb.New(250 * time.Millisecond),
				},
			})}},
			exact: true,
		},
		{
			name: "SeriesResponse/batch",
			ref:  tagBytes(nil, 4, tagBytes(tagBytes(nil, 1, refSeries()), 1, tagBytes(nil, 1, refLabel("a", "b")))),
			want: &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Batch{Batch: &storepb.SeriesBatch{Series: []*storepb.Series{
				wantSeries(),
				{Labels: []*labelpb.Label{{Name: "a", Value: "b"}}},
			}}}},
			exact: true,
		},
		{
			name:  "Series",
			ref:   refSeries(),
			want:  wantSeries(),
			exact: true,
		},
		{
			name: "LabelNamesRequest",
			ref: func() []byte {
				b := tagVarint(nil, 1, 1) // partial_response_disabled
				b = tagInt(b, 3, 1000)    // start
				b = tagInt(b, 4, 2000)    // end
				b = tagBytes(b, 5, refAny("type.googleapis.com/hintspb.LabelNamesRequestHints", tagBytes(nil, 1, refMatcher(0, "__block_id", "x"))))
				b = tagBytes(b, 6, refMatcher(3, "job", "test.*")) // matchers NRE
				b = tagString(b, 7, "replica")                     // without_replica_labels
				return tagInt(b, 8, 50)                            // limit
			}(),
			want: &storepb.LabelNamesRequest{
				PartialResponseDisabled: true,
				Start:                   1000,
				End:                     2000,
				Hints: mustAny(t, &hintspb.LabelNamesRequestHints{
					BlockMatchers: []*storepb.LabelMatcher{{Name: "__block_id", Value: "x"}},
				}),
				Matchers:             []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_NRE, Name: "job", Value: "test.*"}},
				WithoutReplicaLabels: []string{"replica"},
				Limit:                50,
			},
			exact: true,
		},
		{
			name: "LabelNamesResponse",
			ref: func() []byte {
				b := tagString(nil, 1, "__name__")
				b = tagString(b, 1, "job")
				b = tagString(b, 2, "partial response")
				return tagBytes(b, 3, refAny("type.googleapis.com/hintspb.LabelNamesResponseHints", tagBytes(nil, 1, tagString(nil, 1, "01HB"))))
			}(),
			want: &storepb.LabelNamesResponse{
				Names:    []string{"__name__", "job"},
				Warnings: []string{"partial response"},
				Hints:    mustAny(t, &hintspb.LabelNamesResponseHints{QueriedBlocks: []*hintspb.Block{{Id: "01HB"}}}),
			},
			exact: true,
		},
		{
			name: "LabelValuesRequest",
			ref: func() []byte {
				b := tagString(nil, 1, "job") // label
				b = tagVarint(b, 3, 1)        // partial_response_strategy ABORT
				b = tagInt(b, 4, -1000)       // start
				b = tagInt(b, 5, 1000)        // end
				b = tagBytes(b, 6, refAny("type.googleapis.com/hintspb.LabelValuesRequestHints", tagBytes(nil, 1, refMatcher(2, "__block_id", "01.*"))))
				b = tagBytes(b, 7, refMatcher(0, "__name__", "up")) // matchers
				b = tagString(b, 8, "replica")                      // without_replica_labels
				return tagInt(b, 9, 7)                              // limit
			}(),
			want: &storepb.LabelValuesRequest{
				Label:                   "job",
				PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT,
				Start:                   -1000,
				End:                     1000,
				Hints: mustAny(t, &hintspb.LabelValuesRequestHints{
					BlockMatchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "__block_id", Value: "01.*"}},
				}),
				Matchers:             []*storepb.LabelMatcher{{Name: "__name__", Value: "up"}},
				WithoutReplicaLabels: []string{"replica"},
				Limit:                7,
			},
			exact: true,
		},
		{
			name: "LabelValuesResponse",
			ref: func() []byte {
				b := tagString(nil, 1, "api")
				b = tagString(b, 1, "db")
				b = tagString(b, 2, "w")
				return tagBytes(b, 3, refAny("type.googleapis.com/hintspb.LabelValuesResponseHints", tagBytes(nil, 1, tagString(nil, 1, "01HC"))))
			}(),
			want: &storepb.LabelValuesResponse{
				Values:   []string{"api", "db"},
				Warnings: []string{"w"},
				Hints:    mustAny(t, &hintspb.LabelValuesResponseHints{QueriedBlocks: []*hintspb.Block{{Id: "01HC"}}}),
			},
			exact: true,
		},
		{
			name: "InfoResponse/StoreInfo",
			ref: func() []byte {
				// label_sets=1 (ZLabelSet{labels=1}).
				b := tagBytes(nil, 1, tagBytes(tagBytes(nil, 1, refLabel("cluster", "eu-1")), 1, refLabel("replica", "a")))
				b = tagString(b, 2, "store") // ComponentType
				// store=3: StoreInfo{min_time=1, max_time=2, supports_sharding=3,
				// supports_without_replica_labels=5, tsdb_infos=6 (TSDBInfo{labels=1, min_time=2, max_time=3}),
				// supports_projections=7}.
				tsdb := tagBytes(nil, 1, tagBytes(nil, 1, refLabel("tenant", "default")))
				tsdb = tagInt(tsdb, 2, 1_600_000_000_000)
				tsdb = tagInt(tsdb, 3, 1_700_000_000_000)
				si := tagInt(nil, 1, 1_600_000_000_000)
				si = tagInt(si, 2, math.MaxInt64)
				si = tagVarint(si, 3, 1)
				si = tagVarint(si, 5, 1)
				si = tagBytes(si, 6, tsdb)
				si = tagVarint(si, 7, 1)
				b = tagBytes(b, 3, si)
				// exemplars=7: ExemplarsInfo{min_time=1, max_time=2}.
				return tagBytes(b, 7, tagInt(tagInt(nil, 1, 5), 2, 6))
			}(),
			want: &infopb.InfoResponse{
				LabelSets:     []*labelpb.ZLabelSet{{Labels: []*labelpb.Label{{Name: "cluster", Value: "eu-1"}, {Name: "replica", Value: "a"}}}},
				ComponentType: "store",
				Store: &infopb.StoreInfo{
					MinTime:                      1_600_000_000_000,
					MaxTime:                      math.MaxInt64,
					SupportsSharding:             true,
					SupportsWithoutReplicaLabels: true,
					TsdbInfos: []*infopb.TSDBInfo{{
						Labels:  &labelpb.ZLabelSet{Labels: []*labelpb.Label{{Name: "tenant", Value: "default"}}},
						MinTime: 1_600_000_000_000,
						MaxTime: 1_700_000_000_000,
					}},
					SupportsProjections: true,
				},
				Exemplars: &infopb.ExemplarsInfo{MinTime: 5, MaxTime: 6},
			},
			exact: true,
		},
		{
			name: "WriteRequest",
			ref: func() []byte {
				b := tagBytes(nil, 1, refTimeSeries()) // timeseries
				b = tagString(b, 2, "tenant-a")        // tenant
				b = tagInt(b, 3, 4)                    // replica
				// timeseriesTenantData=4: TimeSeriesTenantTuple{timeseries=1, tenant=2}.
				return tagBytes(b, 4, tagString(tagBytes(nil, 1, refTimeSeries()), 2, "tenant-b"))
			}(),
			want: &storepb.WriteRequest{
				Timeseries: []*prompb.TimeSeries{wantTimeSeries()},
				Tenant:     "tenant-a",
				Replica:    4,
				TimeseriesTenantData: []*storepb.TimeSeriesTenantTuple{{
					Timeseries: []*prompb.TimeSeries{wantTimeSeries()},
					Tenant:     "tenant-b",
				}},
			},
		},
		{
			name: "prompb.WriteRequest",
			ref: func() []byte {
				b := tagBytes(nil, 1, refTimeSeries())
				// metadata=3: MetricMetadata{type=1 HISTOGRAM, metric_family_name=2, help=4, unit=5}.
				return tagBytes(b, 3, tagString(tagString(tagString(tagVarint(nil, 1, 3), 2, "rpc_duration_seconds"), 4, "RPC latency."), 5, "seconds"))
			}(),
			want: &prompb.WriteRequest{
				Timeseries: []*prompb.TimeSeries{wantTimeSeries()},
				Metadata: []*prompb.MetricMetadata{{
					Type:             prompb.MetricMetadata_HISTOGRAM,
					MetricFamilyName: "rpc_duration_seconds",
					Help:             "RPC latency.",
					Unit:             "seconds",
				}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.want.ProtoReflect().New().Interface()
			testutil.Ok(t, proto.Unmarshal(tc.ref, got))
			testutil.Assert(t, proto.Equal(tc.want, got), "decoded\n%v\nwant\n%v", got, tc.want)
			testutil.Equals(t, 0, len(got.ProtoReflect().GetUnknown()), "unknown fields")

			out, err := proto.Marshal(tc.want)
			testutil.Ok(t, err)
			if tc.exact {
				testutil.Equals(t, hex.EncodeToString(tc.ref), hex.EncodeToString(out))
			} else {
				testutil.Equals(t, len(tc.ref), len(out), "encoded size")
			}
		})
	}
}

// TestWireReference_HintsPayloads checks the hints inside Any decode into the
// hintspb messages Thanos puts there.
func TestWireReference_HintsPayloads(t *testing.T) {
	var req hintspb.SeriesRequestHints
	testutil.Ok(t, proto.Unmarshal(refSeriesRequestHints(), &req))
	testutil.Assert(t, req.GetEnableQueryStats())
	testutil.Equals(t, "01HBLOCK", req.GetBlockMatchers()[0].GetValue())

	var resp hintspb.SeriesResponseHints
	testutil.Ok(t, proto.Unmarshal(refSeriesResponseHints(), &resp))
	testutil.Equals(t, 2, len(resp.GetQueriedBlocks()))
	testutil.Equals(t, 1500*time.Millisecond, resp.GetQueryStats().GetGetAllDuration().AsDuration())
	testutil.Equals(t, 250*time.Millisecond, resp.GetQueryStats().GetMergeDuration().AsDuration())
	testutil.Equals(t, int64(123_456), resp.GetQueryStats().GetDataDownloadedSizeSum())

	// A zero duration as Thanos' gogo code sends it (present, empty message)
	// decodes to a zero duration.
	var qs hintspb.QueryStats
	testutil.Ok(t, proto.Unmarshal(tagBytes(tagBytes(nil, 21, nil), 22, nil), &qs))
	testutil.Equals(t, time.Duration(0), qs.GetGetAllDuration().AsDuration())
	testutil.Assert(t, qs.GetMergeDuration() != nil, "merge_duration present")
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	testutil.Ok(t, err)
	return a
}

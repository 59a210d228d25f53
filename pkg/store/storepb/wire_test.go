package storepb_test

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/stratametrics/strata/pkg/store/hintspb"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/metadatapb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// The expectations below transcribe Thanos' .proto files (main branch after
// v0.42.4): pkg/store/labelpb/types.proto, pkg/store/storepb/{types,rpc}.proto,
// pkg/store/storepb/prompb/{types,remote}.proto, pkg/info/infopb/rpc.proto and
// pkg/store/hintspb/hints.proto. Enum values are written as literal numbers.

func labelWant(name string, num protowire.Number, n, v string) field {
	return vMsg(name, num, vStr("name", 1, n), vStr("value", 2, v))
}

func matcherWant(name string, num protowire.Number, typ int64, n, v string) field {
	fs := []field{vStr("name", 2, n), vStr("value", 3, v)}
	if typ != 0 { // proto3 does not emit zero values.
		fs = append(fs, vInt("type", 1, typ))
	}
	return vMsg(name, num, fs...)
}

func anyWant(name string, num protowire.Number, url string, value []byte) field {
	return vMsg(name, num, vStr("type_url", 1, url), vBytes("value", 2, value))
}

func testAny(url string, value []byte) *anypb.Any {
	return &anypb.Any{TypeUrl: url, Value: value}
}

func testChunk(enc storepb.Chunk_Encoding, data byte, hash uint64) *storepb.Chunk {
	return &storepb.Chunk{Type: enc, Data: []byte{data, data + 1}, Hash: hash}
}

func chunkWant(name string, num protowire.Number, enc int64, data byte, hash uint64) field {
	fs := []field{vBytes("data", 2, []byte{data, data + 1}), vUint("hash", 3, hash)}
	if enc != 0 {
		fs = append(fs, vInt("type", 1, enc))
	}
	return vMsg(name, num, fs...)
}

func testAggrChunk() *storepb.AggrChunk {
	return &storepb.AggrChunk{
		MinTime: -1000,
		MaxTime: 1_700_000_000_000,
		Raw:     testChunk(storepb.Chunk_XOR, 0x10, 1),
		Count:   testChunk(storepb.Chunk_HISTOGRAM, 0x20, 2),
		Sum:     testChunk(storepb.Chunk_FLOAT_HISTOGRAM, 0x30, 3),
		Min:     testChunk(storepb.Chunk_XOR, 0x40, 4),
		Max:     testChunk(storepb.Chunk_XOR, 0x50, 5),
		Counter: testChunk(storepb.Chunk_XOR, 0x60, 6),
	}
}

func aggrChunkFields() []field {
	return []field{
		vInt("min_time", 1, -1000),
		vInt("max_time", 2, 1_700_000_000_000),
		chunkWant("raw", 3, 0, 0x10, 1),
		chunkWant("count", 4, 1, 0x20, 2),
		chunkWant("sum", 5, 2, 0x30, 3),
		chunkWant("min", 6, 0, 0x40, 4),
		chunkWant("max", 7, 0, 0x50, 5),
		chunkWant("counter", 8, 0, 0x60, 6),
	}
}

func testSeries(metric string) *storepb.Series {
	return &storepb.Series{
		Labels: []*labelpb.Label{{Name: "__name__", Value: metric}, {Name: "job", Value: "node"}},
		Chunks: []*storepb.AggrChunk{testAggrChunk()},
	}
}

func seriesFields(metric string) []field {
	return []field{
		labelWant("labels", 1, "__name__", metric),
		labelWant("labels", 1, "job", "node"),
		vMsg("chunks", 2, aggrChunkFields()...),
	}
}

func testIntHistogram() *prompb.Histogram {
	return &prompb.Histogram{
		Count:          &prompb.Histogram_CountInt{CountInt: 12},
		Sum:            18.4,
		Schema:         -3,
		ZeroThreshold:  0.001,
		ZeroCount:      &prompb.Histogram_ZeroCountInt{ZeroCountInt: 2},
		NegativeSpans:  []*prompb.BucketSpan{{Offset: -2, Length: 2}},
		NegativeDeltas: []int64{1, -1},
		NegativeCounts: []float64{0.5, 2.5},
		PositiveSpans:  []*prompb.BucketSpan{{Offset: 0, Length: 1}, {Offset: 3, Length: 2}},
		PositiveDeltas: []int64{3, -2, 4},
		PositiveCounts: []float64{3, 1, 5},
		ResetHint:      prompb.Histogram_GAUGE,
		Timestamp:      1_700_000_000_123,
		CustomValues:   []float64{0.1, 1, 10},
	}
}

func intHistogramFields() []field {
	return []field{
		vUint("count_int", 1, 12),
		vDouble("sum", 3, 18.4),
		vSint("schema", 4, -3),
		vDouble("zero_threshold", 5, 0.001),
		vUint("zero_count_int", 6, 2),
		vMsg("negative_spans", 8, vSint("offset", 1, -2), vUint("length", 2, 2)),
		vPackedSint("negative_deltas", 9, 1, -1),
		vPackedDouble("negative_counts", 10, 0.5, 2.5),
		vMsg("positive_spans", 11, vUint("length", 2, 1)),
		vMsg("positive_spans", 11, vSint("offset", 1, 3), vUint("length", 2, 2)),
		vPackedSint("positive_deltas", 12, 3, -2, 4),
		vPackedDouble("positive_counts", 13, 3, 1, 5),
		vInt("reset_hint", 14, 3),
		vInt("timestamp", 15, 1_700_000_000_123),
		vPackedDouble("custom_values", 16, 0.1, 1, 10),
	}
}

func testFloatHistogram() *prompb.Histogram {
	return &prompb.Histogram{
		Count:          &prompb.Histogram_CountFloat{CountFloat: 7.5},
		Sum:            -3.25,
		Schema:         8,
		ZeroCount:      &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: 0.5},
		PositiveSpans:  []*prompb.BucketSpan{{Offset: 1, Length: 1}},
		PositiveCounts: []float64{7},
		ResetHint:      prompb.Histogram_YES,
		Timestamp:      1_700_000_000_456,
	}
}

func floatHistogramFields() []field {
	return []field{
		vDouble("count_float", 2, 7.5),
		vDouble("sum", 3, -3.25),
		vSint("schema", 4, 8),
		vDouble("zero_count_float", 7, 0.5),
		vMsg("positive_spans", 11, vSint("offset", 1, 1), vUint("length", 2, 1)),
		vPackedDouble("positive_counts", 13, 7),
		vInt("reset_hint", 14, 1),
		vInt("timestamp", 15, 1_700_000_000_456),
	}
}

func testTimeSeries() *prompb.TimeSeries {
	return &prompb.TimeSeries{
		Labels:  []*labelpb.Label{{Name: "__name__", Value: "http_requests_total"}, {Name: "code", Value: "200"}},
		Samples: []*prompb.Sample{{Value: 1.5, Timestamp: 1000}, {Value: -2, Timestamp: 2000}},
		Exemplars: []*prompb.Exemplar{{
			Labels:    []*labelpb.Label{{Name: "trace_id", Value: "abc"}},
			Value:     0.25,
			Timestamp: 1500,
		}},
		Histograms: []*prompb.Histogram{testIntHistogram(), testFloatHistogram()},
	}
}

func timeSeriesFields() []field {
	return []field{
		labelWant("labels", 1, "__name__", "http_requests_total"),
		labelWant("labels", 1, "code", "200"),
		vMsg("samples", 2, vDouble("value", 1, 1.5), vInt("timestamp", 2, 1000)),
		vMsg("samples", 2, vDouble("value", 1, -2), vInt("timestamp", 2, 2000)),
		vMsg("exemplars", 3,
			labelWant("labels", 1, "trace_id", "abc"),
			vDouble("value", 2, 0.25),
			vInt("timestamp", 3, 1500),
		),
		vMsg("histograms", 4, intHistogramFields()...),
		vMsg("histograms", 4, floatHistogramFields()...),
	}
}

func testPromChunkedSeries() *prompb.ChunkedSeries {
	return &prompb.ChunkedSeries{
		Labels: []*labelpb.Label{{Name: "a", Value: "1"}},
		Chunks: []*prompb.Chunk{
			{MinTimeMs: 10, MaxTimeMs: 20, Type: prompb.Chunk_XOR, Data: []byte{1, 2}},
			{MinTimeMs: 30, MaxTimeMs: 40, Type: prompb.Chunk_FLOAT_HISTOGRAM, Data: []byte{3}},
		},
	}
}

func promChunkedSeriesFields() []field {
	return []field{
		labelWant("labels", 1, "a", "1"),
		vMsg("chunks", 2, vInt("min_time_ms", 1, 10), vInt("max_time_ms", 2, 20), vInt("type", 3, 1), vBytes("data", 4, []byte{1, 2})),
		vMsg("chunks", 2, vInt("min_time_ms", 1, 30), vInt("max_time_ms", 2, 40), vInt("type", 3, 3), vBytes("data", 4, []byte{3})),
	}
}

func testQueryStats() *hintspb.QueryStats {
	return &hintspb.QueryStats{
		BlocksQueried:          1,
		MergedSeriesCount:      2,
		MergedChunksCount:      3,
		PostingsTouched:        4,
		PostingsTouchedSizeSum: 5,
		PostingsToFetch:        6,
		PostingsFetched:        7,
		PostingsFetchedSizeSum: 8,
		PostingsFetchCount:     9,
		SeriesTouched:          10,
		SeriesTouchedSizeSum:   11,
		SeriesFetched:          12,
		SeriesFetchedSizeSum:   13,
		SeriesFetchCount:       14,
		ChunksTouched:          15,
		ChunksTouchedSizeSum:   16,
		ChunksFetched:          17,
		ChunksFetchedSizeSum:   18,
		ChunksFetchCount:       19,
		DataDownloadedSizeSum:  20,
		GetAllDuration:         durationpb.New(1500 * time.Millisecond),
		MergeDuration:          durationpb.New(2 * time.Second),
	}
}

func queryStatsFields() []field {
	return []field{
		vInt("blocks_queried", 1, 1),
		vInt("merged_series_count", 2, 2),
		vInt("merged_chunks_count", 3, 3),
		vInt("postings_touched", 4, 4),
		vInt("postings_touched_size_sum", 5, 5),
		vInt("postings_to_fetch", 6, 6),
		vInt("postings_fetched", 7, 7),
		vInt("postings_fetched_size_sum", 8, 8),
		vInt("postings_fetch_count", 9, 9),
		vInt("series_touched", 10, 10),
		vInt("series_touched_size_sum", 11, 11),
		vInt("series_fetched", 12, 12),
		vInt("series_fetched_size_sum", 13, 13),
		vInt("series_fetch_count", 14, 14),
		vInt("chunks_touched", 15, 15),
		vInt("chunks_touched_size_sum", 16, 16),
		vInt("chunks_fetched", 17, 17),
		vInt("chunks_fetched_size_sum", 18, 18),
		vInt("chunks_fetch_count", 19, 19),
		vInt("data_downloaded_size_sum", 20, 20),
		vMsg("get_all_duration", 21, vInt("seconds", 1, 1), vInt("nanos", 2, 500_000_000)),
		vMsg("merge_duration", 22, vInt("seconds", 1, 2)),
	}
}

func testStoreInfo() *infopb.StoreInfo {
	return &infopb.StoreInfo{
		MinTime:                      -100,
		MaxTime:                      9_000_000_000_000,
		SupportsSharding:             true,
		SupportsWithoutReplicaLabels: true,
		TsdbInfos: []*infopb.TSDBInfo{{
			Labels:  &labelpb.ZLabelSet{Labels: []*labelpb.Label{{Name: "tenant", Value: "t1"}}},
			MinTime: 5,
			MaxTime: 6,
		}},
		SupportsProjections: true,
	}
}

func storeInfoFields() []field {
	return []field{
		vInt("min_time", 1, -100),
		vInt("max_time", 2, 9_000_000_000_000),
		vBool("supports_sharding", 3),
		vBool("supports_without_replica_labels", 5),
		vMsg("tsdb_infos", 6,
			vMsg("labels", 1, labelWant("labels", 1, "tenant", "t1")),
			vInt("min_time", 2, 5),
			vInt("max_time", 3, 6),
		),
		vBool("supports_projections", 7),
	}
}

type wireCase struct {
	name     string
	fullName protoreflect.FullName // Thanos' message name (appears in Any type URLs).
	msg      proto.Message
	want     []field
}

func wireCases() []wireCase {
	return []wireCase{
		// labelpb (package thanos).
		{
			name: "Label", fullName: "thanos.Label",
			msg:  &labelpb.Label{Name: "__name__", Value: "up"},
			want: []field{vStr("name", 1, "__name__"), vStr("value", 2, "up")},
		},
		{
			name: "LabelSet", fullName: "thanos.LabelSet",
			msg:  &labelpb.LabelSet{Labels: []*labelpb.Label{{Name: "a", Value: "1"}, {Name: "b", Value: "2"}}},
			want: []field{labelWant("labels", 1, "a", "1"), labelWant("labels", 1, "b", "2")},
		},
		{
			name: "ZLabelSet", fullName: "thanos.ZLabelSet",
			msg:  &labelpb.ZLabelSet{Labels: []*labelpb.Label{{Name: "a", Value: "1"}, {Name: "b", Value: "2"}}},
			want: []field{labelWant("labels", 1, "a", "1"), labelWant("labels", 1, "b", "2")},
		},
		{
			name: "SymTableLabel", fullName: "thanos.SymTableLabel",
			msg:  &labelpb.SymTableLabel{NameRef: 3, ValueRef: 300},
			want: []field{vUint("name_ref", 1, 3), vUint("value_ref", 2, 300)},
		},
		{
			name: "SymbolTable", fullName: "thanos.SymbolTable",
			msg:  &labelpb.SymbolTable{Offsets: []uint32{3, 5, 300}, Table: []byte("fooab")},
			want: []field{vPackedVarint("offsets", 1, 3, 5, 300), vBytes("table", 2, []byte("fooab"))},
		},

		// storepb types.proto (package thanos).
		{
			name: "Chunk", fullName: "thanos.Chunk",
			msg:  &storepb.Chunk{Type: storepb.Chunk_FLOAT_HISTOGRAM, Data: []byte{1, 2, 3}, Hash: 0xdeadbeefcafe},
			want: []field{vInt("type", 1, 2), vBytes("data", 2, []byte{1, 2, 3}), vUint("hash", 3, 0xdeadbeefcafe)},
		},
		{
			name: "Series", fullName: "thanos.Series",
			msg:  testSeries("up"),
			want: seriesFields("up"),
		},
		{
			name: "SeriesBatch", fullName: "thanos.SeriesBatch",
			msg:  &storepb.SeriesBatch{Series: []*storepb.Series{testSeries("a"), testSeries("b")}},
			want: []field{vMsg("series", 1, seriesFields("a")...), vMsg("series", 1, seriesFields("b")...)},
		},
		{
			name: "AggrChunk", fullName: "thanos.AggrChunk",
			msg:  testAggrChunk(),
			want: aggrChunkFields(),
		},
		{
			name: "LabelMatcher", fullName: "thanos.LabelMatcher",
			msg:  &storepb.LabelMatcher{Type: storepb.LabelMatcher_NRE, Name: "job", Value: "api.*"},
			want: []field{vInt("type", 1, 3), vStr("name", 2, "job"), vStr("value", 3, "api.*")},
		},

		// storepb rpc.proto (package thanos).
		{
			name: "WriteResponse", fullName: "thanos.WriteResponse",
			msg: &storepb.WriteResponse{},
		},
		{
			name: "WriteRequest", fullName: "thanos.WriteRequest",
			msg: &storepb.WriteRequest{
				Timeseries: []*prompb.TimeSeries{testTimeSeries()},
				Tenant:     "team-a",
				Replica:    2,
				TimeseriesTenantData: []*storepb.TimeSeriesTenantTuple{{
					Timeseries: []*prompb.TimeSeries{testTimeSeries()},
					Tenant:     "team-b",
				}},
				Metadata: []*prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "temp", Unit: "celsius"}},
			},
			want: []field{
				vMsg("timeseries", 1, timeSeriesFields()...),
				vStr("tenant", 2, "team-a"),
				vInt("replica", 3, 2),
				vMsg("timeseriesTenantData", 4, vMsg("timeseries", 1, timeSeriesFields()...), vStr("tenant", 2, "team-b")),
				// Strata's extension: a field number Thanos does not use.
				vMsg("metadata", 5, vInt("type", 1, 2), vStr("metric_family_name", 2, "temp"), vStr("unit", 5, "celsius")),
			},
		},
		{
			name: "SeriesRequest", fullName: "thanos.SeriesRequest",
			msg: &storepb.SeriesRequest{
				MinTime: -5,
				MaxTime: 1_700_000_000_000,
				Matchers: []*storepb.LabelMatcher{
					{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "up"},
					{Type: storepb.LabelMatcher_RE, Name: "job", Value: "a|b"},
				},
				MaxResolutionWindow:     300_000,
				Aggregates:              []storepb.Aggr{storepb.Aggr_RAW, storepb.Aggr_COUNT, storepb.Aggr_COUNTER},
				PartialResponseDisabled: true,
				PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT,
				SkipChunks:              true,
				Hints:                   testAny("type.googleapis.com/hintspb.SeriesRequestHints", []byte{0x10, 0x01}),
				Step:                    15_000,
				Range:                   60_000,
				QueryHints:              &storepb.QueryHints{StepMillis: 30_000},
				ShardInfo:               &storepb.ShardInfo{ShardIndex: 1, TotalShards: 4},
				WithoutReplicaLabels:    []string{"replica", "rule_replica"},
				Limit:                   1000,
				ResponseBatchSize:       64,
			},
			want: []field{
				vInt("min_time", 1, -5),
				vInt("max_time", 2, 1_700_000_000_000),
				matcherWant("matchers", 3, 0, "__name__", "up"),
				matcherWant("matchers", 3, 2, "job", "a|b"),
				vInt("max_resolution_window", 4, 300_000),
				vPackedVarint("aggregates", 5, 0, 1, 5),
				vBool("partial_response_disabled", 6),
				vInt("partial_response_strategy", 7, 1),
				vBool("skip_chunks", 8),
				anyWant("hints", 9, "type.googleapis.com/hintspb.SeriesRequestHints", []byte{0x10, 0x01}),
				vInt("step", 10, 15_000),
				vInt("range", 11, 60_000),
				vMsg("query_hints", 12, vInt("step_millis", 1, 30_000)),
				vMsg("shard_info", 13, vInt("shard_index", 1, 1), vInt("total_shards", 2, 4)),
				vStr("without_replica_labels", 14, "replica"),
				vStr("without_replica_labels", 14, "rule_replica"),
				vInt("limit", 15, 1000),
				vInt("response_batch_size", 16, 64),
			},
		},
		{
			name: "QueryHints", fullName: "thanos.QueryHints",
			msg: &storepb.QueryHints{
				StepMillis:          30_000,
				Func:                &storepb.Func{Name: "rate"},
				Grouping:            &storepb.Grouping{By: true, Labels: []string{"job"}},
				Range:               &storepb.Range{Millis: 300_000},
				ProjectionLabels:    []string{"job", "instance"},
				ProjectionInclude:   true,
				SeriesHashLabelName: "__series_hash__",
			},
			want: []field{
				vInt("step_millis", 1, 30_000),
				vMsg("func", 2, vStr("name", 1, "rate")),
				vMsg("grouping", 4, vBool("by", 1), vStr("labels", 3, "job")),
				vMsg("range", 5, vInt("millis", 1, 300_000)),
				vStr("projection_labels", 6, "job"),
				vStr("projection_labels", 6, "instance"),
				vBool("projection_include", 7),
				vStr("series_hash_label_name", 8, "__series_hash__"),
			},
		},
		{
			name: "ShardInfo", fullName: "thanos.ShardInfo",
			msg:  &storepb.ShardInfo{ShardIndex: 2, TotalShards: 3, By: true, Labels: []string{"a", "b"}},
			want: []field{vInt("shard_index", 1, 2), vInt("total_shards", 2, 3), vBool("by", 3), vStr("labels", 4, "a"), vStr("labels", 4, "b")},
		},
		{
			name: "Func", fullName: "thanos.Func",
			msg:  &storepb.Func{Name: "sum"},
			want: []field{vStr("name", 1, "sum")},
		},
		{
			name: "Grouping", fullName: "thanos.Grouping",
			msg:  &storepb.Grouping{By: true, Labels: []string{"x", "y"}},
			want: []field{vBool("by", 1), vStr("labels", 3, "x"), vStr("labels", 3, "y")},
		},
		{
			name: "Range", fullName: "thanos.Range",
			msg:  &storepb.Range{Millis: 60_000},
			want: []field{vInt("millis", 1, 60_000)},
		},
		{
			name: "TimeSeriesTenantTuple", fullName: "thanos.TimeSeriesTenantTuple",
			msg:  &storepb.TimeSeriesTenantTuple{Timeseries: []*prompb.TimeSeries{testTimeSeries()}, Tenant: "t"},
			want: []field{vMsg("timeseries", 1, timeSeriesFields()...), vStr("tenant", 2, "t")},
		},
		{
			name: "SeriesResponse/series", fullName: "thanos.SeriesResponse",
			msg:  &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Series{Series: testSeries("up")}},
			want: []field{vMsg("series", 1, seriesFields("up")...)},
		},
		{
			name: "SeriesResponse/warning", fullName: "thanos.SeriesResponse",
			msg:  &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Warning{Warning: "store unavailable"}},
			want: []field{vStr("warning", 2, "store unavailable")},
		},
		{
			name: "SeriesResponse/hints", fullName: "thanos.SeriesResponse",
			msg:  &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Hints{Hints: testAny("type.googleapis.com/hintspb.SeriesResponseHints", []byte{0x0a, 0x00})}},
			want: []field{anyWant("hints", 3, "type.googleapis.com/hintspb.SeriesResponseHints", []byte{0x0a, 0x00})},
		},
		{
			name: "SeriesResponse/batch", fullName: "thanos.SeriesResponse",
			msg:  &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Batch{Batch: &storepb.SeriesBatch{Series: []*storepb.Series{testSeries("a")}}}},
			want: []field{vMsg("batch", 4, vMsg("series", 1, seriesFields("a")...))},
		},
		{
			name: "LabelNamesRequest", fullName: "thanos.LabelNamesRequest",
			msg: &storepb.LabelNamesRequest{
				PartialResponseDisabled: true,
				PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT,
				Start:                   -1,
				End:                     2,
				Hints:                   testAny("type.googleapis.com/hintspb.LabelNamesRequestHints", []byte{0x0a, 0x00}),
				Matchers:                []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_NEQ, Name: "a", Value: "b"}},
				WithoutReplicaLabels:    []string{"replica"},
				Limit:                   10,
			},
			want: []field{
				vBool("partial_response_disabled", 1),
				vInt("partial_response_strategy", 2, 1),
				vInt("start", 3, -1),
				vInt("end", 4, 2),
				anyWant("hints", 5, "type.googleapis.com/hintspb.LabelNamesRequestHints", []byte{0x0a, 0x00}),
				matcherWant("matchers", 6, 1, "a", "b"),
				vStr("without_replica_labels", 7, "replica"),
				vInt("limit", 8, 10),
			},
		},
		{
			name: "LabelNamesResponse", fullName: "thanos.LabelNamesResponse",
			msg: &storepb.LabelNamesResponse{
				Names:    []string{"__name__", "job"},
				Warnings: []string{"w1"},
				Hints:    testAny("type.googleapis.com/hintspb.LabelNamesResponseHints", []byte{0x0a, 0x00}),
			},
			want: []field{
				vStr("names", 1, "__name__"),
				vStr("names", 1, "job"),
				vStr("warnings", 2, "w1"),
				anyWant("hints", 3, "type.googleapis.com/hintspb.LabelNamesResponseHints", []byte{0x0a, 0x00}),
			},
		},
		{
			name: "LabelValuesRequest", fullName: "thanos.LabelValuesRequest",
			msg: &storepb.LabelValuesRequest{
				Label:                   "job",
				PartialResponseDisabled: true,
				PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT,
				Start:                   3,
				End:                     4,
				Hints:                   testAny("type.googleapis.com/hintspb.LabelValuesRequestHints", []byte{0x0a, 0x00}),
				Matchers:                []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "x", Value: ".+"}},
				WithoutReplicaLabels:    []string{"replica"},
				Limit:                   20,
			},
			want: []field{
				vStr("label", 1, "job"),
				vBool("partial_response_disabled", 2),
				vInt("partial_response_strategy", 3, 1),
				vInt("start", 4, 3),
				vInt("end", 5, 4),
				anyWant("hints", 6, "type.googleapis.com/hintspb.LabelValuesRequestHints", []byte{0x0a, 0x00}),
				matcherWant("matchers", 7, 2, "x", ".+"),
				vStr("without_replica_labels", 8, "replica"),
				vInt("limit", 9, 20),
			},
		},
		{
			name: "LabelValuesResponse", fullName: "thanos.LabelValuesResponse",
			msg: &storepb.LabelValuesResponse{
				Values:   []string{"api", "db"},
				Warnings: []string{"w1", "w2"},
				Hints:    testAny("type.googleapis.com/hintspb.LabelValuesResponseHints", []byte{0x0a, 0x00}),
			},
			want: []field{
				vStr("values", 1, "api"),
				vStr("values", 1, "db"),
				vStr("warnings", 2, "w1"),
				vStr("warnings", 2, "w2"),
				anyWant("hints", 3, "type.googleapis.com/hintspb.LabelValuesResponseHints", []byte{0x0a, 0x00}),
			},
		},

		// prompb types.proto (package prometheus_copy).
		{
			name: "MetricMetadata", fullName: "prometheus_copy.MetricMetadata",
			msg:  &prompb.MetricMetadata{Type: prompb.MetricMetadata_STATESET, MetricFamilyName: "up", Help: "1 if up", Unit: "bool"},
			want: []field{vInt("type", 1, 7), vStr("metric_family_name", 2, "up"), vStr("help", 4, "1 if up"), vStr("unit", 5, "bool")},
		},
		{
			name: "Sample", fullName: "prometheus_copy.Sample",
			msg:  &prompb.Sample{Value: 3.5, Timestamp: -7},
			want: []field{vDouble("value", 1, 3.5), vInt("timestamp", 2, -7)},
		},
		{
			name: "Exemplar", fullName: "prometheus_copy.Exemplar",
			msg:  &prompb.Exemplar{Labels: []*labelpb.Label{{Name: "trace_id", Value: "t"}}, Value: 9.75, Timestamp: 11},
			want: []field{labelWant("labels", 1, "trace_id", "t"), vDouble("value", 2, 9.75), vInt("timestamp", 3, 11)},
		},
		{
			name: "Histogram/int", fullName: "prometheus_copy.Histogram",
			msg:  testIntHistogram(),
			want: intHistogramFields(),
		},
		{
			name: "Histogram/float", fullName: "prometheus_copy.Histogram",
			msg:  testFloatHistogram(),
			want: floatHistogramFields(),
		},
		{
			name: "BucketSpan", fullName: "prometheus_copy.BucketSpan",
			msg:  &prompb.BucketSpan{Offset: -2, Length: 4},
			want: []field{vSint("offset", 1, -2), vUint("length", 2, 4)},
		},
		{
			name: "TimeSeries", fullName: "prometheus_copy.TimeSeries",
			msg:  testTimeSeries(),
			want: timeSeriesFields(),
		},
		{
			name: "prompb.LabelMatcher", fullName: "prometheus_copy.LabelMatcher",
			msg:  &prompb.LabelMatcher{Type: prompb.LabelMatcher_RE, Name: "job", Value: "a.*"},
			want: []field{vInt("type", 1, 2), vStr("name", 2, "job"), vStr("value", 3, "a.*")},
		},
		{
			name: "ReadHints", fullName: "prometheus_copy.ReadHints",
			msg: &prompb.ReadHints{StepMs: 1, Func: "rate", StartMs: 2, EndMs: 3, Grouping: []string{"a", "b"}, By: true, RangeMs: 4},
			want: []field{
				vInt("step_ms", 1, 1), vStr("func", 2, "rate"), vInt("start_ms", 3, 2), vInt("end_ms", 4, 3),
				vStr("grouping", 5, "a"), vStr("grouping", 5, "b"), vBool("by", 6), vInt("range_ms", 7, 4),
			},
		},
		{
			name: "prompb.Chunk", fullName: "prometheus_copy.Chunk",
			msg:  &prompb.Chunk{MinTimeMs: -1, MaxTimeMs: 1, Type: prompb.Chunk_HISTOGRAM, Data: []byte{9}},
			want: []field{vInt("min_time_ms", 1, -1), vInt("max_time_ms", 2, 1), vInt("type", 3, 2), vBytes("data", 4, []byte{9})},
		},
		{
			name: "ChunkedSeries", fullName: "prometheus_copy.ChunkedSeries",
			msg:  testPromChunkedSeries(),
			want: promChunkedSeriesFields(),
		},

		// metadatapb rpc.proto (package thanos; Thanos' pkg/metadata/metadatapb).
		{
			name: "MetricMetadataRequest", fullName: "thanos.MetricMetadataRequest",
			msg:  &metadatapb.MetricMetadataRequest{Metric: "up", Limit: 10, PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT},
			want: []field{vStr("metric", 1, "up"), vInt("limit", 2, 10), vInt("partial_response_strategy", 3, 1)},
		},
		{
			name: "MetricMetadataResponse/metadata", fullName: "thanos.MetricMetadataResponse",
			msg: &metadatapb.MetricMetadataResponse{Result: &metadatapb.MetricMetadataResponse_Metadata{Metadata: &metadatapb.MetricMetadata{
				Metadata: map[string]*metadatapb.MetricMetadataEntry{"up": {Metas: []*metadatapb.Meta{{Type: "gauge"}}}},
			}}},
			want: []field{vMsg("metadata", 1, vMsg("metadata", 1, vStr("key", 1, "up"), vMsg("value", 2, vMsg("metas", 2, vStr("type", 1, "gauge")))))},
		},
		{
			name: "MetricMetadataResponse/warning", fullName: "thanos.MetricMetadataResponse",
			msg:  &metadatapb.MetricMetadataResponse{Result: &metadatapb.MetricMetadataResponse_Warning{Warning: "partial"}},
			want: []field{vStr("warning", 2, "partial")},
		},
		{
			name: "MetricMetadata", fullName: "thanos.MetricMetadata",
			msg: &metadatapb.MetricMetadata{Metadata: map[string]*metadatapb.MetricMetadataEntry{
				"http_requests_total": {Metas: []*metadatapb.Meta{{Type: "counter", Help: "Requests."}}},
			}},
			want: []field{vMsg("metadata", 1, vStr("key", 1, "http_requests_total"),
				vMsg("value", 2, vMsg("metas", 2, vStr("type", 1, "counter"), vStr("help", 2, "Requests."))))},
		},
		{
			name: "MetricMetadataEntry", fullName: "thanos.MetricMetadataEntry",
			msg:  &metadatapb.MetricMetadataEntry{Metas: []*metadatapb.Meta{{Type: "gauge"}, {Help: "h"}}},
			want: []field{vMsg("metas", 2, vStr("type", 1, "gauge")), vMsg("metas", 2, vStr("help", 2, "h"))},
		},
		{
			name: "Meta", fullName: "thanos.Meta",
			msg:  &metadatapb.Meta{Type: "histogram", Help: "Latency.", Unit: "seconds"},
			want: []field{vStr("type", 1, "histogram"), vStr("help", 2, "Latency."), vStr("unit", 3, "seconds")},
		},

		// prompb remote.proto (package prometheus_copy).
		{
			name: "prompb.WriteRequest", fullName: "prometheus_copy.WriteRequest",
			msg: &prompb.WriteRequest{
				Timeseries: []*prompb.TimeSeries{testTimeSeries()},
				Metadata:   []*prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "x_total"}},
			},
			want: []field{
				vMsg("timeseries", 1, timeSeriesFields()...),
				vMsg("metadata", 3, vInt("type", 1, 1), vStr("metric_family_name", 2, "x_total")),
			},
		},
		{
			name: "ReadRequest", fullName: "prometheus_copy.ReadRequest",
			msg: &prompb.ReadRequest{
				Queries:               []*prompb.Query{{StartTimestampMs: 1, EndTimestampMs: 2}},
				AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS, prompb.ReadRequest_SAMPLES},
			},
			want: []field{
				vMsg("queries", 1, vInt("start_timestamp_ms", 1, 1), vInt("end_timestamp_ms", 2, 2)),
				vPackedVarint("accepted_response_types", 2, 1, 0),
			},
		},
		{
			name: "ReadResponse", fullName: "prometheus_copy.ReadResponse",
			msg:  &prompb.ReadResponse{Results: []*prompb.QueryResult{{Timeseries: []*prompb.TimeSeries{testTimeSeries()}}}},
			want: []field{vMsg("results", 1, vMsg("timeseries", 1, timeSeriesFields()...))},
		},
		{
			name: "Query", fullName: "prometheus_copy.Query",
			msg: &prompb.Query{
				StartTimestampMs: 100,
				EndTimestampMs:   200,
				Matchers:         []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_NRE, Name: "a", Value: "b"}},
				Hints:            &prompb.ReadHints{StepMs: 15},
			},
			want: []field{
				vInt("start_timestamp_ms", 1, 100),
				vInt("end_timestamp_ms", 2, 200),
				matcherWant("matchers", 3, 3, "a", "b"),
				vMsg("hints", 4, vInt("step_ms", 1, 15)),
			},
		},
		{
			name: "QueryResult", fullName: "prometheus_copy.QueryResult",
			msg:  &prompb.QueryResult{Timeseries: []*prompb.TimeSeries{testTimeSeries()}},
			want: []field{vMsg("timeseries", 1, timeSeriesFields()...)},
		},
		{
			name: "ChunkedReadResponse", fullName: "prometheus_copy.ChunkedReadResponse",
			msg:  &prompb.ChunkedReadResponse{ChunkedSeries: []*prompb.ChunkedSeries{testPromChunkedSeries()}, QueryIndex: 3},
			want: []field{vMsg("chunked_series", 1, promChunkedSeriesFields()...), vInt("query_index", 2, 3)},
		},

		// infopb (package thanos.info).
		{
			name: "InfoRequest", fullName: "thanos.info.InfoRequest",
			msg: &infopb.InfoRequest{},
		},
		{
			name: "InfoResponse", fullName: "thanos.info.InfoResponse",
			msg: &infopb.InfoResponse{
				LabelSets: []*labelpb.ZLabelSet{
					{Labels: []*labelpb.Label{{Name: "cluster", Value: "eu"}}},
					{Labels: []*labelpb.Label{{Name: "cluster", Value: "us"}}},
				},
				ComponentType:  "store",
				Store:          testStoreInfo(),
				Rules:          &infopb.RulesInfo{},
				MetricMetadata: &infopb.MetricMetadataInfo{},
				Targets:        &infopb.TargetsInfo{},
				Exemplars:      &infopb.ExemplarsInfo{MinTime: 1, MaxTime: 2},
				Query:          &infopb.QueryAPIInfo{},
				Status:         &infopb.StatusInfo{},
			},
			want: []field{
				vMsg("label_sets", 1, labelWant("labels", 1, "cluster", "eu")),
				vMsg("label_sets", 1, labelWant("labels", 1, "cluster", "us")),
				vStr("ComponentType", 2, "store"),
				vMsg("store", 3, storeInfoFields()...),
				vMsg("rules", 4),
				vMsg("metric_metadata", 5),
				vMsg("targets", 6),
				vMsg("exemplars", 7, vInt("min_time", 1, 1), vInt("max_time", 2, 2)),
				vMsg("query", 8),
				vMsg("status", 9),
			},
		},
		{
			name: "StoreInfo", fullName: "thanos.info.StoreInfo",
			msg:  testStoreInfo(),
			want: storeInfoFields(),
		},
		{name: "RulesInfo", fullName: "thanos.info.RulesInfo", msg: &infopb.RulesInfo{}},
		{name: "MetricMetadataInfo", fullName: "thanos.info.MetricMetadataInfo", msg: &infopb.MetricMetadataInfo{}},
		{name: "TargetsInfo", fullName: "thanos.info.TargetsInfo", msg: &infopb.TargetsInfo{}},
		{name: "QueryAPIInfo", fullName: "thanos.info.QueryAPIInfo", msg: &infopb.QueryAPIInfo{}},
		{name: "StatusInfo", fullName: "thanos.info.StatusInfo", msg: &infopb.StatusInfo{}},
		{
			name: "ExemplarsInfo", fullName: "thanos.info.ExemplarsInfo",
			msg:  &infopb.ExemplarsInfo{MinTime: -3, MaxTime: 4},
			want: []field{vInt("min_time", 1, -3), vInt("max_time", 2, 4)},
		},
		{
			name: "TSDBInfo", fullName: "thanos.info.TSDBInfo",
			msg: &infopb.TSDBInfo{
				Labels:  &labelpb.ZLabelSet{Labels: []*labelpb.Label{{Name: "a", Value: "b"}}},
				MinTime: 7,
				MaxTime: 8,
			},
			want: []field{vMsg("labels", 1, labelWant("labels", 1, "a", "b")), vInt("min_time", 2, 7), vInt("max_time", 3, 8)},
		},

		// hintspb (package hintspb).
		{
			name: "SeriesRequestHints", fullName: "hintspb.SeriesRequestHints",
			msg: &hintspb.SeriesRequestHints{
				BlockMatchers:    []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__block_id", Value: "01H"}},
				EnableQueryStats: true,
			},
			want: []field{matcherWant("block_matchers", 1, 0, "__block_id", "01H"), vBool("enable_query_stats", 2)},
		},
		{
			name: "SeriesResponseHints", fullName: "hintspb.SeriesResponseHints",
			msg: &hintspb.SeriesResponseHints{
				QueriedBlocks: []*hintspb.Block{{Id: "01A"}, {Id: "01B"}},
				QueryStats:    testQueryStats(),
			},
			want: []field{
				vMsg("queried_blocks", 1, vStr("id", 1, "01A")),
				vMsg("queried_blocks", 1, vStr("id", 1, "01B")),
				vMsg("query_stats", 2, queryStatsFields()...),
			},
		},
		{
			name: "Block", fullName: "hintspb.Block",
			msg:  &hintspb.Block{Id: "01JABC"},
			want: []field{vStr("id", 1, "01JABC")},
		},
		{
			name: "LabelNamesRequestHints", fullName: "hintspb.LabelNamesRequestHints",
			msg:  &hintspb.LabelNamesRequestHints{BlockMatchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_NEQ, Name: "a", Value: "b"}}},
			want: []field{matcherWant("block_matchers", 1, 1, "a", "b")},
		},
		{
			name: "LabelNamesResponseHints", fullName: "hintspb.LabelNamesResponseHints",
			msg:  &hintspb.LabelNamesResponseHints{QueriedBlocks: []*hintspb.Block{{Id: "x"}}},
			want: []field{vMsg("queried_blocks", 1, vStr("id", 1, "x"))},
		},
		{
			name: "LabelValuesRequestHints", fullName: "hintspb.LabelValuesRequestHints",
			msg:  &hintspb.LabelValuesRequestHints{BlockMatchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_NRE, Name: "a", Value: "b"}}},
			want: []field{matcherWant("block_matchers", 1, 3, "a", "b")},
		},
		{
			name: "LabelValuesResponseHints", fullName: "hintspb.LabelValuesResponseHints",
			msg:  &hintspb.LabelValuesResponseHints{QueriedBlocks: []*hintspb.Block{{Id: "y"}}},
			want: []field{vMsg("queried_blocks", 1, vStr("id", 1, "y"))},
		},
		{
			name: "QueryStats", fullName: "hintspb.QueryStats",
			msg:  testQueryStats(),
			want: queryStatsFields(),
		},
	}
}

// TestWire_EveryMessage marshals a fully populated instance of every message
// and checks the bytes field by field against Thanos' schema, then checks the
// reverse direction: the hand-encoded reference bytes unmarshal into an equal
// message.
func TestWire_EveryMessage(t *testing.T) {
	for _, tc := range wireCases() {
		t.Run(tc.name, func(t *testing.T) {
			md := tc.msg.ProtoReflect().Descriptor()
			testutil.Equals(t, tc.fullName, md.FullName(), "message name")
			requireSchema(t, string(md.FullName()), md, tc.want)

			b, err := proto.Marshal(tc.msg)
			testutil.Ok(t, err)
			requireWire(t, string(md.FullName()), b, tc.want)

			ref := encodeFields(tc.want)
			got := tc.msg.ProtoReflect().New().Interface()
			testutil.Ok(t, proto.Unmarshal(ref, got))
			testutil.Assert(t, proto.Equal(tc.msg, got), "reference bytes decode to %v, want %v", got, tc.msg)
			// Same size: no redundant or missing bytes. (The bytes themselves may
			// be ordered differently: protobuf-go emits oneof members after the
			// other fields, gogo in field number order; decoders accept both.)
			testutil.Equals(t, len(ref), len(b), "encoded size")
		})
	}
}

// allMessages lists every message declared in our .proto files.
func allMessages() []protoreflect.MessageDescriptor {
	files := []protoreflect.FileDescriptor{
		labelpb.File_pkg_store_labelpb_types_proto,
		storepb.File_pkg_store_storepb_types_proto,
		storepb.File_pkg_store_storepb_rpc_proto,
		prompb.File_pkg_store_storepb_prompb_types_proto,
		prompb.File_pkg_store_storepb_prompb_remote_proto,
		infopb.File_pkg_store_infopb_rpc_proto,
		hintspb.File_pkg_store_hintspb_hints_proto,
		metadatapb.File_pkg_store_metadatapb_rpc_proto,
	}
	var out []protoreflect.MessageDescriptor
	var walk func(ms protoreflect.MessageDescriptors)
	walk = func(ms protoreflect.MessageDescriptors) {
		for i := 0; i < ms.Len(); i++ {
			if ms.Get(i).IsMapEntry() {
				continue // map<k, v> fields: covered by the case of the message that holds the map
			}
			out = append(out, ms.Get(i))
			walk(ms.Get(i).Messages())
		}
	}
	for _, f := range files {
		walk(f.Messages())
	}
	return out
}

// TestWire_AllMessagesAndFieldsCovered makes sure TestWire_EveryMessage has a
// case for every message, and that the cases of a message together set every
// one of its fields (so a field added to a .proto without a wire expectation
// fails here).
func TestWire_AllMessagesAndFieldsCovered(t *testing.T) {
	covered := map[protoreflect.FullName]map[string]bool{}
	for _, tc := range wireCases() {
		if covered[tc.fullName] == nil {
			covered[tc.fullName] = map[string]bool{}
		}
		for _, f := range tc.want {
			covered[tc.fullName][f.name] = true
		}
	}

	var names []protoreflect.FullName
	for _, md := range allMessages() {
		names = append(names, md.FullName())
		fields, ok := covered[md.FullName()]
		testutil.Assert(t, ok, "no wire case for %s", md.FullName())
		for i := 0; i < md.Fields().Len(); i++ {
			fd := md.Fields().Get(i)
			testutil.Assert(t, fields[string(fd.Name())], "%s.%s is never set in a wire case", md.FullName(), fd.Name())
		}
	}
	testutil.Equals(t, 63, len(names), "number of messages: %v", names)
	for n := range covered {
		testutil.Assert(t, slices.Contains(names, n), "wire case for unknown message %s", n)
	}
}

// TestWire_Reserved checks field numbers Thanos reserved stay reserved, so
// they are never reused with a different meaning.
func TestWire_Reserved(t *testing.T) {
	for _, tc := range []struct {
		msg      proto.Message
		reserved []protowire.Number
	}{
		{msg: &prompb.WriteRequest{}, reserved: []protowire.Number{2}},
		{msg: &infopb.StoreInfo{}, reserved: []protowire.Number{4}},
	} {
		md := tc.msg.ProtoReflect().Descriptor()
		t.Run(string(md.FullName()), func(t *testing.T) {
			for _, n := range tc.reserved {
				testutil.Assert(t, md.ReservedRanges().Has(n), "field %d not reserved", n)
				testutil.Assert(t, md.Fields().ByNumber(n) == nil, "field %d in use", n)
			}
		})
	}
}

// TestWire_EnumValues checks enum value names and numbers against Thanos.
func TestWire_EnumValues(t *testing.T) {
	for _, tc := range []struct {
		enum protoreflect.EnumDescriptor
		name protoreflect.FullName
		want map[string]protoreflect.EnumNumber
	}{
		{
			enum: storepb.Aggr(0).Descriptor(), name: "thanos.Aggr",
			want: map[string]protoreflect.EnumNumber{"RAW": 0, "COUNT": 1, "SUM": 2, "MIN": 3, "MAX": 4, "COUNTER": 5},
		},
		{
			enum: storepb.PartialResponseStrategy(0).Descriptor(), name: "thanos.PartialResponseStrategy",
			want: map[string]protoreflect.EnumNumber{"WARN": 0, "ABORT": 1},
		},
		{
			enum: storepb.Chunk_Encoding(0).Descriptor(), name: "thanos.Chunk.Encoding",
			want: map[string]protoreflect.EnumNumber{"XOR": 0, "HISTOGRAM": 1, "FLOAT_HISTOGRAM": 2},
		},
		{
			enum: storepb.LabelMatcher_Type(0).Descriptor(), name: "thanos.LabelMatcher.Type",
			want: map[string]protoreflect.EnumNumber{"EQ": 0, "NEQ": 1, "RE": 2, "NRE": 3},
		},
		{
			enum: prompb.MetricMetadata_MetricType(0).Descriptor(), name: "prometheus_copy.MetricMetadata.MetricType",
			want: map[string]protoreflect.EnumNumber{
				"UNKNOWN": 0, "COUNTER": 1, "GAUGE": 2, "HISTOGRAM": 3, "GAUGEHISTOGRAM": 4, "SUMMARY": 5, "INFO": 6, "STATESET": 7,
			},
		},
		{
			enum: prompb.Histogram_ResetHint(0).Descriptor(), name: "prometheus_copy.Histogram.ResetHint",
			want: map[string]protoreflect.EnumNumber{"UNKNOWN": 0, "YES": 1, "NO": 2, "GAUGE": 3},
		},
		{
			enum: prompb.LabelMatcher_Type(0).Descriptor(), name: "prometheus_copy.LabelMatcher.Type",
			want: map[string]protoreflect.EnumNumber{"EQ": 0, "NEQ": 1, "RE": 2, "NRE": 3},
		},
		{
			enum: prompb.Chunk_Encoding(0).Descriptor(), name: "prometheus_copy.Chunk.Encoding",
			want: map[string]protoreflect.EnumNumber{"UNKNOWN": 0, "XOR": 1, "HISTOGRAM": 2, "FLOAT_HISTOGRAM": 3},
		},
		{
			enum: prompb.ReadRequest_ResponseType(0).Descriptor(), name: "prometheus_copy.ReadRequest.ResponseType",
			want: map[string]protoreflect.EnumNumber{"SAMPLES": 0, "STREAMED_XOR_CHUNKS": 1},
		},
	} {
		t.Run(string(tc.name), func(t *testing.T) {
			testutil.Equals(t, tc.name, tc.enum.FullName())
			got := map[string]protoreflect.EnumNumber{}
			for i := 0; i < tc.enum.Values().Len(); i++ {
				v := tc.enum.Values().Get(i)
				got[string(v.Name())] = v.Number()
			}
			testutil.Equals(t, tc.want, got)
		})
	}
}

// TestWire_HintsTypeURLs checks the Any type URLs of hints match what Thanos
// (gogo types.MarshalAny: "type.googleapis.com/" + message name) produces and
// expects.
func TestWire_HintsTypeURLs(t *testing.T) {
	for _, tc := range []struct {
		msg  proto.Message
		want string
	}{
		{msg: &hintspb.SeriesRequestHints{}, want: "type.googleapis.com/hintspb.SeriesRequestHints"},
		{msg: &hintspb.SeriesResponseHints{}, want: "type.googleapis.com/hintspb.SeriesResponseHints"},
		{msg: &hintspb.LabelNamesRequestHints{}, want: "type.googleapis.com/hintspb.LabelNamesRequestHints"},
		{msg: &hintspb.LabelNamesResponseHints{}, want: "type.googleapis.com/hintspb.LabelNamesResponseHints"},
		{msg: &hintspb.LabelValuesRequestHints{}, want: "type.googleapis.com/hintspb.LabelValuesRequestHints"},
		{msg: &hintspb.LabelValuesResponseHints{}, want: "type.googleapis.com/hintspb.LabelValuesResponseHints"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			a, err := anypb.New(tc.msg)
			testutil.Ok(t, err)
			testutil.Equals(t, tc.want, a.GetTypeUrl())
		})
	}
}

// TestWire_UnknownFieldsPreserved feeds messages with fields from a newer
// schema (unknown numbers, of every wire type, also nested and as an unknown
// oneof member): they must decode without error, the known fields must be
// intact, and the unknown bytes must survive a re-marshal.
func TestWire_UnknownFieldsPreserved(t *testing.T) {
	unknown := func(fs ...field) []byte { return encodeFields(fs) }
	for _, tc := range []struct {
		name    string
		known   []field
		unknown []byte
		msg     proto.Message
		want    proto.Message
	}{
		{
			name:    "SeriesRequest/varint",
			known:   []field{vInt("min_time", 1, 10), vInt("max_time", 2, 20)},
			unknown: unknown(vUint("future", 17, 42)),
			msg:     &storepb.SeriesRequest{},
			want:    &storepb.SeriesRequest{MinTime: 10, MaxTime: 20},
		},
		{
			name:    "SeriesRequest/all wire types",
			known:   []field{matcherWant("matchers", 3, 0, "a", "b")},
			unknown: unknown(vDouble("f64", 1000, 1.5), vStr("s", 99, "x"), field{name: "f32", num: 5000, typ: protowire.Fixed32Type, u64: 7}),
			msg:     &storepb.SeriesRequest{},
			want:    &storepb.SeriesRequest{Matchers: []*storepb.LabelMatcher{{Name: "a", Value: "b"}}},
		},
		{
			name:    "SeriesResponse/unknown oneof member",
			unknown: unknown(vMsg("future_result", 5, vStr("x", 1, "y"))),
			msg:     &storepb.SeriesResponse{},
			want:    &storepb.SeriesResponse{},
		},
		{
			name:    "InfoResponse/unknown API info",
			known:   []field{vStr("ComponentType", 2, "store")},
			unknown: unknown(vMsg("future_info", 10, vBool("x", 1))),
			msg:     &infopb.InfoResponse{},
			want:    &infopb.InfoResponse{ComponentType: "store"},
		},
		{
			name:    "WriteRequest",
			known:   []field{vStr("tenant", 2, "t")},
			unknown: unknown(vInt("future", 5, -1)),
			msg:     &storepb.WriteRequest{},
			want:    &storepb.WriteRequest{Tenant: "t"},
		},
		{
			name:    "prompb.WriteRequest/reserved field 2",
			unknown: unknown(vStr("cortex_source", 2, "api")),
			msg:     &prompb.WriteRequest{},
			want:    &prompb.WriteRequest{},
		},
		{
			name:    "StoreInfo/deprecated send_sorted (4)",
			known:   []field{vInt("min_time", 1, 1)},
			unknown: unknown(vBool("send_sorted", 4)),
			msg:     &infopb.StoreInfo{},
			want:    &infopb.StoreInfo{MinTime: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append(encodeFields(tc.known), tc.unknown...)
			testutil.Ok(t, proto.Unmarshal(in, tc.msg))

			// Known fields decoded; the unknown ones are kept aside verbatim.
			testutil.Equals(t, string(tc.unknown), string(tc.msg.ProtoReflect().GetUnknown()), "retained unknown bytes")
			withoutUnknown := proto.Clone(tc.msg)
			withoutUnknown.ProtoReflect().SetUnknown(nil)
			testutil.Assert(t, proto.Equal(tc.want, withoutUnknown), "decoded %v, want %v", withoutUnknown, tc.want)

			out, err := proto.Marshal(tc.msg)
			testutil.Ok(t, err)
			testutil.Assert(t, bytes.Contains(out, tc.unknown), "unknown field lost on re-marshal: %x", out)
			testutil.Equals(t, len(in), len(out))
		})
	}

	t.Run("nested in Series of a SeriesResponse", func(t *testing.T) {
		series := append(encodeFields([]field{labelWant("labels", 1, "a", "b")}), unknown(vUint("future", 3, 9))...)
		in := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), series)

		var resp storepb.SeriesResponse
		testutil.Ok(t, proto.Unmarshal(in, &resp))
		testutil.Equals(t, "a", resp.GetSeries().GetLabels()[0].GetName())
		testutil.Equals(t, string(unknown(vUint("future", 3, 9))), string(resp.GetSeries().ProtoReflect().GetUnknown()))

		out, err := proto.Marshal(&resp)
		testutil.Ok(t, err)
		testutil.Equals(t, in, out)
	})
}

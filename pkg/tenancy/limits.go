package tenancy

import (
	"bytes"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// Limits are the per-tenant limits. The YAML keys and defaults are Mimir's, so a Mimir runtime file's
// overrides section reads the same here. The defaults come from the `limits:` section of the config file;
// a tenant's entry under `overrides:` in the runtime file replaces only the keys it names.
type Limits struct {
	// IngestionRate is the per-tenant token bucket's refill rate, in samples per second, across all distributors.
	IngestionRate float64 `yaml:"ingestion_rate" json:"ingestion_rate"`
	// IngestionBurstSize is the token bucket's size, in samples.
	IngestionBurstSize int `yaml:"ingestion_burst_size" json:"ingestion_burst_size"`
	// MaxGlobalSeriesPerUser is the in-memory series limit across the ingesters (0 = unlimited).
	MaxGlobalSeriesPerUser int `yaml:"max_global_series_per_user" json:"max_global_series_per_user"`
	// MaxGlobalSeriesPerMetric is the same limit for one metric name (0 = unlimited).
	MaxGlobalSeriesPerMetric int `yaml:"max_global_series_per_metric" json:"max_global_series_per_metric"`
	// MaxLabelNamesPerSeries is the most labels one series may carry, __name__ included.
	MaxLabelNamesPerSeries int `yaml:"max_label_names_per_series" json:"max_label_names_per_series"`
	// MaxLabelNameLength and MaxLabelValueLength are in bytes.
	MaxLabelNameLength  int `yaml:"max_label_name_length" json:"max_label_name_length"`
	MaxLabelValueLength int `yaml:"max_label_value_length" json:"max_label_value_length"`
	// OutOfOrderTimeWindow is how far behind a series' newest sample a sample may still be accepted (0 = none).
	OutOfOrderTimeWindow model.Duration `yaml:"out_of_order_time_window" json:"out_of_order_time_window"`
	// CreationGracePeriod is how far in the future a sample's timestamp may be.
	CreationGracePeriod model.Duration `yaml:"creation_grace_period" json:"creation_grace_period"`
	// CompactorBlocksRetentionPeriod deletes blocks older than this (0 = keep forever).
	CompactorBlocksRetentionPeriod model.Duration `yaml:"compactor_blocks_retention_period" json:"compactor_blocks_retention_period"`
	// MaxCacheFreshness: query results newer than now minus this are not cached.
	MaxCacheFreshness model.Duration `yaml:"max_cache_freshness" json:"max_cache_freshness"`
	// IngestionTenantShardSize is how many ingesters one tenant is sharded over (0 = all).
	IngestionTenantShardSize int `yaml:"ingestion_tenant_shard_size" json:"ingestion_tenant_shard_size"`
	// MaxMetadataLength is the longest metric family name and unit of remote-written metric metadata, in bytes;
	// longer help texts are truncated to it.
	MaxMetadataLength int `yaml:"max_metadata_length" json:"max_metadata_length"`
	// MaxGlobalMetadataPerUser is how many metric metadata entries the ingesters keep for a tenant (0 = unlimited).
	MaxGlobalMetadataPerUser int `yaml:"max_global_metadata_per_user" json:"max_global_metadata_per_user"`
	// MaxGlobalMetadataPerMetric is how many distinct metadata entries one metric family may have (0 = unlimited).
	MaxGlobalMetadataPerMetric int `yaml:"max_global_metadata_per_metric" json:"max_global_metadata_per_metric"`
	// AcceptHASamples turns on HA-pair deduplication for the tenant (the distributor's HA tracker): of the
	// replicas sending a cluster's series (HAClusterLabel, HAReplicaLabel), only the elected one's are stored,
	// without the replica label.
	AcceptHASamples bool `yaml:"accept_ha_samples" json:"accept_ha_samples"`
	// HAClusterLabel and HAReplicaLabel name the labels that identify an HA pair's cluster and replica.
	HAClusterLabel string `yaml:"ha_cluster_label" json:"ha_cluster_label"`
	HAReplicaLabel string `yaml:"ha_replica_label" json:"ha_replica_label"`
	// HAMaxClusters is how many HA clusters the tracker follows for the tenant; writes for more are refused
	// (0 = no limit).
	HAMaxClusters int `yaml:"ha_max_clusters" json:"ha_max_clusters"`

	// MaxQueryLength is the longest time range one query may cover (0 = no limit).
	MaxQueryLength model.Duration `yaml:"max_query_length" json:"max_query_length"`
	// MaxFetchedSeriesPerQuery is how many distinct series one query may fetch from the stores (0 = no limit).
	MaxFetchedSeriesPerQuery int `yaml:"max_fetched_series_per_query" json:"max_fetched_series_per_query"`
	// MaxFetchedChunkBytesPerQuery is how many chunk bytes one query may fetch from the stores (0 = no limit).
	MaxFetchedChunkBytesPerQuery int `yaml:"max_fetched_chunk_bytes_per_query" json:"max_fetched_chunk_bytes_per_query"`
	// MaxSamples is how many samples one query may hold in memory at once (PromQL's max samples; 0 = the
	// querier's --querier.max-samples).
	MaxSamples int `yaml:"max_samples" json:"max_samples"`
	// MaxQueryExpressionSizeBytes is the longest query expression accepted, in bytes (0 = no limit; the
	// querier's expression depth and token limits apply regardless).
	MaxQueryExpressionSizeBytes int `yaml:"max_query_expression_size_bytes" json:"max_query_expression_size_bytes"`
	// MaxQueryParallelism is how many sub-queries (split by the query-frontend) of one request run at once
	// (0 counts as 1).
	MaxQueryParallelism int `yaml:"max_query_parallelism" json:"max_query_parallelism"`
	// QueryReplicaLabels replace the querier's --query.replica-label for this tenant.
	QueryReplicaLabels []string `yaml:"query_replica_labels" json:"query_replica_labels"`
	// MaxTenants is how many tenants one federated read ("a|b") may name (Mimir's tenant_federation.max_tenants;
	// 0 = no limit). A request is refused when it names more than the smallest limit of its tenants.
	MaxTenants int `yaml:"max_tenants" json:"max_tenants"`

	// LimitsWarningRatio is the usage of a limit (max_global_series_per_user, max_global_series_per_metric,
	// ingestion_rate) from which successful writes are answered with X-Strata-Limit-Warning and the usage is
	// exported as strata_tenant_limit_usage_ratio (0 = no warnings).
	LimitsWarningRatio float64 `yaml:"limits_warning_ratio" json:"limits_warning_ratio"`
	// OTLP ingestion (POST /otlp/v1/metrics; Mimir's keys and defaults, translated by Prometheus's otlptranslator).
	// PromoteOTelResourceAttributes are the resource attributes copied onto every series as labels (all of them
	// are in target_info regardless).
	PromoteOTelResourceAttributes []string `yaml:"promote_otel_resource_attributes" json:"promote_otel_resource_attributes"`
	// OTelMetricSuffixesEnabled adds the unit and type suffixes to metric names (_seconds, _total, …), as
	// Prometheus's receiver does by default; Mimir's default is off.
	OTelMetricSuffixesEnabled bool `yaml:"otel_metric_suffixes_enabled" json:"otel_metric_suffixes_enabled"`
	// OTelKeepIdentifyingResourceAttributes keeps service.name, service.namespace and service.instance.id in
	// target_info besides turning them into job and instance.
	OTelKeepIdentifyingResourceAttributes bool `yaml:"otel_keep_identifying_resource_attributes" json:"otel_keep_identifying_resource_attributes"`
	// OTelConvertHistogramsToNHCB stores explicit-bucket histograms as native histograms with custom buckets
	// instead of classic _bucket/_sum/_count series.
	OTelConvertHistogramsToNHCB bool `yaml:"otel_convert_histograms_to_nhcb" json:"otel_convert_histograms_to_nhcb"`
	// OTelPromoteScopeMetadata adds otel_scope_name, otel_scope_version, … labels.
	OTelPromoteScopeMetadata bool `yaml:"otel_promote_scope_metadata" json:"otel_promote_scope_metadata"`
	// OTelNativeDeltaIngestion stores delta sums and histograms as they are (type unknown), Mimir's experiment.
	OTelNativeDeltaIngestion bool `yaml:"otel_native_delta_ingestion" json:"otel_native_delta_ingestion"`
	// OTelConvertDeltaToCumulative turns delta sums and histograms into cumulative ones in the distributor's
	// memory (Prometheus's otlp-deltatocumulative; a stream must always reach the same distributor). With neither
	// this nor otel_native_delta_ingestion, a request with delta metrics is refused (400), as Mimir does.
	OTelConvertDeltaToCumulative bool `yaml:"otel_convert_delta_to_cumulative" json:"otel_convert_delta_to_cumulative"`
	// OTelLabelNameUnderscoreSanitization prefixes attribute names that start with one "_" with "key".
	OTelLabelNameUnderscoreSanitization bool `yaml:"otel_label_name_underscore_sanitization" json:"otel_label_name_underscore_sanitization"`
	// OTelLabelNamePreserveMultipleUnderscores keeps runs of "_" in label names made from attribute names.
	OTelLabelNamePreserveMultipleUnderscores bool `yaml:"otel_label_name_preserve_multiple_underscores" json:"otel_label_name_preserve_multiple_underscores"`
}

// DefaultLimits returns Mimir's defaults (DESIGN.md §9).
func DefaultLimits() Limits {
	return Limits{
		IngestionRate:                  10000,
		IngestionBurstSize:             200000,
		MaxGlobalSeriesPerUser:         150000,
		MaxGlobalSeriesPerMetric:       0,
		MaxLabelNamesPerSeries:         30,
		MaxLabelNameLength:             1024,
		MaxLabelValueLength:            2048,
		OutOfOrderTimeWindow:           0,
		CreationGracePeriod:            model.Duration(10 * time.Minute),
		CompactorBlocksRetentionPeriod: 0,
		MaxCacheFreshness:              model.Duration(10 * time.Minute),
		IngestionTenantShardSize:       0,
		MaxMetadataLength:              1024,
		MaxGlobalMetadataPerUser:       0,
		MaxGlobalMetadataPerMetric:     0,
		AcceptHASamples:                false,
		HAClusterLabel:                 "cluster",
		HAReplicaLabel:                 "__replica__",
		HAMaxClusters:                  100,
		MaxQueryLength:                 0,
		MaxFetchedSeriesPerQuery:       0,
		MaxFetchedChunkBytesPerQuery:   0,
		MaxSamples:                     0,
		MaxQueryExpressionSizeBytes:    0,
		MaxQueryParallelism:            14,
		LimitsWarningRatio:             0.8,

		OTelLabelNameUnderscoreSanitization:      true,
		OTelLabelNamePreserveMultipleUnderscores: true,
	}
}

// Validate rejects limits that can never be right.
func (l Limits) Validate() error {
	switch {
	case l.IngestionRate < 0:
		return errors.Newf("ingestion_rate must not be negative, got %v", l.IngestionRate)
	case l.IngestionBurstSize < 0:
		return errors.Newf("ingestion_burst_size must not be negative, got %d", l.IngestionBurstSize)
	case l.MaxGlobalSeriesPerUser < 0, l.MaxGlobalSeriesPerMetric < 0:
		return errors.New("max_global_series_per_user and max_global_series_per_metric must not be negative")
	case l.MaxLabelNamesPerSeries < 0, l.MaxLabelNameLength < 0, l.MaxLabelValueLength < 0:
		return errors.New("max_label_names_per_series, max_label_name_length and max_label_value_length must not be negative")
	case l.OutOfOrderTimeWindow < 0, l.CreationGracePeriod < 0, l.CompactorBlocksRetentionPeriod < 0, l.MaxCacheFreshness < 0:
		return errors.New("durations in limits must not be negative")
	case l.MaxQueryLength < 0, l.MaxFetchedSeriesPerQuery < 0, l.MaxFetchedChunkBytesPerQuery < 0, l.MaxSamples < 0, l.MaxQueryExpressionSizeBytes < 0:
		return errors.New("max_query_length, max_fetched_series_per_query, max_fetched_chunk_bytes_per_query, max_samples and max_query_expression_size_bytes must not be negative")
	case l.MaxMetadataLength < 0, l.MaxGlobalMetadataPerUser < 0, l.MaxGlobalMetadataPerMetric < 0:
		return errors.New("max_metadata_length, max_global_metadata_per_user and max_global_metadata_per_metric must not be negative")
	case l.MaxQueryParallelism < 0:
		return errors.Newf("max_query_parallelism must not be negative, got %d", l.MaxQueryParallelism)
	case l.MaxTenants < 0:
		return errors.Newf("max_tenants must not be negative, got %d", l.MaxTenants)
	case l.LimitsWarningRatio < 0 || l.LimitsWarningRatio > 1:
		return errors.Newf("limits_warning_ratio must be between 0 (no warnings) and 1, got %v", l.LimitsWarningRatio)
	case l.IngestionTenantShardSize < 0:
		return errors.Newf("ingestion_tenant_shard_size must not be negative, got %d", l.IngestionTenantShardSize)
	case l.HAMaxClusters < 0:
		return errors.Newf("ha_max_clusters must not be negative, got %d", l.HAMaxClusters)
	case l.AcceptHASamples && (l.HAClusterLabel == "" || l.HAReplicaLabel == "" || l.HAClusterLabel == l.HAReplicaLabel):
		return errors.Newf("with accept_ha_samples, ha_cluster_label and ha_replica_label must be set and differ, got %q and %q", l.HAClusterLabel, l.HAReplicaLabel)
	case l.OTelNativeDeltaIngestion && l.OTelConvertDeltaToCumulative:
		return errors.New("otel_native_delta_ingestion and otel_convert_delta_to_cumulative cannot both be enabled")
	}
	return nil
}

// RuntimeOverrides is the content of the runtime file: per-tenant limits, each already merged over the defaults.
type RuntimeOverrides struct {
	Overrides map[string]*Limits `yaml:"overrides" json:"overrides"`
}

// LoadRuntimeOverrides parses a runtime file. Each tenant's entry starts from defaults, so it names only the keys
// it changes. Unknown keys, invalid tenant IDs and invalid limits are errors: the caller keeps the last good file.
func LoadRuntimeOverrides(data []byte, defaults Limits) (*RuntimeOverrides, error) {
	var raw struct {
		Overrides map[string]yaml.Node `yaml:"overrides" json:"overrides"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, errEOF) {
		return nil, errors.Wrap(err, "parse runtime config")
	}
	out := &RuntimeOverrides{Overrides: make(map[string]*Limits, len(raw.Overrides))}
	for tenant, node := range raw.Overrides {
		if err := ValidateTenantID(tenant); err != nil {
			return nil, errors.Wrapf(err, "overrides for tenant %s", describe(tenant))
		}
		l := defaults
		if err := decodeStrict(&node, &l); err != nil {
			return nil, errors.Wrapf(err, "overrides for tenant %q", tenant)
		}
		if err := l.Validate(); err != nil {
			return nil, errors.Wrapf(err, "overrides for tenant %q", tenant)
		}
		out.Overrides[tenant] = &l
	}
	return out, nil
}

// decodeStrict decodes a node into v, refusing keys v does not have (yaml.Node.Decode alone would ignore them).
func decodeStrict(node *yaml.Node, v any) error {
	b, err := yaml.Marshal(node)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, errEOF) {
		return err
	}
	return nil
}

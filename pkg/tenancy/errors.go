package tenancy

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorID is a Mimir error id; its message carries it as "(err-mimir-<id>)" so users can look it up in
// Mimir's runbooks, which describe the same limits.
type ErrorID string

const (
	IDTenantMaxIngestionRate   ErrorID = "tenant-max-ingestion-rate"
	IDMaxSeriesPerUser         ErrorID = "max-series-per-user"
	IDMaxSeriesPerMetric       ErrorID = "max-series-per-metric"
	IDMaxLabelNamesPerSeries   ErrorID = "max-label-names-per-series"
	IDLabelNameTooLong         ErrorID = "label-name-too-long"
	IDLabelValueTooLong        ErrorID = "label-value-too-long"
	IDLabelInvalid             ErrorID = "label-invalid"
	IDMissingMetricName        ErrorID = "missing-metric-name"
	IDDuplicateLabelNames      ErrorID = "duplicate-label-names"
	IDLabelsNotSorted          ErrorID = "labels-not-sorted"
	IDTooFarInFuture           ErrorID = "too-far-in-future"
	IDSampleOutOfOrder         ErrorID = "sample-out-of-order"
	IDSampleTimestampTooOld    ErrorID = "sample-timestamp-too-old"
	IDSampleDuplicateTimestamp ErrorID = "sample-duplicate-timestamp"
	IDMaxQueryLength           ErrorID = "max-query-length"
	IDMaxSeriesPerQuery        ErrorID = "max-series-per-query"
	IDMaxChunkBytesPerQuery    ErrorID = "max-chunks-bytes-per-query"
	IDMaxQueryExpressionSize   ErrorID = "max-query-expression-size-bytes"
	IDMaxSamplesPerQuery       ErrorID = "max-samples-per-query"
	IDMetadataMissingName      ErrorID = "metadata-missing-metric-name"
	IDMetadataNameTooLong      ErrorID = "metric-name-too-long"
	IDMetadataUnitTooLong      ErrorID = "unit-too-long"
	IDMaxMetadataPerUser       ErrorID = "max-metadata-per-user"
	IDMaxMetadataPerMetric     ErrorID = "max-metadata-per-metric"
)

// Message formats a message with its id: "<msg> (err-mimir-<id>)".
func (id ErrorID) Message(msg string) string {
	return fmt.Sprintf("%s (err-mimir-%s)", msg, id)
}

// MessageWithLimit formats a message for a per-tenant limit, naming the config keys that raise it:
// "<msg> (err-mimir-<id>). To adjust the related per-tenant limit, configure <key>, or contact your service
// administrator." Several keys read "configure a and b" (Mimir's wording, with keys in place of flags).
func (id ErrorID) MessageWithLimit(msg string, keys ...string) string {
	plural := ""
	if len(keys) > 1 {
		plural = "s"
	}
	return fmt.Sprintf("%s. To adjust the related per-tenant limit%s, configure %s, or contact your service administrator.",
		id.Message(msg), plural, strings.Join(keys, " and "))
}

// Error is a rejection of (part of) a request that the client caused: it carries its id and the HTTP status
// it is answered with, so the edge never has to guess a code from a message.
type Error struct {
	ID     ErrorID
	Status int // HTTP status
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// GRPCStatus lets status.FromError find the code for this error when it crosses gRPC.
func (e *Error) GRPCStatus() *status.Status {
	code := codes.InvalidArgument
	switch e.Status {
	case http.StatusTooManyRequests:
		code = codes.ResourceExhausted
	case http.StatusUnauthorized:
		code = codes.Unauthenticated
	}
	return status.New(code, e.Msg)
}

func limitErr(id ErrorID, httpStatus int, msg string, keys ...string) *Error {
	return &Error{ID: id, Status: httpStatus, Msg: id.MessageWithLimit(msg, keys...)}
}

func plainErr(id ErrorID, msg string) *Error {
	return &Error{ID: id, Status: http.StatusBadRequest, Msg: id.Message(msg)}
}

// NewIngestionRateLimitedError is the 429 for a tenant over its token bucket. currentRate is the rate the
// tenant is sending at, in items/s across all distributors (estimated by the one refusing), or negative when
// unknown: the number to raise ingestion_rate above.
func NewIngestionRateLimitedError(rate float64, burst int, currentRate float64) *Error {
	msg := fmt.Sprintf("the request has been rejected because the tenant exceeded the ingestion rate limit, set to %v items/s with a maximum allowed burst of %d. This limit is applied on the total number of samples, exemplars and metadata received across all distributors", rate, burst)
	if currentRate >= 0 {
		msg += fmt.Sprintf("; the tenant is currently sending about %s items/s", formatRate(currentRate))
	}
	return limitErr(IDTenantMaxIngestionRate, http.StatusTooManyRequests, msg, "ingestion_rate", "ingestion_burst_size")
}

// formatRate formats a rate with 3 significant digits, without an exponent below a billion.
func formatRate(r float64) string {
	if r >= 100 && r < 1e9 {
		return strconv.FormatFloat(math.Round(r), 'f', -1, 64)
	}
	return strconv.FormatFloat(r, 'g', 3, 64)
}

// NewMaxSeriesPerUserError is the 400 for a tenant at its series limit. metric names the metric that
// contributes most new series in the rejected request, top the metric with the most series of the tenant (in
// the ingester that refused), so the user knows where to look; either may be empty.
func NewMaxSeriesPerUserError(limit int, metric, top string) *Error {
	msg := fmt.Sprintf("per-user series limit of %d exceeded", limit)
	if metric != "" {
		msg += fmt.Sprintf(", metric with the most new series in this request: %s", metric)
	}
	if top != "" {
		msg += fmt.Sprintf(", metric with the most series: %s", top)
	}
	return limitErr(IDMaxSeriesPerUser, http.StatusBadRequest, msg, "max_global_series_per_user")
}

// NewMaxSeriesPerMetricError is the 400 for a metric at its series limit.
func NewMaxSeriesPerMetricError(limit int, metric string) *Error {
	return limitErr(IDMaxSeriesPerMetric, http.StatusBadRequest,
		fmt.Sprintf("per-metric series limit of %d exceeded for metric %s", limit, metric), "max_global_series_per_metric")
}

// NewMetadataMissingMetricNameError is the 400 for remote-written metric metadata without a metric family name.
func NewMetadataMissingMetricNameError() *Error {
	return plainErr(IDMetadataMissingName, "received a metric metadata with no metric name")
}

// NewMetadataMetricNameInvalidError is the 400 for metric metadata whose metric family name is not a valid
// metric name.
func NewMetadataMetricNameInvalidError(name string) *Error {
	return plainErr(IDLabelInvalid, fmt.Sprintf("received a metric metadata with an invalid metric name: '%.200s'", name))
}

// NewMetadataMetricNameTooLongError is the 400 for metric metadata whose metric family name is over
// max_metadata_length.
func NewMetadataMetricNameTooLongError(name string, limit int) *Error {
	return limitErr(IDMetadataNameTooLong, http.StatusBadRequest,
		fmt.Sprintf("received a metric metadata whose metric name length of %d exceeds the limit of %d, metric name: '%.200s' (truncated)", len(name), limit, name),
		"max_metadata_length")
}

// NewMetadataUnitTooLongError is the 400 for metric metadata whose unit is over max_metadata_length.
func NewMetadataUnitTooLongError(name, unit string, limit int) *Error {
	return limitErr(IDMetadataUnitTooLong, http.StatusBadRequest,
		fmt.Sprintf("received a metric metadata whose unit name length of %d exceeds the limit of %d, unit: '%.200s' (truncated) metric name: '%.200s'", len(unit), limit, unit, name),
		"max_metadata_length")
}

// NewMaxMetadataPerUserError is the error for a tenant at its metadata limit in an ingester.
func NewMaxMetadataPerUserError(limit int) *Error {
	return limitErr(IDMaxMetadataPerUser, http.StatusBadRequest,
		fmt.Sprintf("per-user metric metadata limit of %d exceeded", limit), "max_global_metadata_per_user")
}

// NewMaxMetadataPerMetricError is the error for a metric family at its metadata limit in an ingester.
func NewMaxMetadataPerMetricError(limit int, metric string) *Error {
	return limitErr(IDMaxMetadataPerMetric, http.StatusBadRequest,
		fmt.Sprintf("per-metric metadata limit of %d exceeded for metric %.200s", limit, metric), "max_global_metadata_per_metric")
}

// NewMaxLabelNamesPerSeriesError is the 400 for a series with too many labels.
func NewMaxLabelNamesPerSeriesError(actual, limit int, series string) *Error {
	return limitErr(IDMaxLabelNamesPerSeries, http.StatusBadRequest,
		fmt.Sprintf("received a series whose number of labels exceeds the limit (actual: %d, limit: %d) series: '%.200s'", actual, limit, series),
		"max_label_names_per_series")
}

// NewLabelNameTooLongError is the 400 for a label name over max_label_name_length (limit).
func NewLabelNameTooLongError(name, series string, limit int) *Error {
	return limitErr(IDLabelNameTooLong, http.StatusBadRequest,
		fmt.Sprintf("received a series whose label name length of %d exceeds the limit of %d, label: '%.200s' series: '%.200s'", len(name), limit, name, series),
		"max_label_name_length")
}

// NewLabelValueTooLongError is the 400 for a label value over max_label_value_length.
func NewLabelValueTooLongError(name, value, series string, limit int) *Error {
	return limitErr(IDLabelValueTooLong, http.StatusBadRequest,
		fmt.Sprintf("received a series whose label value length of %d exceeds the limit of %d, label: '%s', value: '%.200s' (truncated) series: '%.200s'", len(value), limit, name, value, series),
		"max_label_value_length")
}

// NewTooFarInFutureError is the 400 for a sample newer than now + creation_grace_period.
func NewTooFarInFutureError(timestampMs int64, series string) *Error {
	return limitErr(IDTooFarInFuture, http.StatusBadRequest,
		fmt.Sprintf("received a sample whose timestamp is too far in the future, timestamp: %d series: '%.200s'", timestampMs, series),
		"creation_grace_period")
}

// NewSampleOutOfOrderError is the 400 for a sample behind its series' newest sample (and the OOO window).
func NewSampleOutOfOrderError(timestampMs int64, series string) *Error {
	return limitErr(IDSampleOutOfOrder, http.StatusBadRequest,
		fmt.Sprintf("the sample has been rejected because another sample with a more recent timestamp has already been ingested and out-of-order samples are not allowed, timestamp: %d series: '%.200s'", timestampMs, series),
		"out_of_order_time_window")
}

// NewSampleTimestampTooOldError is the 400 for a sample older than the TSDB accepts.
func NewSampleTimestampTooOldError(timestampMs int64, series string) *Error {
	return plainErr(IDSampleTimestampTooOld,
		fmt.Sprintf("the sample has been rejected because its timestamp is too old, timestamp: %d series: '%.200s'", timestampMs, series))
}

// NewSampleDuplicateTimestampError is the 400 for a sample at an existing timestamp with another value.
func NewSampleDuplicateTimestampError(timestampMs int64, series string) *Error {
	return plainErr(IDSampleDuplicateTimestamp,
		fmt.Sprintf("the sample has been rejected because another sample with the same timestamp, but a different value, has already been ingested, timestamp: %d series: '%.200s'", timestampMs, series))
}

// NewLabelInvalidError is the 400 for a label name that is not valid.
func NewLabelInvalidError(name, series string) *Error {
	return plainErr(IDLabelInvalid, fmt.Sprintf("received a series with an invalid label: '%.200s' series: '%.200s'", name, series))
}

// NewMissingMetricNameError is the 400 for a series without __name__.
func NewMissingMetricNameError(series string) *Error {
	return plainErr(IDMissingMetricName, fmt.Sprintf("received series has no metric name, series: '%.200s'", series))
}

// NewDuplicateLabelNamesError is the 400 for a series naming one label twice.
func NewDuplicateLabelNamesError(name, series string) *Error {
	return plainErr(IDDuplicateLabelNames, fmt.Sprintf("received a series with duplicate label name, label: '%.200s' series: '%.200s'", name, series))
}

// NewLabelsNotSortedError is the 400 for a series whose labels are not sorted by name.
func NewLabelsNotSortedError(name, series string) *Error {
	return plainErr(IDLabelsNotSorted, fmt.Sprintf("received a series where the label names are not alphabetically sorted, label: '%.200s' series: '%.200s'", name, series))
}

// NewMaxQueryLengthError is the 400 for a query whose time range is longer than the tenant may query at once.
func NewMaxQueryLengthError(length, limit time.Duration) *Error {
	return limitErr(IDMaxQueryLength, http.StatusBadRequest,
		fmt.Sprintf("the query time range exceeds the limit (query length: %s, limit: %s)", model.Duration(length), model.Duration(limit)), "max_query_length")
}

// NewMaxSeriesPerQueryError is the 422 for a query that fetches more series than the tenant may.
func NewMaxSeriesPerQueryError(limit int) *Error {
	return limitErr(IDMaxSeriesPerQuery, http.StatusUnprocessableEntity,
		fmt.Sprintf("the query exceeded the maximum number of series (limit: %d series); select fewer series (add label matchers) or a shorter time range", limit), "max_fetched_series_per_query")
}

// NewMaxChunkBytesPerQueryError is the 422 for a query that fetches more chunk bytes than the tenant may.
func NewMaxChunkBytesPerQueryError(limit int) *Error {
	return limitErr(IDMaxChunkBytesPerQuery, http.StatusUnprocessableEntity,
		fmt.Sprintf("the query exceeded the aggregated chunks size limit (limit: %d bytes); select fewer series (add label matchers) or a shorter time range", limit), "max_fetched_chunk_bytes_per_query")
}

// NewMaxQueryExpressionSizeBytesError is the 400 for a query expression longer than the tenant may send.
func NewMaxQueryExpressionSizeBytesError(size, limit int) *Error {
	return limitErr(IDMaxQueryExpressionSize, http.StatusBadRequest,
		fmt.Sprintf("the raw query size in bytes exceeds the limit (query size: %d, limit: %d)", size, limit), "max_query_expression_size_bytes")
}

// NewMaxSamplesPerQueryError is the 422 for a query that would hold more samples in memory at once than the
// tenant may (PromQL's "query processing would load too many samples into memory").
func NewMaxSamplesPerQueryError(limit int) *Error {
	return limitErr(IDMaxSamplesPerQuery, http.StatusUnprocessableEntity,
		fmt.Sprintf("the query exceeded the maximum number of samples it may load into memory at once (limit: %d samples); select fewer series, a shorter time range or a larger step", limit),
		"max_samples (default: the querier's --query.max-samples)")
}

package tenancy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/efficientgo/core/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		err    *Error
		status int
		code   codes.Code
		msg    string
	}{
		{
			err: NewIngestionRateLimitedError(10000, 200000, -1), status: 429, code: codes.ResourceExhausted,
			msg: "the request has been rejected because the tenant exceeded the ingestion rate limit, set to 10000 items/s with a maximum allowed burst of 200000. This limit is applied on the total number of samples, exemplars and metadata received across all distributors (err-mimir-tenant-max-ingestion-rate). To adjust the related per-tenant limits, configure ingestion_rate and ingestion_burst_size, or contact your service administrator.",
		},
		{
			err: NewIngestionRateLimitedError(10000, 200000, 12345.6), status: 429, code: codes.ResourceExhausted,
			msg: "the request has been rejected because the tenant exceeded the ingestion rate limit, set to 10000 items/s with a maximum allowed burst of 200000. This limit is applied on the total number of samples, exemplars and metadata received across all distributors; the tenant is currently sending about 12346 items/s (err-mimir-tenant-max-ingestion-rate). To adjust the related per-tenant limits, configure ingestion_rate and ingestion_burst_size, or contact your service administrator.",
		},
		{
			err: NewMaxSeriesPerUserError(150000, "http_requests_total", "up"), status: 400, code: codes.InvalidArgument,
			msg: "per-user series limit of 150000 exceeded, metric with the most new series in this request: http_requests_total, metric with the most series: up (err-mimir-max-series-per-user). To adjust the related per-tenant limit, configure max_global_series_per_user, or contact your service administrator.",
		},
		{
			err: NewMaxSeriesPerUserError(150000, "http_requests_total", ""), status: 400, code: codes.InvalidArgument,
			msg: "per-user series limit of 150000 exceeded, metric with the most new series in this request: http_requests_total (err-mimir-max-series-per-user). To adjust the related per-tenant limit, configure max_global_series_per_user, or contact your service administrator.",
		},
		{
			err: NewMaxSeriesPerMetricError(10, "up"), status: 400, code: codes.InvalidArgument,
			msg: "per-metric series limit of 10 exceeded for metric up (err-mimir-max-series-per-metric). To adjust the related per-tenant limit, configure max_global_series_per_metric, or contact your service administrator.",
		},
		{
			err: NewMaxLabelNamesPerSeriesError(31, 30, `up{a="1"}`), status: 400, code: codes.InvalidArgument,
			msg: `received a series whose number of labels exceeds the limit (actual: 31, limit: 30) series: 'up{a="1"}' (err-mimir-max-label-names-per-series). To adjust the related per-tenant limit, configure max_label_names_per_series, or contact your service administrator.`,
		},
		{
			err: NewLabelNameTooLongError("aaaa", `up{aaaa="1"}`, 3), status: 400, code: codes.InvalidArgument,
			msg: `received a series whose label name length of 4 exceeds the limit of 3, label: 'aaaa' series: 'up{aaaa="1"}' (err-mimir-label-name-too-long). To adjust the related per-tenant limit, configure max_label_name_length, or contact your service administrator.`,
		},
		{
			err: NewLabelValueTooLongError("a", "xyz", `up{a="xyz"}`, 2), status: 400, code: codes.InvalidArgument,
			msg: `received a series whose label value length of 3 exceeds the limit of 2, label: 'a', value: 'xyz' (truncated) series: 'up{a="xyz"}' (err-mimir-label-value-too-long). To adjust the related per-tenant limit, configure max_label_value_length, or contact your service administrator.`,
		},
		{
			err: NewSampleOutOfOrderError(1000, "up"), status: 400, code: codes.InvalidArgument,
			msg: "the sample has been rejected because another sample with a more recent timestamp has already been ingested and out-of-order samples are not allowed, timestamp: 1000 series: 'up' (err-mimir-sample-out-of-order). To adjust the related per-tenant limit, configure out_of_order_time_window, or contact your service administrator.",
		},
		{
			err: NewSampleTimestampTooOldError(5, "up"), status: 400, code: codes.InvalidArgument,
			msg: "the sample has been rejected because its timestamp is too old, timestamp: 5 series: 'up' (err-mimir-sample-timestamp-too-old)",
		},
		{
			err: NewSampleDuplicateTimestampError(5, "up"), status: 400, code: codes.InvalidArgument,
			msg: "the sample has been rejected because another sample with the same timestamp, but a different value, has already been ingested, timestamp: 5 series: 'up' (err-mimir-sample-duplicate-timestamp)",
		},
		{
			err: NewTooFarInFutureError(99, "up"), status: 400, code: codes.InvalidArgument,
			msg: "received a sample whose timestamp is too far in the future, timestamp: 99 series: 'up' (err-mimir-too-far-in-future). To adjust the related per-tenant limit, configure creation_grace_period, or contact your service administrator.",
		},
		{
			err: NewMissingMetricNameError(`{a="1"}`), status: 400, code: codes.InvalidArgument,
			msg: `received series has no metric name, series: '{a="1"}' (err-mimir-missing-metric-name)`,
		},
	} {
		t.Run(string(tc.err.ID)+"/"+tc.msg[:20], func(t *testing.T) {
			testutil.Equals(t, tc.msg, tc.err.Error())
			testutil.Equals(t, tc.status, tc.err.Status)
			st, ok := status.FromError(tc.err)
			testutil.Assert(t, ok)
			testutil.Equals(t, tc.code, st.Code())
			testutil.Equals(t, tc.msg, st.Message())
		})
	}
	testutil.Equals(t, http.StatusBadRequest, NewLabelInvalidError("1a", "up").Status)
}

// TestLimitErrorsSayWhatToFix: each limit's error names the limit's config key, the limit's value, and the
// metric or label it was reached for.
func TestLimitErrorsSayWhatToFix(t *testing.T) {
	for _, tc := range []struct {
		limit string
		err   *Error
		want  []string
	}{
		{limit: "ingestion_rate", err: NewIngestionRateLimitedError(250, 500, 912), want: []string{"configure ingestion_rate and ingestion_burst_size", "set to 250 items/s", "burst of 500", "currently sending about 912 items/s"}},
		{limit: "max_global_series_per_user", err: NewMaxSeriesPerUserError(100, "new_metric", "big_metric"), want: []string{"configure max_global_series_per_user", "limit of 100", "new_metric", "big_metric"}},
		{limit: "max_global_series_per_metric", err: NewMaxSeriesPerMetricError(7, "big_metric"), want: []string{"configure max_global_series_per_metric", "limit of 7", "for metric big_metric"}},
		{limit: "max_label_names_per_series", err: NewMaxLabelNamesPerSeriesError(31, 30, `m{a="1"}`), want: []string{"configure max_label_names_per_series", "limit: 30", "m{"}},
		{limit: "max_label_name_length", err: NewLabelNameTooLongError("long_label_name", `m{long_label_name="1"}`, 5), want: []string{"configure max_label_name_length", "limit of 5", "label: 'long_label_name'", "series: 'm{"}},
		{limit: "max_label_value_length", err: NewLabelValueTooLongError("path", "/a/long/value", `m{path="/a/long/value"}`, 4), want: []string{"configure max_label_value_length", "limit of 4", "label: 'path'", "series: 'm{"}},
	} {
		t.Run(tc.limit, func(t *testing.T) {
			for _, w := range tc.want {
				testutil.Assert(t, strings.Contains(tc.err.Msg, w), "%q not in %q", w, tc.err.Msg)
			}
		})
	}
}

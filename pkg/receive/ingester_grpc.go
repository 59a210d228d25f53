package receive

import (
	"context"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log/level"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/storage"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// ReasonLabelValueInvalid: a label value (or name) of a series forwarded over gRPC is not valid UTF-8 (Mimir's
// label_value_invalid). The HTTP decoders refuse such requests whole; the gRPC codec does not look.
const ReasonLabelValueInvalid = "label_value_invalid"

// idLabelValueInvalid is Mimir's error id for a label value that is not valid UTF-8.
const idLabelValueInvalid tenancy.ErrorID = "label-value-invalid"

// minSampleTimeMs is the oldest sample time the ingester appends; older samples are refused as out of bounds
// (sample_too_old). Prometheus's head takes as the oldest time it accepts its newest sample minus half a block
// range: a first sample within that distance of math.MinInt64 made it overflow, and the head then refused every
// later sample of the tenant as too old. Half of math.MinInt64 is millions of years before any real sample.
const minSampleTimeMs = math.MinInt64 / 2

// checkNotAncient returns storage.ErrOutOfBounds for a sample older than minSampleTimeMs.
func checkNotAncient(tMs int64) error {
	if tMs < minSampleTimeMs {
		return storage.ErrOutOfBounds
	}
	return nil
}

// remoteWriteTenant returns the tenant of a forwarded write: the request's, or the one gRPC metadata names (the
// edge validated it, see tenancy.Config.UnaryServerInterceptor); when both name one they must agree. Without any
// it is Unauthenticated ("no org id", as Mimir answers), and InvalidArgument when one is invalid or they disagree.
func remoteWriteTenant(ctx context.Context, tenant string, tenantData bool) (string, error) {
	fromMD, ok := tenancy.TenantsFromContext(ctx)
	if !ok {
		// RemoteWrite is exempt from the interceptor's check: metadata naming a tenant that did not pass it is
		// invalid, not absent.
		if raw := rawGRPCTenant(ctx); raw != "" {
			if _, err := tenancy.ParseTenantID(raw); err != nil {
				return "", status.Errorf(codes.InvalidArgument, "tenant in gRPC metadata: %v", err)
			}
		}
	}
	switch {
	case ok && tenant == "" && len(fromMD) == 1:
		tenant = fromMD[0]
	case ok && (len(fromMD) != 1 || fromMD[0] != tenant):
		return "", status.Errorf(codes.InvalidArgument, "request tenant %q does not match the tenant in metadata %v", tenant, fromMD)
	}
	if tenant == "" {
		return "", status.Error(codes.Unauthenticated, tenancy.ErrNoTenant.Error())
	}
	if err := tenancy.ValidateTenantID(tenant); err != nil {
		return "", status.Error(codes.InvalidArgument, err.Error())
	}
	if tenantData {
		return "", status.Error(codes.InvalidArgument, "timeseriesTenantData (series of several tenants in one request) is not supported: send one request per tenant")
	}
	return tenant, nil
}

// rawGRPCTenant is the tenant incoming gRPC metadata names, unvalidated.
func rawGRPCTenant(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, k := range []string{tenancy.MetadataOrgID, tenancy.MetadataThanosTenant} {
		if v := md.Get(k); len(v) > 0 && v[0] != "" {
			return v[0]
		}
	}
	return ""
}

// validateForwarded applies to a forwarded write what the distributor applies to a remote write (never trust the
// caller, DESIGN.md §6): valid UTF-8 labels, then the series rules and limits of v, with now taken from the
// ingester's clock (creation_grace_period: no sample beyond now + grace ever reaches the TSDB). It returns the
// valid series, in place of tss, and the first error. Invalid series are discarded and counted in
// strata_discarded_samples_total with their reason.
//
// rs, when not nil, are the series as received, kept in step with the valid series: a series known by its bytes
// (validated before, unchanged, under the same limits: receivedSeries) has only its samples checked, and one
// whose labels validation changed (sorted, dropped) is not to be known by its bytes (its run is removed).
func (i *Ingester) validateForwarded(tenant string, v seriesValidator, tss []*prompb.TimeSeries, rs *receivedSeries, checkUTF8 bool) (valid []*prompb.TimeSeries, firstErr *tenancy.Error) {
	valid = tss[:0]
	for n, ts := range tss {
		if ts == nil {
			continue
		}
		known := rs.knownRef(n) != 0
		reason, err := "", (*tenancy.Error)(nil)
		k := -1
		if checkUTF8 && !known { // a series known by its bytes has valid UTF-8 (remotewrite.Options.KeepLabelRuns)
			k = invalidUTF8Label(ts)
		}
		var vi violation
		if k >= 0 {
			reason, err = ReasonLabelValueInvalid, labelValueInvalidError(ts, k)
		} else {
			if known {
				vi = v.checkSamples(ts)
			} else {
				vi = v.check(ts)
			}
			if vi.reason != "" {
				if known && ts.Labels == nil {
					// Decoded without its labels (skipKnownLabels): the error names the series.
					if ferr := fillLabels(ts, rs.runs[n]); ferr != nil {
						level.Warn(i.logger).Log("msg", "decode the labels of a known series", "tenant", tenant, "err", ferr)
					}
				}
				reason, err = vi.reason, v.err(ts, vi)
			}
		}
		if reason != "" {
			i.discard(tenant, reason, len(ts.Samples)+len(ts.Histograms))
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if rs != nil {
			j := len(valid)
			rs.runs[j], rs.keys[j], rs.known[j] = rs.runs[n], rs.keys[n], rs.known[n]
			if vi.labelsChanged {
				rs.runs[j] = nil
			}
		}
		valid = append(valid, ts)
	}
	clear(tss[len(valid):])
	if rs != nil {
		rs.runs, rs.keys, rs.known = rs.runs[:len(valid)], rs.keys[:len(valid)], rs.known[:len(valid)]
	}
	return valid, firstErr
}

// invalidUTF8Label returns the index of the first label of ts whose name or value is not valid UTF-8, or -1.
func invalidUTF8Label(ts *prompb.TimeSeries) int {
	for k, l := range ts.Labels {
		if !utf8.ValidString(l.GetName()) || !utf8.ValidString(l.GetValue()) {
			return k
		}
	}
	return -1
}

// labelValueInvalidError is Mimir's error for label k of ts not being valid UTF-8.
func labelValueInvalidError(ts *prompb.TimeSeries, k int) *tenancy.Error {
	metric := ""
	for _, l := range ts.Labels {
		if l.GetName() == model.MetricNameLabel {
			metric = l.GetValue()
			break
		}
	}
	valid := func(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
	l := ts.Labels[k]
	return &tenancy.Error{ID: idLabelValueInvalid, Status: 400, Msg: idLabelValueInvalid.Message(fmt.Sprintf(
		"received a series with invalid value in label '%.200s': '%.200s' metric: '%.200s'", valid(l.GetName()), valid(l.GetValue()), valid(metric)))}
}

// RemoteWrite implements thanos.WriteableStore, the forward RPC from distributors (and from a stock Thanos
// receive router). It trusts nothing of its caller: the tenant must be given (in the request or in gRPC
// metadata, agreeing when both are), and every series passes the distributor's validation. Invalid series are
// discarded and the first error is answered (InvalidArgument, Mimir's message) once the valid ones are appended,
// as the distributor does. req is modified.
//
// The gRPC server does not call it: RegisterWriteableStore decodes the request its own way and calls remoteWrite.
func (i *Ingester) RemoteWrite(ctx context.Context, req *storepb.WriteRequest) (*storepb.WriteResponse, error) {
	return i.remoteWrite(ctx, req.GetTenant(), len(req.GetTimeseriesTenantData()) > 0, req, nil, true, nil)
}

// remoteWrite is RemoteWrite of a request whose tenant field is reqTenant, and which has timeseriesTenantData
// when tenantData; runs are its series' labels as received (see push), or nil. checkUTF8 false: the decoder found
// every label valid UTF-8, which need not be checked again.
//
// decoded, when not nil, is what the series were looked up as while decoding (skipKnownLabels): the known ones
// were decoded without their labels. remoteWrite puts it back.
func (i *Ingester) remoteWrite(ctx context.Context, reqTenant string, tenantData bool, req *storepb.WriteRequest, runs [][]byte, checkUTF8 bool, decoded *receivedSeries) (*storepb.WriteResponse, error) {
	defer func() { i.received.put(decoded) }() // unless taken as rs
	tenant, err := remoteWriteTenant(ctx, reqTenant, tenantData)
	if err != nil {
		return nil, err
	}
	sent := len(req.Timeseries)
	v := newSeriesValidator(i.overrides.ForTenant(tenant), i.now())
	var rs *receivedSeries
	if decoded != nil && (len(runs) != sent || decoded.limits != v.labelLimits()) {
		// The tenant's label limits changed since: the series are looked at with their labels again.
		if err := fillKnownLabels(req.Timeseries, decoded, runs); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		i.received.put(decoded)
		decoded = nil
	}
	switch {
	case decoded != nil:
		rs, decoded.runs = decoded, runs // the runs as decoded: those it was looked up by, or nil
		decoded = nil
		defer i.received.put(rs)
	case runs != nil && len(runs) == sent:
		rs = i.received.get(runs, v.labelLimits())
		defer i.received.put(rs)
		if u := i.get(tenant); u != nil {
			u.refs.lookup(rs) // push looks up again if the TSDB it appends to is another
		}
	}
	valid, invalid := i.validateForwarded(tenant, v, req.Timeseries, rs, checkUTF8)
	req.Timeseries = valid
	// A request whose every series was refused appends nothing (and opens no TSDB) but may still carry metric
	// metadata for Push, as may one without series.
	if len(valid) > 0 || sent == 0 || len(req.GetMetadata()) > 0 {
		// The validation error comes first in the request; a failure to append that is not the client's (a
		// commit error, shutting down) says more and is answered instead.
		var te *tenancy.Error
		if err := i.push(ctx, tenant, req, rs); err != nil && (invalid == nil || !errors.As(err, &te)) {
			if errors.As(err, &te) {
				i.reportUsage(ctx, tenant) // a series limit reached: the distributor's usage says so
			}
			return nil, err
		}
		i.reportUsage(ctx, tenant)
	}
	if invalid != nil {
		return nil, invalid
	}
	return &storepb.WriteResponse{}, nil
}

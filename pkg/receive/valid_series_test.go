package receive

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/client_golang/prometheus"
	promprompb "github.com/prometheus/prometheus/prompb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// TestDistributorValidatedSeries: a series whose labels passed the rules before, as received, is not checked
// again, under the same tenant and label limits only; its samples always are; a series whose labels were refused
// or changed (sorted) is never known. With a Pusher that takes series without labels (framingFakePusher, as a
// RingPusher of remote ingesters), the known series are not even decoded with their labels: each still reaches the
// ingesters with them (its frame), an error still names it, and a known series changed (an exemplar dropped) is
// sent with the labels it was decoded with later.
func TestDistributorValidatedSeries(t *testing.T) {
	for _, framing := range []bool{false, true} {
		t.Run(map[bool]string{false: "pusher of decoded series", true: "pusher of frames"}[framing], func(t *testing.T) {
			testDistributorValidatedSeries(t, framing)
		})
	}
}

func testDistributorValidatedSeries(t *testing.T, framing bool) {
	var fp *framingFakePusher
	env := newTestEnvPusher(t, testLimits(), func(p *fakePusher) Pusher {
		if !framing {
			return p
		}
		fp = &framingFakePusher{fakePusher: p}
		return fp
	})
	now := testNowMs()
	future := testNow.Add(time.Hour).UnixMilli()
	a := series1(now, "__name__", "up", "job", "a")
	b := series1(now, "__name__", "up", "job", "b")
	aFuture := series1(future, "__name__", "up", "job", "a")
	aExemplar := series1(now, "__name__", "up", "job", "a")
	aExemplar.Exemplars = []promprompb.Exemplar{{Labels: []promprompb.Label{{Name: "trace_id", Value: "x"}}, Value: 1, Timestamp: future}}
	unsorted := series1(now, "job", "c", "__name__", "up")
	invalid := series1(now, "__name__", "up", "bad-name", "x")
	long, usual := testLimits(), testLimits()
	long.MaxLabelValueLength = 1

	for _, step := range []struct {
		name          string
		limits        *tenancy.Limits // team-a's limits from this step on, when not nil
		tenant        string          // default team-a
		series        []promprompb.TimeSeries
		wantCode      int
		wantPushed    int // series handed to the pusher
		hits, misses  float64
		wantDiscarded string // a reason the tenant's discarded samples rose for: by one sample, or discardedN
		discardedN    float64
		wantBody      string // in the answer
	}{
		{name: "first write: checked", series: []promprompb.TimeSeries{a, b}, wantCode: http.StatusNoContent, wantPushed: 2, misses: 2},
		{name: "again: known", series: []promprompb.TimeSeries{a, b}, wantCode: http.StatusNoContent, wantPushed: 2, hits: 2},
		{name: "known series, sample too far in the future: refused", series: []promprompb.TimeSeries{aFuture, b}, wantCode: http.StatusBadRequest, wantPushed: 1, hits: 2, wantDiscarded: ReasonTooFarInFuture,
			wantBody: `job="a"`},
		{name: "known series, exemplar too far in the future: dropped", series: []promprompb.TimeSeries{aExemplar}, wantCode: http.StatusNoContent, wantPushed: 1, hits: 1},
		{name: "unsorted: sorted, not recorded", series: []promprompb.TimeSeries{unsorted}, wantCode: http.StatusNoContent, wantPushed: 1, misses: 1},
		{name: "unsorted again: checked again", series: []promprompb.TimeSeries{unsorted}, wantCode: http.StatusNoContent, wantPushed: 1, misses: 1},
		{name: "invalid: refused", series: []promprompb.TimeSeries{invalid}, wantCode: http.StatusBadRequest, misses: 1, wantDiscarded: ReasonLabelInvalid},
		{name: "invalid again: refused again", series: []promprompb.TimeSeries{invalid}, wantCode: http.StatusBadRequest, misses: 1, wantDiscarded: ReasonLabelInvalid},
		{name: "another tenant: not known", tenant: "team-b", series: []promprompb.TimeSeries{a}, wantCode: http.StatusNoContent, wantPushed: 1, misses: 1},
		{name: "stricter limits: known series checked again, refused", limits: &long, series: []promprompb.TimeSeries{a, b}, wantCode: http.StatusBadRequest, misses: 2, wantDiscarded: ReasonLabelValueTooLong, discardedN: 2},
		{name: "limits as before: known again", limits: &usual, series: []promprompb.TimeSeries{a, b}, wantCode: http.StatusNoContent, wantPushed: 2, hits: 2},
	} {
		t.Run(step.name, func(t *testing.T) {
			if step.limits != nil {
				env.limits.set("team-a", *step.limits)
			}
			tenant := step.tenant
			if tenant == "" {
				tenant = "team-a"
			}
			hits := counterValue(t, env.reg, "strata_distributor_validated_series_cache_hits_total", nil)
			misses := counterValue(t, env.reg, "strata_distributor_validated_series_cache_misses_total", nil)
			var discarded float64
			if step.wantDiscarded != "" {
				discarded = discardedValue(t, env.reg, tenant, step.wantDiscarded)
			}
			pushed := len(env.pusher.series())

			rec := env.do(t, encodeV1(t, step.series...), ctV1, tenancy.HeaderOrgID, tenant)
			testutil.Equals(t, step.wantCode, rec.Code, rec.Body.String())
			testutil.Equals(t, step.wantPushed, len(env.pusher.series())-pushed)
			testutil.Equals(t, step.hits, counterValue(t, env.reg, "strata_distributor_validated_series_cache_hits_total", nil)-hits)
			testutil.Equals(t, step.misses, counterValue(t, env.reg, "strata_distributor_validated_series_cache_misses_total", nil)-misses)
			if step.wantDiscarded != "" {
				testutil.Equals(t, discarded+max(1, step.discardedN), discardedValue(t, env.reg, tenant, step.wantDiscarded))
			}
			testutil.Assert(t, strings.Contains(rec.Body.String(), step.wantBody), "answer %q, want it to contain %q", rec.Body.String(), step.wantBody)
			// What the ingesters got: every series with its labels, and no exemplar from the future.
			for _, ts := range env.pusher.series()[pushed:] {
				testutil.Equals(t, 2, len(ts.Labels), "series %v", ts)
				names := map[string]string{}
				for _, l := range ts.Labels {
					names[l.Name] = l.Value
				}
				testutil.Equals(t, "up", names["__name__"], "series %v", ts)
				for _, e := range ts.Exemplars {
					testutil.Assert(t, e.Timestamp <= now, "exemplar from the future sent: %v", ts)
				}
			}
		})
	}
	// The unsorted series reached the pusher sorted both times.
	for _, ts := range env.pusher.series() {
		for i := 1; i < len(ts.Labels); i++ {
			testutil.Assert(t, ts.Labels[i-1].Name < ts.Labels[i].Name, "labels not sorted: %v", ts.Labels)
		}
	}
	if framing {
		testutil.Assert(t, fp.frames > 0, "no series sent as its frame")
		testutil.Assert(t, fp.unlabelled == 0, "%d series without labels sent other than as their frames", fp.unlabelled)
	}
}

// framingFakePusher is a fakePusher that takes series as a RingPusher of remote ingesters does (FramingPusher,
// runLabelsPusher): it records each series as the ingesters would receive it, decoded from its frame when it has
// one, as it is otherwise; and counts the series sent as frames, and those sent without frame nor labels.
type framingFakePusher struct {
	*fakePusher
	frames, unlabelled int
}

func (p *framingFakePusher) takesRunLabels() bool { return true }

func (p *framingFakePusher) PushRelease(ctx context.Context, tenant string, req *storepb.WriteRequest, release func()) error {
	defer release()
	return p.Push(ctx, tenant, req)
}

func (p *framingFakePusher) PushFrames(ctx context.Context, tenant string, req *storepb.WriteRequest, frames, _ [][]byte, _ []byte, release func()) error {
	defer release()
	// Copies: the series' strings alias the request's body, reused once released.
	sent := &storepb.WriteRequest{Tenant: tenant, Metadata: req.Metadata}
	for i, ts := range req.Timeseries {
		var b []byte
		if len(frames) == len(req.Timeseries) && frames[i] != nil {
			v, n := protowire.ConsumeBytes(frames[i][1:])
			if n < 0 {
				return errors.New("malformed frame")
			}
			b = bytes.Clone(v)
			p.frames++
		} else {
			if len(ts.Labels) == 0 {
				p.unlabelled++
			}
			var err error
			if b, err = proto.Marshal(ts); err != nil {
				return err
			}
		}
		ts = &prompb.TimeSeries{}
		if err := proto.Unmarshal(b, ts); err != nil {
			return err
		}
		sent.Timeseries = append(sent.Timeseries, ts)
	}
	return p.Push(ctx, tenant, sent)
}

// TestDistributorKnownLabelsLimitsChanged: a request decoded without the labels of the series known valid under
// the limits of then is pushed under stricter ones: its series are checked with their labels again (and refused,
// the error naming the series), not passed as known.
func TestDistributorKnownLabelsLimitsChanged(t *testing.T) {
	usual, long := testLimits(), testLimits()
	long.MaxLabelValueLength = 1
	env := newTestEnvPusher(t, usual, func(p *fakePusher) Pusher { return &framingFakePusher{fakePusher: p} })
	body := encodeV1(t, series1(testNowMs(), "__name__", "up", "job", "a"))
	rec := env.do(t, body, ctV1)
	testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())

	// As the push handler decodes it, then the limits change before Push.
	reg := prometheus.NewRegistry()
	limits := &fakeTenantLimits{}
	d := NewDistributor(DefaultPushConfig(), tenancy.NewOverrides(usual, limits), &framingFakePusher{fakePusher: &fakePusher{}}, log.NewNopLogger(), reg,
		WithClock(storetest.NewClock(testNow).Now))
	raw, err := snappy.Decode(nil, body)
	testutil.Ok(t, err)
	for range 2 { // the first decode records the series, the second skips its labels
		var req PushRequest
		ll := newSeriesValidator(&usual, time.Time{}).labelLimits()
		dec := remotewrite.Options{KeepFrames: true, KeepLabelRuns: true, AliasBuf: true, SkipLabels: func(runs [][]byte) []bool {
			req.known, req.knownLimits = d.valid.lookup("team-a", ll, runs), ll
			return req.known.known
		}}
		req.Series, err = remotewrite.DecodeV1(raw, &dec)
		testutil.Ok(t, err)
		req.Frames, req.LabelRuns = dec.Frames(), dec.LabelRuns()
		if req.known.isKnown(0) {
			testutil.Equals(t, 0, len(req.Series[0].Labels))
			limits.set("team-a", long)
			_, err = d.Push(context.Background(), "team-a", &req)
			var te *tenancy.Error
			testutil.Assert(t, errors.As(err, &te), "%v", err)
			testutil.Equals(t, tenancy.IDLabelValueTooLong, te.ID)
			testutil.Assert(t, strings.Contains(te.Msg, `job="a"`), te.Msg)
			return
		}
		_, err = d.Push(context.Background(), "team-a", &req)
		testutil.Ok(t, err)
	}
	t.Fatal("the series was never known")
}

// TestShardKeyRun: a series' key from its label run is that of its labels as decoded and validated unchanged.
func TestShardKeyRun(t *testing.T) {
	for _, ls := range [][]string{
		{"__name__", "up"},
		{"__name__", "up", "job", "a"},
		{"__name__", "up", "a", "", "job", strings.Repeat("x", 300)}, // an empty value is no label
		{"__name__", strings.Repeat("é", 600), "z", "1"},             // beyond ShardKey's stack buffer
	} {
		body := encodeV1(t, series1(1, ls...))
		raw, err := snappy.Decode(nil, body)
		testutil.Ok(t, err)
		o := remotewrite.Options{KeepLabelRuns: true}
		series, err := remotewrite.DecodeV1(raw, &o)
		testutil.Ok(t, err)
		var kept []*labelpb.Label
		for _, l := range series[0].Labels {
			if l.Value != "" {
				kept = append(kept, l)
			}
		}
		got, err := ShardKeyRun("team-a", o.LabelRuns()[0])
		testutil.Ok(t, err)
		testutil.Equals(t, ShardKey("team-a", kept), got, "%v", ls)
		testutil.Assert(t, ShardKey("team-b", kept) != got)
	}
}

// TestValidSeriesLimit: the map never holds more than its limit; beyond it, it starts again with what is recorded.
func TestValidSeriesLimit(t *testing.T) {
	testutil.Assert(t, newValidSeries(0, prometheus.NewRegistry()) == nil)
	var none *validSeries
	l := none.lookup("t", [3]int{}, [][]byte{[]byte("x")})
	testutil.Assert(t, !l.isKnown(0))
	l.found(0, []byte("x"))
	none.done(l) // no-op, no panic

	c := newValidSeries(3, prometheus.NewRegistry())
	record := func(runs ...string) (known []bool) {
		bs := make([][]byte, len(runs))
		for i, r := range runs {
			bs[i] = []byte(r)
		}
		l := c.lookup("t", [3]int{1, 2, 3}, bs)
		for i := range bs {
			known = append(known, l.isKnown(i))
			l.found(i, bs[i])
		}
		c.done(l)
		return known
	}
	testutil.Equals(t, []bool{false, false}, record("a", "b"))
	testutil.Equals(t, []bool{true, true}, record("a", "b"))
	testutil.Equals(t, 2, c.t.len())
	testutil.Equals(t, []bool{false, false, true}, record("c", "d", "a")) // 2 + 2 > 3: starts again with c, d
	testutil.Equals(t, 2, c.t.len())
	testutil.Equals(t, []bool{true, true, false}, record("c", "d", "a"))
	testutil.Equals(t, 3, c.t.len())
	testutil.Equals(t, []bool{false, false, false, false, false}, record("1", "2", "3", "4", "5")) // more than the limit at once
	testutil.Assert(t, c.t.len() <= 3, "%d entries", c.t.len())
}

package receive

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/common/model"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// TestLateWrites: pushes with a sample older than now - max_cache_freshness + margin are logged (after they are
// committed), newer ones are not; the log is per tenant, per process (epoch), and bounded (Since).
func TestLateWrites(t *testing.T) {
	now := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	l := tenancy.DefaultLimits()
	l.OutOfOrderTimeWindow = model.Duration(48 * time.Hour)
	ing := newTestIngester(t, t.TempDir(), fixedLimits{"a": &l, "b": &l}, nil, WithIngesterClock(func() time.Time { return now }))
	ms := func(d time.Duration) int64 { return now.Add(-d).UnixMilli() }
	push := func(tenant string, samples ...int64) {
		t.Helper()
		testutil.Ok(t, ing.Push(context.Background(), tenant, &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), samples...)}}))
	}

	push("a", ms(time.Minute), ms(0)) // fresh: newer than now - 10m + 2m
	testutil.Equals(t, uint64(0), ing.LateWrites("a").Seq)
	push("a", ms(9*time.Minute)) // older than the boundary (8m ago): a late write (out of order here)
	s := ing.LateWrites("a")
	testutil.Equals(t, uint64(1), s.Seq)
	testutil.Equals(t, []LateWrite{{Seq: 1, MinTime: ms(9 * time.Minute)}}, s.Events)
	push("a", ms(20*time.Hour)) // out of order, a day back
	push("a", ms(19*time.Hour)) // newer than the last event: coalesced into it
	s = ing.LateWrites("a")
	testutil.Equals(t, uint64(3), s.Seq)
	testutil.Equals(t, []LateWrite{{Seq: 1, MinTime: ms(9 * time.Minute)}, {Seq: 3, MinTime: ms(20 * time.Hour)}}, s.Events)
	testutil.Equals(t, uint64(0), ing.LateWrites("b").Seq, "another tenant's log")

	// A refused push (too old for the OOO window) commits nothing and logs nothing.
	err := ing.Push(context.Background(), "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), ms(72*time.Hour))}})
	testutil.NotOk(t, err)
	testutil.Equals(t, uint64(3), ing.LateWrites("a").Seq)

	// Bounded: older events are forgotten and Since says so.
	for i := range maxLateWriteEvents + 5 {
		ing.lateWrites.record("b", ms(time.Duration(i+1)*time.Hour)) // each older than the last: not coalesced
	}
	s = ing.LateWrites("b")
	testutil.Equals(t, uint64(maxLateWriteEvents+5), s.Seq)
	testutil.Equals(t, maxLateWriteEvents, len(s.Events))
	testutil.Equals(t, uint64(5), s.Since)
	testutil.Equals(t, uint64(6), s.Events[0].Seq)

	// Another process: another epoch.
	other := newTestIngester(t, t.TempDir(), fixedLimits{}, nil)
	testutil.Assert(t, other.LateWrites("a").Epoch != s.Epoch, "same epoch in two processes")

	// The endpoint serves the same state as JSON, and refuses invalid tenants.
	rec := httptest.NewRecorder()
	ing.LateWritesHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ingester/late_writes?tenant=a", nil))
	testutil.Equals(t, http.StatusOK, rec.Code)
	var got LateWritesState
	testutil.Ok(t, json.NewDecoder(rec.Body).Decode(&got))
	testutil.Equals(t, ing.LateWrites("a"), got)
	rec = httptest.NewRecorder()
	ing.LateWritesHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ingester/late_writes?tenant=..", nil))
	testutil.Equals(t, http.StatusBadRequest, rec.Code)
}

// TestLateWritesFullLogNoGarbage: once a tenant's log is full, each further late write (each older than the
// last, so never coalesced) forgets the oldest in place: no new 1024-event array per push, under the lock every
// tenant's pushes share; the log stays bounded and in order.
func TestLateWritesFullLogNoGarbage(t *testing.T) {
	now := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	l := newLateWrites(tenancy.NewOverrides(tenancy.DefaultLimits(), nil), func() time.Time { return now })
	minT := now.Add(-time.Hour).UnixMilli()
	for range maxLateWriteEvents {
		minT--
		l.record("a", minT)
	}
	allocs := testing.AllocsPerRun(200, func() {
		minT--
		l.record("a", minT)
	})
	testutil.Equals(t, 0.0, allocs)
	s := l.state("a")
	testutil.Equals(t, maxLateWriteEvents, len(s.Events))
	testutil.Equals(t, s.Seq, s.Events[len(s.Events)-1].Seq)
	testutil.Equals(t, s.Since+1, s.Events[0].Seq)
	for i := 1; i < len(s.Events); i++ {
		testutil.Assert(t, s.Events[i].Seq == s.Events[i-1].Seq+1 && s.Events[i].MinTime < s.Events[i-1].MinTime, "event %d out of order", i)
	}
}

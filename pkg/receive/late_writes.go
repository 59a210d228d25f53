package receive

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// LateWriteMargin is added to a tenant's max_cache_freshness when the ingester decides whether a write is late:
// it covers clock skew between the ingester and the query-frontend and the overrides' reload period (the two
// processes read max_cache_freshness separately).
const LateWriteMargin = 2 * time.Minute

// maxLateWriteEvents bounds the late writes remembered per tenant; an extent older than the oldest one kept is
// judged by its sequence alone (unusable).
const maxLateWriteEvents = 1024

// LateWrite is one committed push of a tenant that held a sample older than the tenant's cache boundary.
type LateWrite struct {
	// Seq numbers the tenant's late writes since Epoch, from 1.
	Seq uint64 `json:"seq"`
	// MinTime is the push's oldest committed sample, ms.
	MinTime int64 `json:"min_time"`
}

// LateWritesState is what a query-frontend needs from one ingester to know whether a cached extent of a tenant
// is still what a query would answer: every sample committed older than now - max_cache_freshness + margin (margin: LateWriteMargin),
// as a numbered log. It is served as JSON at /ingester/late_writes?tenant=<t>.
type LateWritesState struct {
	// Epoch identifies this ingester process: it changes on every start (the log starts again from 0).
	Epoch string `json:"epoch"`
	// Seq is the tenant's last late write (0: none since Epoch began).
	Seq uint64 `json:"seq"`
	// Since: every late write after this one is covered by Events (older ones were forgotten).
	Since uint64 `json:"since"`
	// Events are the tenant's late writes after Since, oldest first. Consecutive writes may be coalesced into
	// one event with the higher Seq and the lower MinTime, which only ever invalidates more.
	Events []LateWrite `json:"events"`
}

// lateWrites is an ingester's log of late writes per tenant. Safe for concurrent use.
type lateWrites struct {
	epoch     string
	overrides *tenancy.Overrides
	now       func() time.Time

	mtx     sync.Mutex
	tenants map[string]*LateWritesState
}

func newLateWrites(overrides *tenancy.Overrides, now func() time.Time) *lateWrites {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &lateWrites{epoch: hex.EncodeToString(b[:]) + "-" + now().UTC().Format(time.RFC3339Nano), overrides: overrides, now: now, tenants: map[string]*LateWritesState{}}
}

// record notes a committed push whose oldest sample is minT. It must be called after the samples are
// queryable (after Commit), so that a frontend reading the log before the call sees a query that may miss them
// invalidated, and one reading it after sees them in its query.
func (l *lateWrites) record(tenant string, minT int64) {
	if l == nil {
		return
	}
	boundary := l.now().Add(-l.overrides.MaxCacheFreshness(tenant) + LateWriteMargin).UnixMilli()
	if minT >= boundary {
		return // no cached extent reaches this sample
	}
	l.mtx.Lock()
	defer l.mtx.Unlock()
	s, ok := l.tenants[tenant]
	if !ok {
		s = &LateWritesState{Epoch: l.epoch}
		l.tenants[tenant] = s
	}
	s.Seq++
	if n := len(s.Events); n > 0 && s.Events[n-1].MinTime <= minT {
		// Coalesce: the newer event says at least as much for every extent (its seq is higher, its time no later).
		s.Events[n-1] = LateWrite{Seq: s.Seq, MinTime: s.Events[n-1].MinTime}
		return
	}
	if n := len(s.Events); n == maxLateWriteEvents {
		// Forget the oldest in place: no new array per late write (state copies the events out).
		s.Since = s.Events[0].Seq
		copy(s.Events, s.Events[1:])
		s.Events = s.Events[:n-1]
	}
	s.Events = append(s.Events, LateWrite{Seq: s.Seq, MinTime: minT})
}

// state returns a copy of a tenant's log.
func (l *lateWrites) state(tenant string) LateWritesState {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	s, ok := l.tenants[tenant]
	if !ok {
		return LateWritesState{Epoch: l.epoch}
	}
	return LateWritesState{Epoch: s.Epoch, Seq: s.Seq, Since: s.Since, Events: append([]LateWrite(nil), s.Events...)}
}

// LateWrites returns the tenant's log of late writes (see LateWritesState).
func (i *Ingester) LateWrites(tenant string) LateWritesState { return i.lateWrites.state(tenant) }

// LateWritesHandler serves LateWritesState as JSON for the tenant named by the `tenant` parameter (a valid
// tenant ID; it is an internal endpoint the query-frontend reads, so it takes the tenant as a parameter).
func (i *Ingester) LateWritesHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant := r.FormValue("tenant")
		if err := tenancy.ValidateTenantID(tenant); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(i.LateWrites(tenant))
	})
}

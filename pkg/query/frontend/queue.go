package frontend

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// queue is Mimir's fair request queue: a FIFO per tenant, served round-robin between the tenants that have
// requests waiting, by at most maxConcurrent requests running at once. A tenant with maxPerTenant requests
// waiting gets 429 for the next ones; its waiting requests never delay another tenant's by more than one turn
// of the round-robin, however many they are.
//
// There are no worker goroutines: a request waits in Do until the dispatcher grants it a slot.
type queue struct {
	maxPerTenant  int
	maxConcurrent int
	now           func() time.Time
	metrics       *frontendMetrics

	mtx      sync.Mutex
	stopping bool
	running  int
	tenants  map[string]*tenantQueue
	// order holds the tenants with requests waiting, in round-robin order; next is the index of the next turn.
	order []string
	next  int
}

type tenantQueue struct {
	waiting []*queued
}

type queued struct {
	granted chan struct{}
	// done is set under the queue's lock when granted (then the request owns a slot).
	done bool
	// refused is set with done by stop: the frontend is shutting down, the request is answered 503 (no slot).
	refused bool
}

func newQueue(maxPerTenant, maxConcurrent int, now func() time.Time, m *frontendMetrics) *queue {
	return &queue{maxPerTenant: maxPerTenant, maxConcurrent: maxConcurrent, now: now, metrics: m, tenants: map[string]*tenantQueue{}}
}

// middleware runs each request once the queue grants it a slot.
func (q *queue) middleware(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, r *Request) (*Response, error) {
		tenant := r.TenantHeader()
		release, resp, err := q.wait(ctx, tenant)
		if resp != nil || err != nil {
			return resp, err
		}
		defer release()
		return next.Do(ctx, r)
	})
}

// wait queues a request of tenant and returns once it may run (release must then be called), or with a 429
// response when the tenant's queue is full, or with ctx's error.
func (q *queue) wait(ctx context.Context, tenant string) (func(), *Response, error) {
	enqueued := q.now()
	item := &queued{granted: make(chan struct{})}

	q.mtx.Lock()
	if q.stopping {
		q.mtx.Unlock()
		return nil, errShuttingDown(), nil
	}
	tq := q.tenants[tenant]
	if tq == nil {
		tq = &tenantQueue{}
		q.tenants[tenant] = tq
	}
	if len(tq.waiting) >= q.maxPerTenant {
		n := len(tq.waiting)
		q.removeIfEmptyLocked(tenant)
		q.mtx.Unlock()
		q.metrics.discarded.WithLabelValues(tenant).Inc()
		return nil, NewErrorResponse(http.StatusTooManyRequests, "unavailable", fmt.Sprintf(
			"too many outstanding requests: tenant %q has %d requests queued, the limit (max_outstanding_requests_per_tenant) is %d",
			tenant, n, q.maxPerTenant)), nil
	}
	if len(tq.waiting) == 0 {
		q.order = append(q.order, tenant)
	}
	tq.waiting = append(tq.waiting, item)
	q.metrics.queueLength.WithLabelValues(tenant).Set(float64(len(tq.waiting)))
	q.dispatchLocked()
	q.mtx.Unlock()

	select {
	case <-item.granted:
		if item.refused {
			return nil, errShuttingDown(), nil
		}
	case <-ctx.Done():
		q.mtx.Lock()
		if !item.done {
			q.dropLocked(tenant, item)
			q.mtx.Unlock()
			return nil, nil, ctx.Err()
		}
		refused := item.refused
		q.mtx.Unlock()
		if !refused {
			// Granted meanwhile: the slot is ours; give it back.
			q.release()
		}
		return nil, nil, ctx.Err()
	}
	q.metrics.queueDuration.Observe(q.now().Sub(enqueued).Seconds())
	return q.release, nil, nil
}

func (q *queue) release() {
	q.mtx.Lock()
	q.running--
	q.dispatchLocked()
	q.mtx.Unlock()
}

// dispatchLocked grants free slots to the waiting requests, one tenant per turn.
func (q *queue) dispatchLocked() {
	for q.running < q.maxConcurrent && len(q.order) > 0 {
		if q.next >= len(q.order) {
			q.next = 0
		}
		tenant := q.order[q.next]
		tq := q.tenants[tenant]
		item := tq.waiting[0]
		tq.waiting[0] = nil
		tq.waiting = tq.waiting[1:]
		item.done = true
		close(item.granted)
		q.running++
		if len(tq.waiting) == 0 {
			q.removeTenantLocked(q.next)
		} else {
			q.metrics.queueLength.WithLabelValues(tenant).Set(float64(len(tq.waiting)))
			q.next++
		}
	}
}

// dropLocked removes a request that gave up waiting.
func (q *queue) dropLocked(tenant string, item *queued) {
	tq := q.tenants[tenant]
	for i, it := range tq.waiting {
		if it == item {
			tq.waiting = append(tq.waiting[:i], tq.waiting[i+1:]...)
			break
		}
	}
	if len(tq.waiting) > 0 {
		q.metrics.queueLength.WithLabelValues(tenant).Set(float64(len(tq.waiting)))
		return
	}
	for i, t := range q.order {
		if t == tenant {
			q.removeTenantLocked(i)
			return
		}
	}
}

// removeTenantLocked takes the tenant at order[i], whose queue is empty, out of the round-robin.
func (q *queue) removeTenantLocked(i int) {
	tenant := q.order[i]
	q.order = append(q.order[:i], q.order[i+1:]...)
	if i < q.next {
		q.next--
	}
	q.removeIfEmptyLocked(tenant)
}

func (q *queue) removeIfEmptyLocked(tenant string) {
	if tq := q.tenants[tenant]; tq != nil && len(tq.waiting) == 0 {
		delete(q.tenants, tenant)
		q.metrics.queueLength.DeleteLabelValues(tenant)
	}
}

// stop answers every waiting request, and every later one, with 503 (the frontend is shutting down: the client
// may retry on another); running requests go on.
func (q *queue) stop() {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	q.stopping = true
	for tenant, tq := range q.tenants {
		for _, item := range tq.waiting {
			item.done, item.refused = true, true
			close(item.granted)
		}
		delete(q.tenants, tenant)
		q.metrics.queueLength.DeleteLabelValues(tenant)
	}
	q.order, q.next = nil, 0
}

func errShuttingDown() *Response {
	return NewErrorResponse(http.StatusServiceUnavailable, "unavailable", "the query-frontend is shutting down")
}

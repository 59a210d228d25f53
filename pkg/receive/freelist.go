package receive

import "sync"

// freeList keeps at most max items for reuse: the write path's large per-request buffers (decoded requests'
// slabs), about as many as a process handles at once under steady load. A sync.Pool kept tens of them between
// collections under load, and each byte of live heap costs another in GC headroom. The zero value keeps none.
type freeList[T any] struct {
	max int
	// keep resets an item given back and says whether to keep it (false: too large to hold on to).
	keep func(*T) bool

	mtx  sync.Mutex
	free []*T
}

func newFreeList[T any](max int, keep func(*T) bool) *freeList[T] {
	return &freeList[T]{max: max, keep: keep}
}

// get returns a kept item, or a new one.
func (f *freeList[T]) get() *T {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	if n := len(f.free); n > 0 {
		t := f.free[n-1]
		f.free[n-1] = nil
		f.free = f.free[:n-1]
		return t
	}
	return new(T)
}

// put gives t back; it must not be used afterwards.
func (f *freeList[T]) put(t *T) {
	if !f.keep(t) {
		return
	}
	f.mtx.Lock()
	defer f.mtx.Unlock()
	if len(f.free) < f.max {
		f.free = append(f.free, t)
	}
}

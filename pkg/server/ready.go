package server

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// Prober tracks the readiness of the parts of a process. The process is ready when every part that was
// registered is ready; a part registered later makes it not ready again until that part is ready too.
// It serves /ready: 200 "ready", or 503 naming the parts still starting.
type Prober struct {
	mtx     sync.Mutex
	order   []string
	ready   map[string]bool
	onReady func()
}

func newProber(onReady func()) *Prober {
	return &Prober{ready: map[string]bool{}, onReady: onReady}
}

// Register adds a part that is not ready yet and returns the function that marks it ready (idempotent).
func (p *Prober) Register(part string) (markReady func()) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	if _, ok := p.ready[part]; !ok {
		p.order = append(p.order, part)
	}
	p.ready[part] = false
	return func() {
		p.mtx.Lock()
		p.ready[part] = true
		all := p.notReadyLocked() == nil
		p.mtx.Unlock()
		if all && p.onReady != nil {
			p.onReady()
		}
	}
}

func (p *Prober) notReadyLocked() []string {
	var out []string
	for _, part := range p.order {
		if !p.ready[part] {
			out = append(out, part)
		}
	}
	return out
}

// NotReady returns the parts not ready yet, in registration order; empty when the process is ready.
// A process with no registered part is not ready: something must say it has started.
func (p *Prober) NotReady() []string {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	if len(p.order) == 0 {
		return []string{"(nothing registered)"}
	}
	return p.notReadyLocked()
}

func (p *Prober) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if waiting := p.NotReady(); len(waiting) > 0 {
		http.Error(w, fmt.Sprintf("not ready: waiting for %s", strings.Join(waiting, ", ")), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ready\n"))
}

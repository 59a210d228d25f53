package storetest

import (
	"sync"
	"time"
)

// Clock is a settable clock for the tests of code that takes an injected clock (func() time.Time: pass
// c.Now).
type Clock struct {
	mtx sync.Mutex
	t   time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

func (c *Clock) Now() time.Time {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	return c.t
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	c.t = t
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	c.t = c.t.Add(d)
}

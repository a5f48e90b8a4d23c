package agent

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Reads (ping, list, status) claim no journal id: a VMS polling them must
// not fill the journal's disk nor its room for state changes. They are
// remembered in memory instead, for a while and up to a count, so that a
// retry of a read whose answer was lost (the OOB-I loses answers) waits
// for it or gets the same answer, and libvirt is asked once per request
// id, as for a state change. Beyond the bounds, or after a restart, a
// retried read simply runs again: a read changes nothing.

// readWindow is how long a read's answer is kept: twice the issue-time
// window, after which a retry is refused as stale before it runs.
const readWindowSkews = 2

// maxReads bounds the reads remembered.
const maxReads = 16384

var errReadReused = errors.New("request id already used for a different request")

type readEntry struct {
	fp   [fpLen]byte
	body []byte        // the reply body, once done
	done chan struct{} // closed when answered or released
	at   time.Time     // when it began (monotonic)
}

type readCache struct {
	window time.Duration
	mu     sync.Mutex
	m      map[uint64]*readEntry
	order  []uint64 // ids by begin, oldest first (may hold dropped ids)
}

func newReadCache(window time.Duration) *readCache {
	return &readCache{window: window, m: map[uint64]*readEntry{}}
}

// begin claims id for a read with fingerprint fp. It returns the answer
// body of an earlier run (claimed false), waiting (until ctx ends) for one
// still running; or claimed true: run it, then put or release.
func (c *readCache) begin(ctx context.Context, id uint64, fp [fpLen]byte) (body []byte, claimed bool, err error) {
	c.mu.Lock()
	for {
		e, ok := c.m[id]
		if !ok {
			break
		}
		if e.fp != fp {
			c.mu.Unlock()
			return nil, false, errReadReused
		}
		if e.body != nil {
			c.mu.Unlock()
			return e.body, false, nil
		}
		c.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
		c.mu.Lock()
	}
	c.evict(time.Now())
	c.m[id] = &readEntry{fp: fp, done: make(chan struct{}), at: time.Now()}
	c.order = append(c.order, id)
	c.mu.Unlock()
	return nil, true, nil
}

// put records the answer of a claimed read.
func (c *readCache) put(id uint64, body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok && e.body == nil {
		e.body = body
		close(e.done)
	}
}

// release drops a claim that got no answer (refused, stale, the requester
// gone): a retry runs it. A read already answered stays.
func (c *readCache) release(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok && e.body == nil {
		close(e.done)
		delete(c.m, id)
	}
}

// evict drops the reads past the window and, beyond maxReads, the oldest
// answered ones. Caller holds mu.
func (c *readCache) evict(now time.Time) {
	i := 0
	for ; i < len(c.order); i++ {
		id := c.order[i]
		e, ok := c.m[id]
		if !ok {
			continue
		}
		if now.Sub(e.at) < c.window && len(c.m) < maxReads {
			break
		}
		if e.body == nil {
			break // still running: keep it (and what came after)
		}
		delete(c.m, id)
	}
	c.order = c.order[i:]
}

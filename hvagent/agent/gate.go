package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
)

// The concurrency gate: requests are served concurrently, at most
// Config.MaxConcurrent at once, and the requests for one VM in the order
// they were prepared (arrival order). Prepare opens and decodes an envelope
// and takes its place in its VM's line; Job.Run waits for the request
// before it in that line, then for a slot, then serves it.
//
// A duplicate of a request id already in the gate takes no place in the
// line and no slot: it waits (at most DuplicateWait) until the first copy
// has begun, then goes to the journal like any duplicate, which waits for
// the outcome (or answers it from the record). So a duplicate of a running
// request waits for its outcome exactly as it did when requests were
// served one at a time, and never holds up other requests.

// Job is one prepared envelope; Run serves it once.
type Job struct {
	a   *Agent
	via string
	req *vmsg.Request
	err error // the envelope did not open or decode (already logged)
	// early is the answer given without serving the request: a clock
	// fault (clock.go).
	early [][]byte
	lane  string
	prev  <-chan struct{} // closed when the request before it in its lane is done
	done  chan struct{}   // closed when this one is done (its successor may go)
	// first is the job that holds this request id, when this is a duplicate.
	first   *Job
	started chan struct{} // closed once this job passed its lane and slot
}

// Prepare opens env that arrived on via and puts it in line. Call it in
// arrival order; Run the job (in any goroutine) exactly once.
func (a *Agent) Prepare(ctx context.Context, env []byte, via string) *Job {
	j := &Job{a: a, via: via, done: make(chan struct{}), started: make(chan struct{})}
	req, early, err := a.open(ctx, env, via)
	if err != nil || early != nil {
		j.err, j.early = err, early
		return j
	}
	j.req = req
	switch req.Command {
	case vmsg.CmdList, vmsg.CmdPing, vmsg.CmdHistory:
	default:
		j.lane = req.VM
	}
	a.gmu.Lock()
	defer a.gmu.Unlock()
	if f, ok := a.byID[req.ID]; ok {
		j.first = f
		return j
	}
	a.byID[req.ID] = j
	if j.lane != "" {
		j.prev = a.lanes[j.lane]
		a.lanes[j.lane] = j.done
	}
	return j
}

// Run serves the job and returns the sealed answers (see HandleEnvelope).
func (j *Job) Run(ctx context.Context) ([][]byte, error) {
	a := j.a
	if j.err != nil || j.early != nil {
		return j.early, j.err
	}
	if j.first != nil {
		return j.runDuplicate(ctx)
	}
	defer j.finish()
	if j.prev != nil {
		select {
		case <-j.prev:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-a.slots }()
	close(j.started)
	return a.handle(ctx, j.req, j.via, a.cfg.Now())
}

// runDuplicate waits for the first copy to begin, then serves the
// duplicate through the journal (which waits for the outcome).
func (j *Job) runDuplicate(ctx context.Context) ([][]byte, error) {
	a := j.a
	t := time.NewTimer(a.cfg.DuplicateWait)
	defer t.Stop()
	select {
	case <-j.first.started:
	case <-j.first.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		a.log.Info("duplicate of a request still waiting for its turn; answered in progress", "via", j.via, "request_id", j.req.ID, "waited", a.cfg.DuplicateWait)
		return a.answer(&vmsg.Reply{RequestID: j.req.ID, Code: vmsg.ErrInProgress,
			Error: "this request id is still running on the host; ask again with the same id for its outcome"})
	}
	return a.handle(ctx, j.req, j.via, a.cfg.Now())
}

// finish lets the next request of the lane go and forgets the job. If the
// job gave up (ctx ended) before its predecessor was done, its successor
// still waits for that predecessor.
func (j *Job) finish() {
	a := j.a
	a.gmu.Lock()
	if a.byID[j.req.ID] == j {
		delete(a.byID, j.req.ID)
	}
	if j.lane != "" && a.lanes[j.lane] == j.done {
		delete(a.lanes, j.lane)
	}
	a.gmu.Unlock()
	select {
	case <-j.started:
		close(j.done)
	default:
		// Not started: close done only after the predecessor is done, so
		// the order of the lane holds.
		if j.prev == nil {
			close(j.done)
			return
		}
		go func() {
			<-j.prev
			close(j.done)
		}()
	}
}

// open opens and decodes one envelope (the first half of HandleEnvelope).
// An authentic request sealed by a clock outside the window is not served
// but answered at once (early, clock.go).
func (a *Agent) open(ctx context.Context, env []byte, via string) (req *vmsg.Request, early [][]byte, err error) {
	hdr, body, err := a.opener.Open(env, a.cfg.Now())
	if err != nil {
		if out := a.clockFault(ctx, env, via, err); out != nil {
			return nil, out, nil
		}
		a.badEnvelope(ctx, env, via, err)
		return nil, nil, err
	}
	if hdr.Kind != vmsg.KindRequest {
		a.log.Warn("sealed message of the wrong kind ignored; only requests come to the host", "via", via, "kind", hdr.Kind, "msg_id", hdr.MsgID)
		return nil, nil, fmt.Errorf("agent: %v message, want %v", hdr.Kind, vmsg.KindRequest)
	}
	req, err = vmsg.DecodeRequest(body)
	if err != nil {
		// Authentic but malformed: the VMS has a bug. There is no request id
		// to answer to.
		a.log.Error("authentic request does not decode; the VMS sent a malformed body", "via", via, "msg_id", hdr.MsgID, "err", err)
		return nil, nil, err
	}
	return req, nil, nil
}

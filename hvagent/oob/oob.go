// Package oob is hvagent's OOB-I channel: a loop over the BMC's system
// interface (sysif.Conn) that reads records from Queue 1, reassembles sealed
// envelopes, hands them to the agent, and writes each answer, fragmented, to
// Queue 2. It also provides two alert sinks on the same connection: a SEL
// entry on the BMC and a sealed Alert message on Queue 2.
//
// Reading Queue 1 (OEM 0x02, see internal/oem) is two-phase: the loop reads
// the head, hands the record to the reassembler, and acknowledges it with the
// next read. A record that completes a message is acknowledged only after
// the message was handled and its answers written to Queue 2, so a
// single-record request (the common case) survives an agent crash between
// read and answer: after the restart it is read again, and the agent's
// journal answers a request id that already ran from its recorded result.
// A stray or garbled record is logged and acknowledged (skipped).
//
// With a BMC that has OEM 0x07 (ReadQueue1Window) the loop serves up to
// Config.Window messages at once: it reads on past a message being served
// (the BMC hands out each record once and takes acknowledgements by key),
// acknowledges fragments at once and each completing record once its
// answers are in Queue 2, and stops reading while the window is full. Each
// message is put in line in arrival order (Preparer: the agent keeps one
// VM's requests in order) before it runs in its own goroutine. Version 1
// requests, and every request on a BMC without 0x07 (0xC1), are served one
// at a time as described above.
//
// The loop wakes on Notify (the BMC raised attention because Queue 1 is not
// empty) or when a message finishes, and otherwise polls every
// PollInterval; after a record it reads again at once until the queue
// answers "empty".
//
// Answers are addressed: their records carry the requester id that came
// with the request's records (record version 2), so the BMC hands them to
// that VMS reader only; alerts are addressed to 0, the alert log every
// following VMS reads (see docs/oob-i.md).
//
// Writing Queue 2 (OEM 0x03): a full queue answers 0xC4, a BMC that is busy
// or not connected for now 0xC0, 0xC3 or 0xD2 (oem.CompletionCode.Transient:
// QEMU answers 0xD2 while bmcsim restarts); the writer backs off (50 ms
// doubling to 2 s) and retries the same record until it fits or ctx ends.
// A write of a record already queued is answered as success by the BMC, so
// retries after a transport error cannot duplicate it. A full queue
// never stalls the loop: each answer gets AnswerTimeout, then it is dropped,
// counted (Stats.AnswersDropped) and logged (the VMS asks again with the same
// request id and the journal answers it). An Alert in an answer (a refusal's)
// is written apart, in the background (at most AlertWriters at once, beyond
// that dropped and counted in Stats.AlertsDropped), so an alert log that
// takes nothing never holds up an answer nor its window slot. Answers written at once interleave
// their records in Queue 2 (the VMS reassembles by message id); each write
// honours its context, so an alert sink's deadline holds.
//
// SEL alert entry (Add SEL Entry, NetFn 0x0A cmd 0x44), 16 bytes:
//
//	0  1   2     3  4  5  6   7  8  9   10     11  12 13 14 15
//	+-----+-----+-----------+---------+------+------+-----------+
//	| id  | C0  | timestamp | IANA    |class |cmd   |request id |
//	| 0 0 |     | u32 LE    | LSB 1st |      |      |low 32, LE |
//	+-----+-----+-----------+---------+------+------+-----------+
//
// The BMC assigns the id and (for OEM timestamped records) the timestamp.
// class is agent.Class (1 denied, 2 challenge refused, 3 bad envelope,
// 4 replayed envelope, 5 unauthorized local change, 6 guest-initiated,
// 7 crash, 0 other), numbered as oem.AlertClass; cmd the vmsg.Command
// number (0 when none). oem.SELAlert packs and parses bytes 10-15.
package oob

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ooblab/ooblab/hvagent/agent"
	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/sysif"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// Handler serves one complete envelope (agent.Agent implements it).
type Handler interface {
	HandleEnvelope(ctx context.Context, env []byte, via string) ([][]byte, error)
}

// Preparer is a Handler that puts an envelope in line before it runs and
// returns what serves it (agent.Agent's Prepare(…).Run: requests for one VM
// run in arrival order). The loop prepares in arrival order. With a plain
// Handler the loop runs the messages of its window in any order.
type Preparer interface {
	Prepare(ctx context.Context, env []byte, via string) func(context.Context) ([][]byte, error)
}

// jobPreparer is agent.Agent's Prepare, used as a Preparer.
type jobPreparer interface {
	Prepare(ctx context.Context, env []byte, via string) *agent.Job
}

var (
	_ Handler     = (*agent.Agent)(nil)
	_ jobPreparer = (*agent.Agent)(nil)
)

// Config configures a Loop. Conn and Handler are required.
type Config struct {
	Conn    sysif.Conn
	Handler Handler
	IANA    oem.IANA // default oem.DefaultIANA
	// PollInterval is how often Queue 1 is read without attention
	// (default 1 s).
	PollInterval time.Duration
	// CallTimeout bounds one IPMI request (default 5 s).
	CallTimeout time.Duration
	// AnswerTimeout bounds the writing of one answer to Queue 2 (default
	// 30 s).
	AnswerTimeout time.Duration
	// MinBackoff and MaxBackoff bound the retry delay after 0xC4 or a
	// transport error (defaults 50 ms, 2 s).
	MinBackoff, MaxBackoff time.Duration
	// Window is how many complete messages are served at once (default 8):
	// the loop goes on reading Queue 1 (OEM 0x07, see internal/oem) while
	// up to Window requests run, and acknowledges each one's completing
	// record once its answers are in Queue 2. 1 serves one at a time. A
	// BMC without 0x07 (0xC1) is read one message at a time with 0x02.
	Window int
	// AckDelay is how long the acknowledgement of an answered message
	// waits to ride on the next read of Queue 1 (the next request's
	// attention) before a read of its own carries it (default 100 ms; a
	// negative value: at once). Back-to-back requests then cost no read
	// of their own for it, and that read no longer holds up the next
	// request's attention on the KCS interface. The record stays in Queue
	// 1 meanwhile; an agent that dies then reads it again after its
	// restart, and the journal answers it.
	AckDelay    time.Duration
	Reassembler record.ReassemblerConfig
	Now         func() time.Time
	Logger      *slog.Logger
}

// Stats counts what a Loop did.
type Stats struct {
	RecordsRead, RecordsBad        uint64
	Messages, Answers              uint64
	RecordsWritten, FullRetries    uint64
	ReadErrors, WriteErrors, Wakes uint64
	AnswersDropped                 uint64
	// AlertsDropped counts the Alerts of answers not written: AlertWriters
	// were busy, or the write failed in time.
	AlertsDropped uint64
	// PeakInFlight is the most messages served at once.
	PeakInFlight int
}

// Loop is the OOB-I channel over one system interface connection.
type Loop struct {
	cfg Config
	log *slog.Logger
	ra  *record.Reassembler

	// The window (loop goroutine only, but finished).
	serial   bool                    // the BMC has no 0x07: one message at a time
	rewind   bool                    // the next window read starts at the oldest record
	acks     []oem.Ack               // owed to the BMC, carried one per read
	held     map[record.Key]struct{} // completing records of messages being served
	finished chan record.Key         // a served message's completing record
	running  sync.WaitGroup
	peak     atomic.Int64 // most messages served at once
	inFlight atomic.Int64

	recordsRead, recordsBad, messages, answers atomic.Uint64
	recordsWritten, fullRetries                atomic.Uint64
	readErrors, writeErrors, wakes             atomic.Uint64
	answersDropped                             atomic.Uint64
	lastOK                                     atomic.Bool

	alertWriters  chan struct{} // Alerts of answers being written (alerts.go)
	alertsDropped atomic.Uint64
}

// New returns a Loop.
func New(cfg Config) *Loop {
	if cfg.IANA == 0 {
		cfg.IANA = oem.DefaultIANA
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 5 * time.Second
	}
	if cfg.AnswerTimeout <= 0 {
		cfg.AnswerTimeout = 30 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 50 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(2*time.Second, cfg.MinBackoff)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Window <= 0 {
		cfg.Window = 8
	}
	if cfg.AckDelay == 0 {
		cfg.AckDelay = 100 * time.Millisecond
	}
	return &Loop{cfg: cfg, log: cfg.Logger, ra: record.NewReassembler(cfg.Reassembler),
		held: map[record.Key]struct{}{}, finished: make(chan record.Key, cfg.Window), rewind: true,
		alertWriters: make(chan struct{}, AlertWriters)}
}

// Stats returns the counters.
func (l *Loop) Stats() Stats {
	return Stats{RecordsRead: l.recordsRead.Load(), RecordsBad: l.recordsBad.Load(),
		Messages: l.messages.Load(), Answers: l.answers.Load(),
		RecordsWritten: l.recordsWritten.Load(), FullRetries: l.fullRetries.Load(),
		ReadErrors: l.readErrors.Load(), WriteErrors: l.writeErrors.Load(), Wakes: l.wakes.Load(),
		AnswersDropped: l.answersDropped.Load(), AlertsDropped: l.alertsDropped.Load(), PeakInFlight: int(l.peak.Load())}
}

// Probe reads the queue status once (to report the channel at start-up).
func (l *Loop) Probe(ctx context.Context) (q1, q2 oem.QueueStatus, err error) {
	data, _ := (&oem.GetQueueStatusRequest{IANA: l.cfg.IANA}).Pack()
	resp, err := l.call(ctx, oem.CmdGetQueueStatus, data)
	if err != nil {
		return q1, q2, err
	}
	var r oem.GetQueueStatusResponse
	if err := r.Unpack(resp); err != nil {
		return q1, q2, err
	}
	return r.Queue1, r.Queue2, nil
}

func (l *Loop) call(ctx context.Context, cmd oem.Cmd, data []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
	defer cancel()
	resp, cc, err := l.cfg.Conn.Do(ctx, uint8(oem.NetFnOEMGroupRequest), uint8(cmd), data)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", cmd, err)
	}
	if err := oem.Check(cmd, oem.CompletionCode(cc)); err != nil {
		return nil, err
	}
	return resp, nil
}

// Run serves Queue 1 until ctx ends; it returns nil then. Errors of the
// BMC connection are logged and retried, never fatal.
func (l *Loop) Run(ctx context.Context) error {
	notify := l.cfg.Conn.Notify() // nil: poll only
	timer := time.NewTimer(0)
	defer timer.Stop()
	ackTimer := time.NewTimer(time.Hour) // armed while acknowledgements wait for a read
	ackTimer.Stop()
	ackArmed := false
	defer ackTimer.Stop()
	defer l.running.Wait() // messages being served end with ctx; their records stay unacknowledged
	var ack *oem.Ack
	backoff := l.cfg.MinBackoff
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-notify:
			l.wakes.Add(1)
		case k := <-l.finished:
			l.acks = append(l.acks, oem.Ack{MsgID: k.MsgID, Index: k.Index})
			if l.cfg.AckDelay > 0 && !l.serial && int(l.inFlight.Load()) < l.cfg.Window {
				// Ride on the next read (the next request's attention),
				// or read for it once AckDelay is over.
				if !ackArmed {
					ackTimer.Reset(l.cfg.AckDelay)
					ackArmed = true
				}
				continue
			}
		case <-ackTimer.C:
			ackArmed = false
		case <-timer.C:
		}
		if ackArmed { // this read carries them
			ackTimer.Stop()
			ackArmed = false
		}
		l.ra.Expire(l.cfg.Now())
		wait := l.cfg.PollInterval
		var err error
		if l.serial {
			ack, err = l.drain(ctx, ack)
		} else {
			err = l.drainWindow(ctx)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			l.readErrors.Add(1)
			if l.lastOK.Swap(false) || backoff == l.cfg.MinBackoff {
				l.log.Warn("cannot read Queue 1 from the BMC; retrying", "err", err, "retry_in", backoff)
			}
			wait = min(backoff, l.cfg.PollInterval)
			backoff = min(2*backoff, l.cfg.MaxBackoff)
		default:
			if !l.lastOK.Swap(true) {
				l.log.Info("reading Queue 1 from the BMC")
			}
			backoff = l.cfg.MinBackoff
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// drainWindow reads Queue 1 with OEM 0x07 until nothing new is there (or
// the window is full), handing each complete message to a goroutine and
// carrying the acknowledgements owed, one per read: a fragment's at once,
// a message's completing record once its answers are in Queue 2 (so a
// request whose agent dies before answering is read again after the
// restart). A BMC that does not know 0x07 switches the loop to drain.
func (l *Loop) drainWindow(ctx context.Context) error {
	for {
	collect: // what finished meanwhile
		for {
			select {
			case k := <-l.finished:
				l.acks = append(l.acks, oem.Ack{MsgID: k.MsgID, Index: k.Index})
			default:
				break collect
			}
		}
		var ack *oem.Ack
		if len(l.acks) > 0 {
			ack = &l.acks[0]
		} else if int(l.inFlight.Load()) >= l.cfg.Window {
			return nil // full: Run waits for a message to finish
		}
		req := oem.ReadQueue1WindowRequest{IANA: l.cfg.IANA, Ack: ack}
		if l.rewind {
			req.Flags = oem.WindowRewind
		}
		data, err := req.Pack()
		if err != nil {
			return err
		}
		resp, err := l.call(ctx, oem.CmdReadQueue1Win, data)
		if err != nil {
			var oe *oem.Error
			if errors.As(err, &oe) && oe.Code == oem.CCInvalidCommand {
				l.log.Info("the BMC has no windowed Queue 1 read (OEM 0x07); serving one message at a time")
				l.serial = true
				return nil
			}
			l.rewind = true // the answer may be lost with its record: read again from the oldest
			return err
		}
		l.rewind = false
		if ack != nil {
			delete(l.held, record.Key{MsgID: ack.MsgID, Index: ack.Index})
			l.acks = l.acks[1:]
		}
		var r oem.ReadQueueResponse
		if err := r.Unpack(resp); err != nil {
			l.recordsBad.Add(1)
			l.rewind = true
			return fmt.Errorf("unreadable Queue 1 response (% x): %w", head(resp), err)
		}
		if r.Empty {
			if len(l.acks) > 0 {
				continue
			}
			return nil
		}
		rec := r.Record
		k := rec.Key()
		if _, ok := l.held[k]; ok {
			continue // read again after a rewind while its message is served
		}
		l.recordsRead.Add(1)
		msg, done, err := l.ra.Add(rec, l.cfg.Now())
		if err != nil {
			l.recordsBad.Add(1)
			l.log.Warn("stray or garbled record in Queue 1 skipped", "record", rec.String(), "err", err)
		}
		if !done {
			l.acks = append(l.acks, oem.Ack{MsgID: k.MsgID, Index: k.Index})
			continue
		}
		l.messages.Add(1)
		if rec.Requester == 0 {
			// A version 1 request: an older VMS, one request at a time,
			// reading its answers from the shared alert log in order. Serve
			// it here, as before the window existed.
			l.answer(ctx, l.runner(ctx, msg), len(msg), 0)
			if err := ctx.Err(); err != nil {
				return err // shutting down mid-message: read again after the restart
			}
			l.acks = append(l.acks, oem.Ack{MsgID: k.MsgID, Index: k.Index})
			continue
		}
		l.held[k] = struct{}{}
		l.serve(ctx, msg, rec.Requester, k)
	}
}

// runner puts env in line (when the handler can prepare) and returns what
// serves it.
func (l *Loop) runner(ctx context.Context, env []byte) func(context.Context) ([][]byte, error) {
	switch p := l.cfg.Handler.(type) {
	case Preparer:
		return p.Prepare(ctx, env, agent.ViaOOB)
	case jobPreparer:
		return p.Prepare(ctx, env, agent.ViaOOB).Run
	}
	return func(ctx context.Context) ([][]byte, error) {
		return l.cfg.Handler.HandleEnvelope(ctx, env, agent.ViaOOB)
	}
}

// serve hands one complete message to the handler in a goroutine; the
// message takes its place in line (per VM, arrival order) here, before the
// goroutine starts, when the handler can prepare (agent.Agent).
func (l *Loop) serve(ctx context.Context, env []byte, requester uint32, k record.Key) {
	run := l.runner(ctx, env)
	n := l.inFlight.Add(1)
	for {
		old := l.peak.Load()
		if n <= old || l.peak.CompareAndSwap(old, n) {
			break
		}
	}
	l.running.Add(1)
	go func() {
		defer l.running.Done()
		defer l.inFlight.Add(-1)
		l.answer(ctx, run, len(env), requester)
		if ctx.Err() != nil {
			return // shutting down: leave it unacknowledged, read again after the restart
		}
		l.finished <- k // never blocks: at most Window messages are served
	}()
}

// drain reads Queue 1 until it is empty, acknowledging as it goes, and
// returns the ack still owed (nil once the BMC took it).
func (l *Loop) drain(ctx context.Context, ack *oem.Ack) (*oem.Ack, error) {
	for {
		data, err := (&oem.ReadQueueRequest{IANA: l.cfg.IANA, Ack: ack}).Pack()
		if err != nil {
			return ack, err
		}
		resp, err := l.call(ctx, oem.CmdReadQueue1, data)
		if err != nil {
			return ack, err
		}
		var r oem.ReadQueueResponse
		if err := r.Unpack(resp); err != nil {
			// Without the record's key there is nothing to acknowledge; the
			// BMC keeps answering the same head. Only the BMC can fix this.
			l.recordsBad.Add(1)
			return ack, fmt.Errorf("unreadable Queue 1 response (% x): %w", head(resp), err)
		}
		if r.Empty {
			return nil, nil
		}
		rec := r.Record
		ack = &oem.Ack{MsgID: rec.MsgID, Index: rec.Index}
		l.recordsRead.Add(1)
		msg, done, err := l.ra.Add(rec, l.cfg.Now())
		if err != nil {
			l.recordsBad.Add(1)
			l.log.Warn("stray or garbled record in Queue 1 skipped", "record", rec.String(), "err", err)
			continue
		}
		if done {
			l.messages.Add(1)
			l.handle(ctx, msg, rec.Requester)
			if err := ctx.Err(); err != nil {
				// Shutting down mid-message: leave the record unacknowledged
				// so the next start reads it again.
				return ack, err
			}
		}
	}
}

// handle serves one envelope; its answers are addressed to requester, the
// requester id the request's records carried (0 for a version 1 request:
// then the answers go to the alert log, which every reader may read, as
// before requester ids existed).
func (l *Loop) handle(ctx context.Context, env []byte, requester uint32) {
	l.answer(ctx, func(ctx context.Context) ([][]byte, error) {
		return l.cfg.Handler.HandleEnvelope(ctx, env, agent.ViaOOB)
	}, len(env), requester)
}

// answer runs one message and writes its answers to Queue 2.
func (l *Loop) answer(ctx context.Context, run func(context.Context) ([][]byte, error), size int, requester uint32) {
	out, err := run(ctx)
	if err != nil {
		l.log.Debug("envelope from Queue 1 not answered", "len", size, "err", err)
	}
	for _, a := range out {
		if isAlert(a) {
			l.sendAlert(ctx, a)
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, l.cfg.AnswerTimeout)
		err := l.sendTo(sctx, requester, a)
		cancel()
		if err != nil {
			n := l.answersDropped.Add(1)
			l.log.Error("answer dropped: could not write it to Queue 2 in time; the VMS must ask again with the same request id (the journal answers it)",
				"len", len(a), "err", err, "timeout", l.cfg.AnswerTimeout, "dropped_total", n)
			continue
		}
		l.answers.Add(1)
	}
}

// Send fragments env and writes it to Queue 2 for every reader (the alert
// log), retrying a full queue or a broken connection until ctx ends.
func (l *Loop) Send(ctx context.Context, env []byte) error { return l.sendTo(ctx, 0, env) }

// sendTo is Send with the records addressed to requester (0: every reader).
// An Alert (the seal header's kind, in clear) always goes to every reader,
// also when it is part of an answer: every following VMS must see it.
func (l *Loop) sendTo(ctx context.Context, requester uint32, env []byte) error {
	id := uint64(0)
	if h, _, err := seal.ParseHeader(env); err == nil {
		id = h.MsgID
		if h.Kind == vmsg.KindAlert {
			requester = 0
		}
	}
	if id == 0 {
		id = uint64(time.Now().UnixNano())
	}
	recs, err := record.FragmentFor(requester, id, env)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := l.write(ctx, r); err != nil {
			return fmt.Errorf("record %d/%d of message %#x: %w", r.Index+1, r.Count, id, err)
		}
	}
	return nil
}

func (l *Loop) write(ctx context.Context, r record.Record) error {
	data, err := (&oem.WriteQueueRequest{IANA: l.cfg.IANA, Record: r}).Pack()
	if err != nil {
		return err
	}
	backoff := l.cfg.MinBackoff
	for attempt := 0; ; attempt++ {
		_, err := l.call(ctx, oem.CmdWriteQueue2, data)
		if err == nil {
			l.recordsWritten.Add(1)
			return nil
		}
		var oe *oem.Error
		switch {
		case errors.As(err, &oe) && oe.Code == oem.CCOutOfSpace:
			l.fullRetries.Add(1)
			if attempt == 0 || attempt%20 == 0 {
				l.log.Warn("Queue 2 is full; the VMS is not reading it. Holding the answer and retrying", "attempt", attempt+1, "retry_in", backoff)
			}
		case errors.As(err, &oe) && oe.Code.Transient():
			// The BMC is not there for now (QEMU answers 0xD2 while bmcsim
			// restarts): the answer is held and written once it is back.
			l.writeErrors.Add(1)
			if attempt == 0 || attempt%20 == 0 {
				l.log.Warn("write to Queue 2 failed: the BMC is busy or not connected; holding the answer and retrying", "err", err, "retry_in", backoff)
			}
		case errors.As(err, &oe):
			return err // the BMC refuses this record: retrying will not help
		default:
			l.writeErrors.Add(1)
			l.log.Warn("write to Queue 2 failed; retrying", "err", err, "retry_in", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, l.cfg.MaxBackoff)
	}
}

func head(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

// SELSink adds one SEL entry per alert through the system interface.
type SELSink struct {
	Conn sysif.Conn
	IANA oem.IANA // default oem.DefaultIANA
	Now  func() time.Time
}

var _ alert.Sink = (*SELSink)(nil)

// SELRecord is the 16-byte SEL record for a (oem.SELAlert; see the package doc).
func SELRecord(a alert.Alert, iana oem.IANA, now time.Time) [16]byte {
	sa := oem.SELAlert{Class: oem.AlertClass(agent.Class(a)), RequestID: uint32(a.RequestID)}
	if c, err := vmsg.ParseCommand(a.Action); err == nil {
		sa.Command = byte(c)
	}
	return sa.Record(iana, uint32(now.Unix()))
}

// Send adds the entry.
func (s *SELSink) Send(ctx context.Context, a alert.Alert) error {
	iana := s.IANA
	if iana == 0 {
		iana = oem.DefaultIANA
	}
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	rec := SELRecord(a, iana, now)
	if _, err := sysif.Call(ctx, s.Conn, 0x0A, 0x44, rec[:]); err != nil {
		return fmt.Errorf("add SEL entry: %w", err)
	}
	return nil
}

// Queue2Sink writes a sealed Alert message to Queue 2.
type Queue2Sink struct {
	Loop *Loop
	Seal func(alert.Alert) ([]byte, error) // agent.Agent.SealAlert
}

var _ alert.Sink = (*Queue2Sink)(nil)

// Send seals a and writes it.
func (s *Queue2Sink) Send(ctx context.Context, a alert.Alert) error {
	env, err := s.Seal(a)
	if err != nil {
		return err
	}
	return s.Loop.Send(ctx, env)
}

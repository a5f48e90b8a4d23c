package client

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
)

// Sentinel errors, found with errors.Is.
//
// What a failed command tells about its request is one of three things,
// and the error says which:
//
//   - not delivered (ErrNotDelivered, and ErrUnreachable when no channel
//     delivered it): no channel handed the request over, so the host
//     cannot have it and running the command again is safe;
//   - delivered, no final answer (ErrNoAnswer on a channel,
//     *OutcomeUnknownError from the Client): a BMC accepted every record of
//     the request into queue 1, or the whole request frame was written on
//     an established VMM-I TLS connection, or a channel cannot tell that it
//     was not (a record write whose answer was lost); the host may have run
//     it, so look the outcome up (vmsctl result HOST REQUEST-ID) instead of
//     running the command again;
//   - answered: a Reply (refusals are *ReplyError).
var (
	// ErrUnreachable: no channel delivered the request.
	ErrUnreachable = errors.New("host unreachable on every channel")
	// ErrUnauthorized: a channel refused our credentials (BMC user, privilege),
	// or the agent's authorization list refused the request (ReplyError).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotDelivered wraps a channel failure that happened before the
	// request was handed over (no connection, no session, the BMC refused
	// or never took a record, a frame not written in full): the agent
	// cannot have it from this attempt.
	ErrNotDelivered = errors.New("request not delivered")
	// ErrNoAnswer wraps a channel failure after the request was handed
	// over (the BMC accepted its records, or its frame was written on the
	// VMM-I connection) and before its answer came.
	ErrNoAnswer = errors.New("delivered")
	// ErrOutcomeUnknown: the host has (or may have) the request and gave no
	// final answer; see OutcomeUnknownError.
	ErrOutcomeUnknown = errors.New("outcome unknown")
	// ErrChallengeFailed: the ChallengeFunc failed or the agent refused the answer.
	ErrChallengeFailed = errors.New("challenge failed")
)

// OutcomeUnknownError is a command whose request reached the host, or may
// have, and got no final answer before the deadline: the host journals the
// outcome under RequestID, and vmsctl result HOST REQUEST-ID (a history
// query, Client.Lookup) reads it.
type OutcomeUnknownError struct {
	// InProgress is true when the host said the request was still running.
	InProgress bool
	// Err is the channels' last error.
	Err error
}

func (e *OutcomeUnknownError) Error() string {
	switch {
	case e.InProgress:
		return "outcome unknown: still running on the host at the deadline"
	case e.Err == nil:
		return "outcome unknown"
	}
	return "outcome unknown: " + e.Err.Error()
}

func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrOutcomeUnknown) true.
func (e *OutcomeUnknownError) Is(target error) bool { return target == ErrOutcomeUnknown }

// RequestError is a failed command with its host and request id, so every
// error line names the request: "h1: request 00c0ffee00c0ffee: …".
type RequestError struct {
	Host      string
	RequestID uint64
	Err       error
}

func (e *RequestError) Error() string {
	msg := fmt.Sprintf("%s: request %016x: %v", e.Host, e.RequestID, e.Err)
	if errors.Is(e.Err, ErrOutcomeUnknown) {
		msg += "; look it up with: " + LookupHint(e.Host, e.RequestID)
	}
	return msg
}

func (e *RequestError) Unwrap() error { return e.Err }

// LookupHint is what an operator runs to read a request's journalled
// outcome.
func LookupHint(host string, id uint64) string {
	return fmt.Sprintf("vmsctl result %s %016x", host, id)
}

// ReplyError is a Reply whose ok is false; find it with errors.As.
type ReplyError struct {
	Code vmsg.ErrorCode
	Text string
	// Via and Latency tell which channel carried the refusal.
	Via     string
	Latency time.Duration
}

// Error says what happened once: "denied: no rule allows …", "challenge
// failed: wrong code", "no such VM", "failed on the host: …", "outcome
// unknown: …" — the agent's text without the words the code already says.
func (e *ReplyError) Error() string {
	head := replyHead(e.Code)
	text := trimSaid(e.Text, head, e.Code.String())
	if e.Code == vmsg.ErrInterrupted {
		// hvagent's text says the head again ("… its outcome is unknown;
		// it was not run again"); keep only why the state is missing.
		text = ""
		if i := strings.Index(e.Text, "(state unavailable"); i >= 0 {
			text = e.Text[i:]
		}
	}
	if text == "" {
		return head
	}
	return head + ": " + text
}

// replyHead is the first words of a ReplyError: what happened.
func replyHead(c vmsg.ErrorCode) string {
	switch c {
	case vmsg.ErrDenied:
		return "denied"
	case vmsg.ErrChallengeNo, vmsg.ErrChallenge:
		return "challenge failed"
	case vmsg.ErrNoSuchVM:
		return "no such VM"
	case vmsg.ErrHypervisor, vmsg.ErrInternal:
		return "failed on the host"
	case vmsg.ErrInterrupted:
		return "outcome unknown: interrupted by an agent restart, not run again"
	case vmsg.ErrInProgress:
		return "still running"
	case vmsg.ErrStale:
		return "refused as stale"
	case vmsg.ErrBadRequest:
		return "bad request"
	case vmsg.ErrClockSkew: // not a refusal of the request: of the clocks
		return "clock skew"
	}
	return "agent refused: " + c.String()
}

// saidPrefixes are leading words of the agent's texts that repeat what the
// head says (hvagent's refusal reasons, Go package prefixes).
var saidPrefixes = []string{"denied", "challenge refused", "challenge", "virt", "agent"}

// trimSaid drops the leading "x: " segments of text that repeat the head,
// the code's name or a refusal reason, and all of text when what is left
// says the head again ("virt: no such VM" under "no such VM").
func trimSaid(text, head, code string) string {
	for {
		k, rest, ok := strings.Cut(text, ": ")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		said := k == strings.ToLower(head) || k == strings.ToLower(code)
		for _, p := range saidPrefixes {
			said = said || k == p
		}
		if !said {
			break
		}
		text = rest
	}
	if strings.EqualFold(strings.TrimSpace(text), head) {
		return ""
	}
	return text
}

// Is makes errors.Is(err, ErrChallengeFailed) true for a refused answer.
func (e *ReplyError) Is(target error) bool {
	switch target {
	case ErrChallengeFailed:
		return e.Code == vmsg.ErrChallengeNo
	case ErrUnauthorized:
		return e.Code == vmsg.ErrDenied // the agent's authorization list refused it
	case ErrOutcomeUnknown:
		return e.Code == vmsg.ErrInterrupted
	}
	return false
}

package redfish

import (
	"encoding/binary"
	"encoding/json"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ooblab/ooblab/internal/record"
)

// broker fans events out to the SSE streams. A stream that falls
// sseBuffer events behind is closed, so a slow reader never holds the BMC
// back nor grows its memory; its client reconnects with Last-Event-ID and
// gets what it missed from the last sseHistory events.
type broker struct {
	mu   sync.Mutex
	subs map[chan []byte]*stream
	// next is the last event id: ids grow across restarts (they start at
	// the process's start time in µs), so a Last-Event-ID from before a
	// restart names no event of this process and gets the whole history.
	next uint64
	now  func() time.Time
	// sink, when set, also gets every event (the subscriptions' delivery).
	sink func(id string, rec eventRecord, ev map[string]any)
	// hist holds the last sseHistory events, from the first stream on (a
	// BMC nobody streams from keeps none: a fleet's memory).
	hist []sent
}

// sent is an event as the streams got it, for a replay.
type sent struct {
	id    uint64
	rec   eventRecord
	frame []byte
	owned []byte // the frame with rec.oem, for rec.owner's streams (nil: none)
}

// maxStreams bounds the SSE streams open at once.
const maxStreams = 16

// sseBuffer is how far a stream may fall behind; sseHistory how many
// events a reconnecting stream can get back (~1 KiB each, kept only by a
// BMC that has had a stream).
const (
	sseBuffer  = 256
	sseHistory = 128
)

func newBroker(now func() time.Time) *broker {
	return &broker{subs: map[chan []byte]*stream{}, now: now, next: uint64(now().UnixMicro())}
}

// stream is one open SSE stream: its $filter, and the user whose Queue 2
// records it may carry ("" when it may carry none).
type stream struct {
	filter *eventFilter
	owner  string
}

// subscribe opens a stream, or returns nil when maxStreams are open.
// With lastID (the client's Last-Event-ID, "" for none) the stream starts
// with the kept events after it that it would have got: after an id this
// process never gave out (a restart, or older than the history), all of
// them. replayed counts them.
func (b *broker) subscribe(st *stream, lastID string) (ch chan []byte, replayed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.subs) >= maxStreams {
		return nil, 0
	}
	if b.hist == nil {
		b.hist = make([]sent, 0, 16)
	}
	ch = make(chan []byte, sseBuffer)
	if lastID != "" {
		after, err := strconv.ParseUint(lastID, 10, 64)
		if err != nil || after > b.next || (len(b.hist) > 0 && after < b.hist[0].id-1) {
			after = 0 // not ours, or older than what is kept: all of it
		}
		for _, e := range b.hist {
			if e.id <= after || !st.filter.match(e.rec) {
				continue
			}
			ch <- st.frame(e) // sseHistory ≤ sseBuffer: never blocks
			replayed++
		}
	}
	b.subs[ch] = st
	return ch, replayed
}

// frame is e as stream st gets it.
func (st *stream) frame(e sent) []byte {
	if e.owned != nil && st.owner == e.rec.owner {
		return e.owned
	}
	return e.frame
}

func (b *broker) unsubscribe(ch chan []byte) {
	b.mu.Lock()
	if _, ok := b.subs[ch]; ok {
		delete(b.subs, ch)
		close(ch)
	}
	b.mu.Unlock()
}

// Subscribers counts the open SSE streams.
func (s *Service) Subscribers() int {
	s.events.mu.Lock()
	defer s.events.mu.Unlock()
	return len(s.events.subs)
}

// eventRecord is one EventRecord of an Event payload (DSP0266 §13).
type eventRecord struct {
	messageID string
	message   string
	args      []string
	severity  string
	origin    string
	// owner and oem: an Oem object that only the streams of BMC user
	// owner get (a Queue 2 record, for its reader's user); every other
	// stream and the subscriptions get the event without it.
	owner string
	oem   map[string]any
}

// publish sends one Event with rec to every stream.
func (b *broker) publish(rec eventRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.subs) == 0 && b.sink == nil && b.hist == nil {
		return
	}
	b.next++
	id := strconv.FormatUint(b.next, 10)
	if rec.args == nil {
		rec.args = []string{}
	}
	er := map[string]any{
		"EventId":           id,
		"EventTimestamp":    b.now().UTC().Format(time.RFC3339),
		"MessageId":         rec.messageID,
		"Message":           rec.message,
		"MessageArgs":       rec.args,
		"MessageSeverity":   rec.severity,
		"OriginOfCondition": odataID(rec.origin),
	}
	ev := map[string]any{
		"@odata.type": "#Event.v1_9_0.Event",
		"Id":          id,
		"Name":        "Event",
		"Context":     "",
		"Events":      []any{er},
	}
	if b.sink != nil {
		b.sink(id, rec, ev)
	}
	if b.hist == nil {
		return // no stream was ever opened
	}
	e := sent{id: b.next, rec: rec, frame: sseFrame(id, ev)}
	if rec.oem != nil && rec.owner != "" { // copies: the sink may still hold ev
		er2 := maps.Clone(er)
		er2["Oem"] = rec.oem
		ev2 := maps.Clone(ev)
		ev2["Events"] = []any{er2}
		e.owned = sseFrame(id, ev2)
	}
	e.rec.oem = nil // the frames hold it
	if len(b.hist) == sseHistory {
		b.hist = append(b.hist[:0], b.hist[1:]...)
	}
	b.hist = append(b.hist, e)
	for ch, st := range b.subs {
		if !st.filter.match(rec) {
			continue
		}
		select {
		case ch <- st.frame(e):
		default: // too far behind: close it
			delete(b.subs, ch)
			close(ch)
		}
	}
}

func sseFrame(id string, ev map[string]any) []byte {
	data, _ := json.Marshal(ev)
	return []byte("id: " + id + "\ndata: " + string(data) + "\n\n")
}

// powerEvent publishes the power change a reset made.
func (s *Service) powerEvent(rt ResetType, before, after bool) {
	s.power.observe(after) // the watcher must not report it again
	key := "ResourcePowerStateChanged"
	switch {
	case !before && after:
		key = "ResourcePoweredOn"
	case before && !after:
		key = "ResourcePoweredOff"
	}
	s.events.publish(eventRecord{messageID: "ResourceEvent.1.3." + key, severity: "OK", origin: systemURI,
		message: "The power state of resource '" + systemURI + "' is " + powerState(after) + " after " + string(rt) + ".",
		args:    []string{systemURI, powerState(after), string(rt)}})
}

// NotifySEL publishes a new SEL record (the BMC calls it from its SEL's
// add hook: hvagent's alerts arrive this way over KCS).
func (s *Service) NotifySEL(rec [16]byte, iana uint32) {
	e := logEntry(rec, iana)
	id := strconv.Itoa(int(binary.LittleEndian.Uint16(rec[0:2])))
	msg, _ := e["Message"].(string)
	sev, _ := e["Severity"].(string)
	s.events.publish(eventRecord{messageID: "ResourceEvent.1.3.ResourceCreated", severity: sev,
		origin: selURI + "/Entries/" + id, message: "SEL entry " + id + ": " + msg, args: []string{id, msg}})
}

// NotifyQueue2 publishes that rec landed in Queue 2 for its requester
// (0: the alert log), so a VMS waits on a push instead of polling Read
// Queue 2 For; filter on MessageId eq 'Ooblab.1.0.Queue2Record'. The
// requester id is in the record's clear header anyway. A record addressed
// to a reader (owned by BMC user owner) also travels in the event, as
// Oem.Ooblab.Record (its bytes as Read Queue 2 For returns them, base64),
// on the streams of owner only: the user who may read it anyway, so the
// VMS has its answer without one more exchange and acknowledges it with
// its next read. Every other stream, and every subscription, gets the
// event without the record.
func (s *Service) NotifyQueue2(rec record.Record, owner string) {
	id := "0x" + strconv.FormatUint(uint64(rec.Requester), 16)
	ev := eventRecord{messageID: "Ooblab.1.0.Queue2Record", severity: "OK", origin: managerURI,
		message: "Queue 2 holds a new record for requester " + id + ".", args: []string{id}}
	if rec.Requester != 0 && owner != "" {
		if b, err := rec.AppendBinary(nil); err == nil {
			ev.owner = owner
			ev.oem = map[string]any{"Ooblab": map[string]any{
				"@odata.type": "#OoblabEvent.v1_0_0.OoblabEvent",
				"Record":      b,
			}}
		}
	}
	s.events.publish(ev)
}

// NotifyPower publishes a power change seen outside Redfish (the guest's
// system interface came or went), unless the watcher already saw it.
func (s *Service) NotifyPower(on bool) {
	s.power.mu.Lock()
	same := s.power.known && s.power.on == on
	s.power.known, s.power.on = true, on
	s.power.mu.Unlock()
	if same {
		return
	}
	s.publishPower(on)
}

func (s *Service) publishPower(on bool) {
	key := "ResourcePoweredOff"
	if on {
		key = "ResourcePoweredOn"
	}
	s.events.publish(eventRecord{messageID: "ResourceEvent.1.3." + key, severity: "OK", origin: systemURI,
		message: "The power state of resource '" + systemURI + "' is " + powerState(on) + ".",
		args:    []string{systemURI, powerState(on)}})
}

func (s *Service) eventService() map[string]any {
	retries, interval := s.subs.settings()
	return map[string]any{
		"@odata.id":                    v1 + "/EventService",
		"@odata.type":                  "#EventService.v1_10_0.EventService",
		"Id":                           "EventService",
		"Name":                         "Event Service",
		"ServiceEnabled":               true,
		"ServerSentEventUri":           sseURI,
		"DeliveryRetryAttempts":        retries,
		"DeliveryRetryIntervalSeconds": int(interval / time.Second),
		"EventFormatTypes":             []string{"Event"},
		"RegistryPrefixes":             []string{"ResourceEvent", "Ooblab"},
		"SSEFilterPropertiesSupported": map[string]any{"MessageId": true, "RegistryPrefix": true, "OriginResource": true},
		"Subscriptions":                odataID(subsURI),
		"Actions": map[string]any{"#EventService.SubmitTestEvent": map[string]any{
			"target": v1 + "/EventService/Actions/EventService.SubmitTestEvent",
		}},
		"Status": map[string]any{"State": "Enabled", "Health": "OK"},
	}
}

func (s *Service) getEventService(w http.ResponseWriter, r *http.Request, _ *caller) {
	writeResource(w, r, http.StatusOK, s.eventService())
}

// sseKeepAlive is how often an idle stream gets a comment line, so proxies
// and clients see it alive.
const sseKeepAlive = 15 * time.Second

func (s *Service) getSSE(w http.ResponseWriter, r *http.Request, c *caller) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, errInternal(errNoFlush))
		return
	}
	f, aerr := parseFilter(r.URL.Query().Get("$filter"))
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	st := &stream{filter: f}
	least := RoleReadOnly
	if c.role.rank() >= RoleOperator.rank() {
		st.owner = c.user // an operator may own Queue 2 readers
		least = RoleOperator
	}
	// The stream outlives its credentials' check: it ends when they no
	// longer hold (with the rights it was opened with), before a frame,
	// which may carry its user's Queue 2 record, goes out.
	holds := s.stillHolds(r, c, least)
	ch, replayed := s.events.subscribe(st, r.Header.Get("Last-Event-ID"))
	if ch != nil {
		s.watchPower(r.Context())
	}
	if ch == nil {
		writeError(w, newError(http.StatusServiceUnavailable, "ServiceTemporarilyUnavailable",
			"The service is temporarily unavailable: "+itoa(maxStreams)+" event streams are open."))
		return
	}
	defer s.events.unsubscribe(ch)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(": bmcsim event stream\n\n"))
	fl.Flush()
	s.log.Info("redfish SSE stream opened", "user", c.user, "source", sourceIP(r), "replayed", replayed)
	tick := time.NewTicker(sseKeepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case frame, ok := <-ch:
			if !ok {
				return // fell behind
			}
			if !holds() {
				s.log.Info("redfish SSE stream closed: its credentials no longer hold", "user", c.user, "source", sourceIP(r))
				return
			}
			if _, err := w.Write(frame); err != nil {
				return
			}
			fl.Flush()
		case <-tick.C:
			if !holds() {
				s.log.Info("redfish SSE stream closed: its credentials no longer hold", "user", c.user, "source", sourceIP(r))
				return
			}
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

type constError string

func (e constError) Error() string { return string(e) }

const errNoFlush = constError("the connection cannot stream")

// testEventRequest is the body of EventService.SubmitTestEvent (every
// parameter optional).
type testEventRequest struct {
	EventGroupId      *int64
	EventId           *string
	EventTimestamp    *string
	EventType         *string
	Message           *string
	MessageArgs       []string
	MessageId         *string
	OriginOfCondition *string
	Severity          *string
}

func (s *Service) postTestEvent(w http.ResponseWriter, r *http.Request, c *caller) {
	body, aerr := readBody(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var req testEventRequest
	if len(body) > 0 {
		if aerr := decodeJSON(body, &req); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	str := func(p *string, def string) string {
		if p == nil {
			return def
		}
		return *p
	}
	s.events.publish(eventRecord{
		messageID: str(req.MessageId, "ResourceEvent.1.3.ResourceChanged"),
		message:   str(req.Message, "Test event"),
		args:      req.MessageArgs,
		severity:  str(req.Severity, "OK"),
		origin:    str(req.OriginOfCondition, v1+"/EventService"),
	})
	s.log.Info("redfish test event submitted", "user", c.user)
	w.WriteHeader(http.StatusNoContent)
}

package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stmcginnis/gofish"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
)

// OOB-I transports (OOBOptions.Transport).
const (
	TransportIPMI    = "ipmi"    // OEM commands over RMCP+ (default: the paper's path)
	TransportRedfish = "redfish" // the same commands as the BMC Manager's OEM action over HTTPS
)

// ViaOOBRedfish is Answer.Via for the OOB-I over Redfish.
const ViaOOBRedfish = ViaOOB + " (redfish)"

// queueActionPath is the BMC's OEM action that runs one queue command
// (docs/oob-i.md, "The OOB-I over Redfish").
const queueActionPath = "/redfish/v1/Managers/1/Actions/Oem/OoblabManager.QueueCommand"

// redfishConns holds one gofish client per host.
type redfishConns struct {
	mu    sync.Mutex
	c     map[string]*gofish.APIClient
	users map[string][2]string // host → user, password (the push stream's Basic auth)
	push  map[string]*redfishPush
}

func (r *redfishConns) creds(host string) (string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u := r.users[host]
	return u[0], u[1]
}

// redfishClient connects (once per host) to t's BMC Redfish service as the
// inventory's BMC user with HTTP Basic, trusting bmc.redfish_ca_file.
func (o *OOB) redfishClient(ctx context.Context, t *Target) (*gofish.APIClient, error) {
	o.rf.mu.Lock()
	defer o.rf.mu.Unlock()
	if c := o.rf.c[t.Name()]; c != nil {
		return c, nil
	}
	b := t.Host.BMC
	if b.Redfish == "" {
		return nil, fmt.Errorf("%w: host %s: no bmc.redfish in the inventory (--oob-transport redfish)", ErrNotDelivered, t.Name())
	}
	u, err := url.Parse(b.Redfish)
	if err != nil || u.Scheme != "https" {
		return nil, fmt.Errorf("%w: host %s bmc.redfish %q: want an https URL", ErrNotDelivered, t.Name(), b.Redfish)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if b.RedfishCAFile != "" {
		pem, err := os.ReadFile(t.Path(b.RedfishCAFile))
		if err != nil {
			return nil, fmt.Errorf("%w: host %s BMC Redfish CA: %w", ErrNotDelivered, t.Name(), err)
		}
		tlsCfg.RootCAs = x509.NewCertPool()
		if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: host %s BMC Redfish CA %s: no certificate", ErrNotDelivered, t.Name(), b.RedfishCAFile)
		}
	}
	var pass string
	if b.PasswordFile != "" {
		p, err := fileio.ReadSecret(t.Path(b.PasswordFile))
		if err != nil {
			return nil, fmt.Errorf("host %s BMC password: %w", t.Name(), err)
		}
		pass = strings.TrimRight(string(p), "\r\n")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: o.opt.Window,
		ForceAttemptHTTP2: true}, Timeout: redfishTimeout}
	c, err := gofish.ConnectContext(ctx, gofish.ClientConfig{Endpoint: u.Scheme + "://" + u.Host, Username: b.User, Password: pass,
		BasicAuth: true, HTTPClient: hc, NoModifyTransport: true, ReuseConnections: true,
		MaxConcurrentRequests: int64(o.opt.Window) + 1})
	if err != nil {
		return nil, fmt.Errorf("%w: oob-i over Redfish to BMC %s: %w", ErrNotDelivered, b.Redfish, err)
	}
	if o.rf.c == nil {
		o.rf.c = map[string]*gofish.APIClient{}
		o.rf.users = map[string][2]string{}
	}
	o.rf.c[t.Name()] = c
	o.rf.users[t.Name()] = [2]string{b.User, pass}
	return c, nil
}

// rawRedfish is raw over Redfish: one POST of the OEM action; a non-zero
// completion code is an *oem.Error, as over IPMI.
func (o *OOB) rawRedfish(ctx context.Context, t *Target, cmd oem.Cmd, data []byte) ([]byte, error) {
	c, err := o.redfishClient(ctx, t)
	if err != nil {
		return nil, err
	}
	resp, err := c.WithContext(ctx).Post(queueActionPath, map[string]any{"Command": int(cmd), "Data": data})
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return nil, fmt.Errorf("%w: oob-i %s over Redfish to BMC %s: %w", ErrNotDelivered, cmd, t.Host.BMC.Redfish, err)
		}
		if strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "403") {
			return nil, fmt.Errorf("%w: oob-i %s over Redfish to BMC %s: %w", ErrUnauthorized, cmd, t.Host.BMC.Redfish, err)
		}
		return nil, fmt.Errorf("oob-i %s over Redfish to BMC %s: %w", cmd, t.Host.BMC.Redfish, err)
	}
	defer resp.Body.Close()
	var out struct {
		CompletionCode uint8
		Data           []byte
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out); err != nil {
		return nil, fmt.Errorf("oob-i %s over Redfish to BMC %s: answer: %w", cmd, t.Host.BMC.Redfish, err)
	}
	if out.CompletionCode != 0 {
		return nil, &oem.Error{Cmd: cmd, Code: oem.CompletionCode(out.CompletionCode)}
	}
	return out.Data, nil
}

// closeRedfish ends the Redfish clients' idle connections.
func (o *OOB) closeRedfish() {
	o.rf.mu.Lock()
	defer o.rf.mu.Unlock()
	for _, p := range o.rf.push {
		p.once.Do(func() {}) // never start one now
		if p.cancel != nil {
			p.cancel()
		}
	}
	for _, c := range o.rf.c {
		c.HTTPClient.CloseIdleConnections()
	}
	o.rf.c, o.rf.users, o.rf.push = nil, nil, nil
}

// redfishTimeout bounds one HTTPS exchange (the caller's context bounds
// the whole request).
const redfishTimeout = 10 * time.Second

// redfishPush is a host's Queue 2 push: the BMC's SSE stream filtered on
// Ooblab.1.0.Queue2Record. While it is up, the Queue 2 poller waits on it
// (up to PollMax) instead of reading again every PollMin. The BMC puts a
// record addressed to this channel's requester id in its event (for the
// user that owns the reader only): the poller takes it from recs as if
// read, and acknowledges it with its next read.
type redfishPush struct {
	once   sync.Once
	up     atomic.Bool
	wake   chan struct{}      // one pending wake-up: a record to read
	recs   chan record.Record // records pushed to this reader, not yet taken
	cancel context.CancelFunc
	lastID string // the last event id seen: a reconnect asks for what came after (streamPush's goroutine)
}

// pushedRecords bounds the records a push holds for the poller; beyond
// it a push only wakes the poller, which reads the record instead.
const pushedRecords = 64

// push returns t's push, starting its stream on first use.
func (o *OOB) push(t *Target) *redfishPush {
	o.rf.mu.Lock()
	if o.rf.push == nil {
		o.rf.push = map[string]*redfishPush{}
	}
	p := o.rf.push[t.Name()]
	if p == nil {
		p = &redfishPush{wake: make(chan struct{}, 1), recs: make(chan record.Record, pushedRecords)}
		o.rf.push[t.Name()] = p
	}
	o.rf.mu.Unlock()
	p.once.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		p.cancel = cancel
		go o.streamPush(ctx, t, p)
	})
	return p
}

// streamPush keeps t's SSE stream open (reconnecting after a second) until
// ctx ends, waking the poller for each record addressed to this channel's
// requester id or to the alert log.
func (o *OOB) streamPush(ctx context.Context, t *Target, p *redfishPush) {
	for ctx.Err() == nil {
		c, err := o.redfishClient(ctx, t)
		if err == nil {
			err = o.readPush(ctx, t, c, p)
		}
		p.up.Store(false)
		if ctx.Err() != nil {
			return
		}
		o.log.Debug("oob-i redfish: event stream down; polling", "host", t.Name(), "err", err)
		if sleep(ctx, time.Second) != nil {
			return
		}
	}
}

func (o *OOB) readPush(ctx context.Context, t *Target, c *gofish.APIClient, p *redfishPush) error {
	u := strings.TrimSuffix(t.Host.BMC.Redfish, "/") + "/redfish/v1/EventService/SSE?" +
		url.Values{"$filter": {"MessageId eq 'Ooblab.1.0.Queue2Record'"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	user, pass := o.rf.creds(t.Name())
	req.SetBasicAuth(user, pass)
	if p.lastID != "" {
		// The BMC replays what it kept since: records pushed while the
		// stream was down come now, not after a PollMax wait and a read.
		req.Header.Set("Last-Event-ID", p.lastID)
	}
	// The stream outlives the client's per-exchange timeout.
	hc := &http.Client{Transport: c.HTTPClient.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("event stream: HTTP %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<40))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		p.up.Store(true) // the opening comment: subscribed
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			p.lastID = id
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		recs, wake := decodePush([]byte(data), o.opt.Requester)
		for _, r := range recs {
			select {
			case p.recs <- r: // a record wakes the poller by itself
			default: // the poller is behind: it reads this one
				wake = true
			}
		}
		if wake {
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
	}
	return sc.Err()
}

// decodePush reads one SSE event's data (the BMC's bytes): the records it
// carries for requester, and whether it names a record to read instead
// (requester's without the record, or the alert log's). Anything else,
// malformed included, is nothing.
func decodePush(data []byte, requester uint32) (recs []record.Record, wake bool) {
	var ev pushEvent
	if json.Unmarshal(data, &ev) != nil {
		return nil, false
	}
	mine := "0x" + strconv.FormatUint(uint64(requester), 16)
	for _, e := range ev.Events {
		if len(e.MessageArgs) == 0 || (e.MessageArgs[0] != mine && e.MessageArgs[0] != "0x0") {
			continue
		}
		if b := e.Oem.Ooblab.Record; len(b) > 0 && e.MessageArgs[0] == mine {
			if r, err := record.Parse(b); err == nil && r.Requester == requester {
				recs = append(recs, r)
				continue
			}
		}
		wake = true
	}
	return recs, wake
}

// take returns a pushed record if one is there.
func (p *redfishPush) take() (record.Record, bool) {
	select {
	case r := <-p.recs:
		return r, true
	default:
		return record.Record{}, false
	}
}

// pushEvent is what the Queue 2 push reads of an SSE event.
type pushEvent struct {
	Events []struct {
		MessageArgs []string
		Oem         struct {
			Ooblab struct {
				Record []byte // base64 in JSON: a record as Read Queue 2 For returns it
			}
		}
	}
}

// waitQueue2 is the poller's wait between empty reads of Queue 2: over
// Redfish with the push up, until a push or PollMax; else d. A record the
// push carried is returned, to be taken as if read (its acknowledgement
// is then owed: h.pushAcks).
func (o *OOB) waitQueue2(ctx context.Context, t *Target, d time.Duration) (*record.Record, error) {
	if o.opt.Transport != TransportRedfish {
		return nil, sleep(ctx, d)
	}
	p := o.push(t)
	if r, ok := p.take(); ok {
		return &r, nil
	}
	if !p.up.Load() {
		return nil, sleep(ctx, d)
	}
	tm := time.NewTimer(max(d, o.opt.PollMax))
	defer tm.Stop()
	select {
	case r := <-p.recs:
		return &r, nil
	case <-p.wake: // a record to read: not pushed, or for the alert log
		return nil, nil
	case <-tm.C:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// flushAcks acknowledges, before the channel closes, what this reader
// still owes the BMC over Redfish (pushed records, the last one read), so
// its answers do not sit in Queue 2 until the reader's TTL. Bounded by a
// second and a few reads; whatever is left the BMC drops with the reader.
func (o *OOB) flushAcks(h *oobHost) {
	if o.opt.Transport != TransportRedfish || h.target == nil {
		return
	}
	select {
	case h.reader <- struct{}{}:
		defer func() { <-h.reader }()
	default:
		return // a request still reads: it acknowledges as it goes
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for range 8 {
		if h.ack == nil && len(h.pushAcks) == 0 {
			return
		}
		r, err := o.read(ctx, h.target, h, false)
		if err != nil {
			o.log.Debug("oob-i redfish: closing with acknowledgements owed", "host", h.target.Name(), "err", err)
			return
		}
		if r != nil {
			o.take(h.target, h, r, 0)
		}
	}
}

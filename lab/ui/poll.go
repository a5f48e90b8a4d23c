package ui

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// Run polls every host until ctx ends: the VMM-I every Poll, the OOB-I,
// power and VMs every second Poll (the OOB-I rides the BMC's KCS, which
// the page must not crowd), alerts every Poll.
func (s *Server) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, h := range s.cfg.Inventory.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(s.cfg.Poll)
			defer t.Stop()
			for n := 0; ; n++ {
				s.pollHost(ctx, h.Name, n%2 == 0)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	wg.Wait()
}

// pollHost reads host's channels (the OOB-I and power when full), VMs and
// alerts, and publishes what changed. A poll already running for the host
// makes this one a no-op.
func (s *Server) pollHost(ctx context.Context, host string, full bool) {
	l, _ := s.hostLocks.LoadOrStore(host, &sync.Mutex{})
	mu := l.(*sync.Mutex)
	if !mu.TryLock() {
		return
	}
	defer mu.Unlock()

	ping := func(via string, d time.Duration) (time.Duration, error) {
		cctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		res, err := s.clients[via].Do(cctx, host, vmsg.CmdPing, "")
		if err != nil {
			return 0, err
		}
		return res.Latency, nil
	}
	var wg sync.WaitGroup
	var vLat, oLat time.Duration
	var vErr, oErr error
	var power string
	var powerErr error
	var sensors []client.Sensor
	var sensorsErr error
	var sel []client.SELEntry
	var selErr error
	wg.Add(1)
	go func() { defer wg.Done(); vLat, vErr = ping(client.ViaVMMI, 1500*time.Millisecond) }()
	if full {
		wg.Add(4)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 8*time.Second)
			defer cancel()
			sel, selErr = s.clients[client.ViaAuto].HostSEL(cctx, host)
		}()
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 8*time.Second)
			defer cancel()
			sensors, sensorsErr = s.clients[client.ViaAuto].HostSensors(cctx, host)
		}()
		go func() { defer wg.Done(); oLat, oErr = ping(client.ViaOOB, 8*time.Second) }()
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 8*time.Second)
			defer cancel()
			st, err := s.clients[client.ViaAuto].HostPower(cctx, host)
			switch {
			case err != nil:
				power, powerErr = "unknown", err
			case st.On:
				power = "on"
			default:
				power = "off"
			}
		}()
	}
	wg.Wait()

	// VMs over whichever channel answers (auto), then alerts.
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	list, listErr := s.clients[client.ViaAuto].Do(lctx, host, vmsg.CmdList, "")
	cancel()
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	alerts, _ := s.clients[client.ViaAuto].Alerts(actx, host)
	cancel()

	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	h, err := s.host(host)
	if err != nil {
		return
	}
	setChannel(&h.VMMI, vLat, vErr, now)
	if full {
		setChannel(&h.OOB, oLat, oErr, now)
		h.Power = power
		_ = powerErr
		if sensorsErr == nil {
			h.Sensors = h.Sensors[:0]
			for _, x := range sensors {
				if x.Analog && (x.Type == "Temperature" || strings.Contains(strings.ToLower(x.Unit), "watt")) {
					h.Sensors = append(h.Sensors, SensorView{Name: x.Name, Value: x.Value, Unit: x.Unit, Status: x.Status})
				}
			}
		}
	}
	h.Error = ""
	if listErr != nil {
		h.Error = "VM list: " + listErr.Error()
	} else if list.Reply != nil {
		prot := map[string]bool{}
		for _, v := range h.VMs {
			prot[v.Name] = v.Protected
		}
		h.VMs = h.VMs[:0]
		for _, v := range list.Reply.VMs {
			p := prot[v.Name] || s.cfg.Protected != nil && s.cfg.Protected(host, v.Name)
			h.VMs = append(h.VMs, VMView{Name: v.Name, State: v.State, VCPUs: v.VCPUs, MemoryMiB: v.MemoryKiB / 1024,
				UptimeSec: v.UptimeSec, Protected: p})
		}
		h.VMsVia = list.Via
	}
	if full && selErr == nil {
		s.addSEL(host, sel)
	}
	for _, a := range alerts {
		s.st.Alerts = append([]AlertRow{{Time: time.UnixMilli(a.TimeMs), Host: host, Principal: a.Principal,
			Action: a.Action, VM: a.VM, Reason: a.Reason}}, s.st.Alerts...)
	}
	if len(s.st.Alerts) > maxAlerts {
		s.st.Alerts = s.st.Alerts[:maxAlerts]
	}
	s.changed()
}

func setChannel(c *ChannelView, lat time.Duration, err error, now time.Time) {
	c.Checked = now
	if err != nil {
		c.Up, c.Error = false, err.Error()
		c.History = appendHist(c.History, -1)
		return
	}
	c.Up, c.Error, c.LatencyMs = true, "", ms(lat)
	c.History = appendHist(c.History, ms(lat))
}

func appendHist(h []float64, v float64) []float64 {
	h = append(h, v)
	if len(h) > historyLen {
		h = h[len(h)-historyLen:]
	}
	return h
}

// selMark is where a host's SEL was last read: its newest entry's id.
type selMark struct {
	id    uint16
	begun bool
}

// addSEL adds the entries of host's SEL after the newest one seen at the
// last read (all of them the first time, and after the log was cleared:
// the newest seen is gone). Call with s.mu held.
func (s *Server) addSEL(host string, es []client.SELEntry) {
	m := s.selSeen[host]
	start := 0
	if m.begun {
		for i, e := range es {
			if e.ID == m.id {
				start = i + 1
			}
		}
	}
	for _, e := range es[start:] {
		s.st.SEL = append([]SELRow{{Time: e.Time, Host: host, ID: e.ID, Event: selText(e)}}, s.st.SEL...)
	}
	if len(s.st.SEL) > maxSEL {
		s.st.SEL = s.st.SEL[:maxSEL]
	}
	if len(es) > 0 {
		s.selSeen[host] = selMark{id: es[len(es)-1].ID, begun: true}
	}
}

func selText(e client.SELEntry) string {
	switch {
	case e.Alert != nil:
		t := "hvagent alert: " + e.Alert.Class.String()
		if e.Alert.Command != 0 {
			t += ", " + vmsg.Command(e.Alert.Command).String()
		}
		return t
	case e.Type == 0x02:
		t := e.SensorType + " #" + strconv.Itoa(int(e.SensorNumber)) + ": " + e.Event
		if e.Deasserted {
			t += " (deasserted)"
		}
		return t
	}
	return "OEM record"
}

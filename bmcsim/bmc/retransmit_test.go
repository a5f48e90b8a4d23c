package bmc

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ooblab/ooblab/bmcsim/lan"
)

// lossyProxy relays UDP between one console and the BMC, and can repeat
// every in-session request or drop chosen in-session responses.
type lossyProxy struct {
	conn     *net.UDPConn
	bmc      *net.UDPAddr
	dupReqs  bool
	dropResp map[int]bool // 1-based index of in-session responses to drop
	mu       sync.Mutex
	respSeen int
	client   *net.UDPAddr
	upstream *net.UDPConn
}

func inSession(p []byte) bool {
	return lan.IsRMCPPlus(p) && p[5]&0x3F == 0 && (p[6]|p[7]|p[8]|p[9]) != 0
}

func startProxy(t *testing.T, bmcPort int, dup bool, drop ...int) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: bmcPort})
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{conn: c, upstream: up, dupReqs: dup, dropResp: map[int]bool{}}
	for _, d := range drop {
		p.dropResp[d] = true
	}
	t.Cleanup(func() { c.Close(); up.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, addr, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.client = addr
			p.mu.Unlock()
			pkt := append([]byte(nil), buf[:n]...)
			up.Write(pkt)
			if p.dupReqs && inSession(pkt) {
				up.Write(pkt)
			}
		}
	}()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			pkt := append([]byte(nil), buf[:n]...)
			p.mu.Lock()
			drop := false
			if inSession(pkt) {
				p.respSeen++
				drop = p.dropResp[p.respSeen]
			}
			client := p.client
			p.mu.Unlock()
			if !drop && client != nil {
				c.WriteToUDP(pkt, client)
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).Port
}

var selAdd = []string{"raw", "0x0a", "0x44", "0", "0", "0x02", "0", "0", "0", "0", "0x20", "0", "0x04", "0x05", "0x01", "0x6f", "0x00", "0xff", "0xff"}

// A request packet that arrives twice (same session sequence number) runs
// its handler once; the console gets the cached answer.
func TestDuplicatedRequestRunsOnce(t *testing.T) {
	need(t, "ipmitool")
	l := startLAN(t, testConfig())
	proxied := &lanBMC{BMC: l.BMC, port: startProxy(t, l.port, true), logs: l.logs}
	out := proxied.mustIpmitool(t, 17, selAdd...)
	if n := len(l.SEL.Entries()); n != 1 {
		t.Fatalf("SEL holds %d records after one add sent twice, want 1 (output %q)", n, out)
	}
	if got := promtest.ToFloat64(l.metrics.Retransmits.WithLabelValues("t1")); got < 1 {
		t.Errorf("retransmits metric = %v, want ≥ 1", got)
	}
}

// When the answer is lost, ipmitool retries the request (same rqSeq, new
// session sequence number): the BMC answers from its cache, and the SEL
// gets one record, not two.
func TestRetriedRequestAfterLostAnswerRunsOnce(t *testing.T) {
	need(t, "ipmitool")
	l := startLAN(t, testConfig())
	// In-session responses: #1 Set Session Privilege Level, #2 our add.
	proxied := &lanBMC{BMC: l.BMC, port: startProxy(t, l.port, false, 2), logs: l.logs}
	out := proxied.mustIpmitool(t, 17, selAdd...)
	if n := len(l.SEL.Entries()); n != 1 {
		t.Fatalf("SEL holds %d records after a retried add, want 1 (output %q)", n, out)
	}
	// The record id the console got is the one stored.
	id := strings.Fields(strings.TrimSpace(out))
	if len(id) != 2 || id[0] != "01" || id[1] != "00" {
		t.Errorf("add answered %q, want record id 01 00", out)
	}
	if got := promtest.ToFloat64(l.metrics.Retransmits.WithLabelValues("t1")); got != 1 {
		t.Errorf("retransmits metric = %v, want 1", got)
	}
	_ = strconv.Itoa
}

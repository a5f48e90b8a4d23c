package vmmi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/frame"
)

// silentPeers keeps n bare TCP connections per source open to addr, saying
// nothing; each one the server closes is dialled again at once (the
// attack renews its hold), until the test ends.
func silentPeers(t *testing.T, addr string, sources []string, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, src := range sources {
		d := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		for range n {
			wg.Go(func() {
				for ctx.Err() == nil {
					c, err := d.DialContext(ctx, "tcp", addr)
					if err != nil {
						select { // listener gone or the backlog full: try again shortly
						case <-ctx.Done():
						case <-time.After(10 * time.Millisecond):
						}
						continue
					}
					stop := context.AfterFunc(ctx, func() { c.Close() })
					c.Read(make([]byte, 1)) // until the server (or the test) closes it
					stop()
					c.Close()
				}
			})
		}
	}
}

// waitFor polls cond every 5 ms until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("%s: not within 5 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// exchange dials from src with the bench's client certificate, sends one
// frame and reads the echo's two answers.
func (b *srvBench) exchange(t *testing.T, src string) error {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := tls.DialWithDialer(d, "tcp", b.addr, b.tlsConfig(t, "localhost"))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := frame.Write(c, []byte("x")); err != nil {
		return err
	}
	for range 2 {
		if _, err := frame.Read(c); err != nil {
			return err
		}
	}
	return nil
}

func loopbacks(from, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("127.0.0.%d", from+i))
	}
	return out
}

// TestSilentPeersCannotHoldSlots: 64 silent TCP peers, 16 from each of 4
// addresses and renewed as soon as they are closed (issue 20's attack),
// with the default limits: a VMS still gets its answers, and keeps its
// connection once authenticated. On the old code they held all 64 slots.
func TestSilentPeersCannotHoldSlots(t *testing.T) {
	b := start(t, echo{}, nil)
	silentPeers(t, b.addr, loopbacks(2, 4), 16)
	waitFor(t, "silent peers pending", func() bool { p, _ := b.srv.Conns(); return p >= 16 })
	for i := range 5 {
		if err := b.exchange(t, "127.0.0.1"); err != nil {
			t.Fatalf("exchange %d with 64 silent peers connected: %v", i, err)
		}
	}
	if p, _ := b.srv.Conns(); p > 4*4 {
		t.Errorf("%d pending connections from 4 sources (max 4 each)", p)
	}
}

// TestPendingPoolEviction: when every pending slot is taken (one silent
// peer from each of 4 sources), a newcomer from a fifth source displaces
// the oldest of them and is served.
func TestPendingPoolEviction(t *testing.T) {
	b := start(t, echo{}, func(c *Config) { c.MaxPending = 4; c.HandshakeTimeout = time.Minute })
	var peers []net.Conn
	for _, src := range loopbacks(2, 4) {
		d := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		peers = append(peers, c)
		waitFor(t, "peer pending", func() bool { p, _ := b.srv.Conns(); return p == len(peers) })
	}
	if err := b.exchange(t, "127.0.0.1"); err != nil {
		t.Fatalf("newcomer with the pending pool full: %v", err)
	}
	if b.srv.Evicted() != 1 {
		t.Fatalf("evicted %d, want 1", b.srv.Evicted())
	}
	waitClosed(t, peers[0], "oldest silent peer")
	// Full again (127.0.0.6 takes the freed slot): a second peer from a
	// source already pending does not displace the peer of a source
	// holding as many as it would.
	dial := func(src string) net.Conn {
		d := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial("127.0.0.6")
	waitFor(t, "pool full again", func() bool { p, _ := b.srv.Conns(); return p == 4 })
	waitClosed(t, dial("127.0.0.3"), "second peer from a source already pending")
	if b.srv.Evicted() != 1 {
		t.Fatalf("evicted %d after a peer from a busy source, want 1", b.srv.Evicted())
	}
}

// TestPendingPerSourceCap: one address holds at most MaxPendingPerSource
// connections in their handshake: a newer one from it closes its oldest;
// another address is not touched and still gets in.
func TestPendingPerSourceCap(t *testing.T) {
	b := start(t, echo{}, func(c *Config) { c.MaxPendingPerSource = 2; c.HandshakeTimeout = time.Minute })
	dial := func(src string) net.Conn {
		d := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	other := dial("127.0.0.3")
	waitFor(t, "peer pending", func() bool { p, _ := b.srv.Conns(); return p == 1 })
	var peers []net.Conn
	for i := range 2 {
		peers = append(peers, dial("127.0.0.2"))
		waitFor(t, "peer pending", func() bool { p, _ := b.srv.Conns(); return p == i+2 })
	}
	dial("127.0.0.2")
	waitClosed(t, peers[0], "oldest silent peer of a source over its cap")
	if p, _ := b.srv.Conns(); p != 3 || b.srv.Evicted() != 1 || b.srv.Refused() != 0 {
		t.Fatalf("pending %d, evicted %d, refused %d; want 3, 1, 0", p, b.srv.Evicted(), b.srv.Refused())
	}
	other.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := other.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("another source's pending connection was closed: %v", err)
	}
	if err := b.exchange(t, "127.0.0.1"); err != nil {
		t.Fatalf("another source: %v", err)
	}
}

// TestSilentPeersBehindTheVMSsAddress: 64 silent peers from the VMS's own
// address (a NAT, or the lab's QEMU user networking, shows every peer as
// one), then the VMS: its newer connection displaces theirs and is served.
func TestSilentPeersBehindTheVMSsAddress(t *testing.T) {
	b := start(t, echo{}, nil)
	for range 64 {
		d := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}
		c, err := d.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitFor(t, "silent peers pending", func() bool { p, _ := b.srv.Conns(); return p == 4 && b.srv.Evicted() == 60 })
	if err := b.exchange(t, "127.0.0.1"); err != nil {
		t.Fatalf("the VMS behind its silent neighbours: %v", err)
	}
}

package client_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// forgeries are what an attacker on the BMC's network (or a corrupting
// link) sends ahead of a real in-session answer: the answer with a flipped
// ciphertext bit, the answer cut to a ciphertext of no whole AES block, and
// a datagram of random bytes behind a real RMCP+ session header. Without
// the guard, go-ipmi v0.9.1 decrypts each of them and panics in its reading
// goroutine (or takes garbage for the answer).
func forgeries(rng *rand.Rand) func(answer []byte) [][]byte {
	return func(answer []byte) [][]byte {
		if len(answer) < 16+32 || answer[4] != 0x06 || binary.LittleEndian.Uint32(answer[6:10]) == 0 {
			return nil // session set-up and pre-session answers go through as they are
		}
		flipped := append([]byte(nil), answer...)
		flipped[16+16+rng.IntN(16)] ^= 1 << rng.IntN(8)

		cut := append([]byte(nil), answer[:16+16+7]...) // IV + 7 bytes
		binary.LittleEndian.PutUint16(cut[14:16], 16+7)

		noise := append([]byte(nil), answer[:16]...)
		for range 48 {
			noise = append(noise, byte(rng.Uint32()))
		}
		binary.LittleEndian.PutUint16(noise[14:16], 48)
		return [][]byte{flipped, cut, noise}
	}
}

func TestOOBRefusesForgedAnswers(t *testing.T) {
	for _, suite := range []int{3, 17} { // HMAC-SHA1 and HMAC-SHA256 keys, AES-128
		t.Run(fmt.Sprint("suite ", suite), func(t *testing.T) { refusesForgedAnswers(t, suite) })
	}
}

func refusesForgedAnswers(t *testing.T, suite int) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	p := startProxy(t, ob.bmc, func(bool, int64) bool { return false })
	p.forge = forgeries(rand.New(rand.NewPCG(1, 2)))
	ob.inv.Hosts[0].BMC.Addr = p.addr()
	ob.inv.Hosts[0].BMC.CipherSuite = suite
	before := client.RefusedDatagrams()
	c, oob := ob.oobClient(t, client.OOBOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Do(ctx, "h1", vmsg.CmdPing, ""); err != nil {
		t.Fatal(err)
	}
	if n := client.RefusedDatagrams() - before; n != 0 {
		t.Fatalf("%d datagrams refused on a clean link", n)
	}
	p.on.Store(true)
	for i := range 10 {
		res, err := c.Send(ctx, "h1", &vmsg.Request{Command: vmsg.CmdPing})
		if err != nil {
			t.Fatalf("request %d: %v (stats %+v)", i, err, oob.Stats())
		}
		if res.Via != client.ViaOOB {
			t.Fatalf("request %d went %s", i, res.Via)
		}
	}
	if _, err := c.HostPower(ctx, "h1"); err != nil {
		t.Fatalf("chassis status behind forgeries: %v", err)
	}
	if n := client.RefusedDatagrams() - before; n < 30 {
		t.Fatalf("refused %d datagrams, want ≥ 3 per answer", n)
	}
	t.Logf("refused %d forged datagrams; stats %+v", client.RefusedDatagrams()-before, oob.Stats())
}

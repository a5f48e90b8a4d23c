package lan

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/clock"
	"github.com/bougou/go-ipmi/pkg/crypto"
	"github.com/bougou/go-ipmi/pkg/types"
	"github.com/ooblab/ooblab/internal/testutil"
)

// sessionPacket builds an in-session IPMI packet as a console sends it.
func sessionPacket(t testing.TB, sess *bmc.Session, plain, iv []byte) []byte {
	return testutil.RMCPPlusPacket(t, sess.BMCID, sess.IntegrityAlg, sess.K1, sess.K2, plain, iv)
}

func testSession(alg types.IntegrityAlg, k byte) *bmc.Session {
	return &bmc.Session{BMCID: 0x11223344, IntegrityAlg: alg,
		K1: bytes.Repeat([]byte{k}, 32), K2: bytes.Repeat([]byte{k + 1}, 32)}
}

// referenceRequest is what the guard did before the key cache, with
// go-ipmi's functions on every packet: the cache must agree with it.
func referenceRequest(pkt []byte, sess *bmc.Session, flags uint8, payload []byte) (plain []byte, ok bool) {
	n, known := crypto.IntegrityAuthCodeLen(sess.IntegrityAlg)
	if !known {
		return nil, false
	}
	if n > 0 {
		if flags&types.PayloadFlagAuthenticated == 0 || len(sess.K1) == 0 || len(pkt) < PayloadOffset {
			return nil, false
		}
		plen := int(binary.LittleEndian.Uint16(pkt[14:16]))
		end := PayloadOffset + plen
		if len(pkt) < end {
			return nil, false
		}
		codeAt := end + types.IntegrityPadLen(SessionHeaderLen, plen) + 2
		if len(pkt) != codeAt+n {
			return nil, false
		}
		want, err := crypto.SessionIntegrityAuthCode(sess.IntegrityAlg, pkt[RMCPHeaderLen:codeAt], sess.K1, "")
		if err != nil || !crypto.Equal(want, pkt[codeAt:]) {
			return nil, false
		}
	}
	if flags&types.PayloadFlagEncrypted == 0 {
		return payload, true
	}
	if len(payload) < 16 || (len(payload)-16)%16 != 0 { // go-ipmi panics here
		return nil, false
	}
	p, err := crypto.DecryptAESPayload(payload, sess.K2)
	return p, err == nil
}

func cacheRequest(c *keyCache, pkt []byte, sess *bmc.Session) (plain []byte, ok bool) {
	_, _, _, flags, payload, hok := parseHeader(pkt)
	if !hok {
		return nil, false
	}
	ok = c.request(pkt, sess, flags, payload, func(p []byte) { plain = bytes.Clone(p) })
	return plain, ok
}

func parseHeader(pkt []byte) (sid, seq uint32, ptype, flags uint8, payload []byte, ok bool) {
	if !IsRMCPPlus(pkt) {
		return 0, 0, 0, 0, nil, false
	}
	plen := int(binary.LittleEndian.Uint16(pkt[14:16]))
	if len(pkt) < PayloadOffset+plen {
		return 0, 0, 0, 0, nil, false
	}
	return binary.LittleEndian.Uint32(pkt[6:10]), binary.LittleEndian.Uint32(pkt[10:14]), pkt[5] & 0x3f, pkt[5] & 0xc0,
		pkt[PayloadOffset : PayloadOffset+plen], true
}

func TestKeyCache(t *testing.T) {
	getDevID := []byte{0x20, 0x18, 0xc8, 0x81, 0x04, 0x01, 0x7a} // rsSA, netFn 06, sum, rqSA, rqSeq 1, cmd 01, sum
	iv := bytes.Repeat([]byte{0x5a}, 16)
	for _, alg := range []types.IntegrityAlg{types.IntegrityAlg_HMAC_SHA1_96, types.IntegrityAlg_HMAC_SHA256_128, types.IntegrityAlg_HMAC_MD5_128, types.IntegrityAlg_MD5_128} {
		t.Run(alg.String(), func(t *testing.T) {
			var c keyCache
			sess := testSession(alg, 0x10)
			pkt := sessionPacket(t, sess, getDevID, iv)
			for i := range 3 { // the first builds the state, the others reuse it
				plain, ok := cacheRequest(&c, pkt, sess)
				if !ok || !bytes.Equal(plain, getDevID) {
					t.Fatalf("packet %d: ok %v, plain % x, want % x", i, ok, plain, getDevID)
				}
			}
			bad := bytes.Clone(pkt)
			bad[len(bad)-1] ^= 1
			if _, ok := cacheRequest(&c, bad, sess); ok {
				t.Error("accepted a packet whose AuthCode was changed")
			}
			// The session ID now carries other keys: the old state must not verify.
			renewed := testSession(alg, 0x40)
			if _, ok := cacheRequest(&c, pkt, renewed); ok {
				t.Error("accepted a packet made with the keys the session ID had before")
			}
			if plain, ok := cacheRequest(&c, sessionPacket(t, renewed, getDevID, iv), renewed); !ok || !bytes.Equal(plain, getDevID) {
				t.Errorf("renewed keys: ok %v, plain % x", ok, plain)
			}
		})
	}
}

// FuzzKeyCache checks the guard's cached integrity check and decryption
// against go-ipmi's functions on arbitrary packets of a known session
// (seeded with valid ones, so mutations reach the decryption).
func FuzzKeyCache(f *testing.F) {
	for i, alg := range []types.IntegrityAlg{types.IntegrityAlg_HMAC_SHA1_96, types.IntegrityAlg_HMAC_SHA256_128, types.IntegrityAlg_None} {
		sess := testSession(alg, 0x10)
		f.Add(sessionPacket(f, sess, []byte{0x20, 0x18, 0xc8, 0x81, 0x04, 0x01, 0x7a}, bytes.Repeat([]byte{byte(i)}, 16)), uint8(alg))
		f.Add(sessionPacket(f, sess, bytes.Repeat([]byte{0xab}, 40), bytes.Repeat([]byte{byte(i + 7)}, 16)), uint8(alg))
	}
	f.Fuzz(func(t *testing.T, pkt []byte, alg uint8) {
		sess := testSession(types.IntegrityAlg(alg%5), 0x10)
		_, _, _, flags, payload, ok := parseHeader(pkt)
		if !ok {
			return
		}
		var c keyCache
		want, wok := referenceRequest(pkt, sess, flags, payload)
		for range 2 { // a fresh state, then the kept one
			got, gok := cacheRequest(&c, pkt, sess)
			if gok != wok || !bytes.Equal(got, want) {
				t.Fatalf("cache: %v % x; go-ipmi: %v % x", gok, got, wok, want)
			}
		}
	})
}

// TestKeyCacheSweep: an ended session's key state is dropped by the sweep;
// a live session's stays.
func TestKeyCacheSweep(t *testing.T) {
	store := bmc.NewSessionStore(clock.Real)
	live, err := store.Allocate(0x01020304, types.AuthAlg_HMAC_SHA1, types.IntegrityAlg_HMAC_SHA1_96, types.CryptAlg_AES_CBC_128, bmc.PrivilegeLevelAdministrator, 1)
	if err != nil {
		t.Fatal(err)
	}
	live.K1, live.K2 = bytes.Repeat([]byte{1}, 20), bytes.Repeat([]byte{2}, 20)
	ended := testSession(types.IntegrityAlg_HMAC_SHA1_96, 0x10) // never in the store
	var c keyCache
	for _, s := range []*bmc.Session{live, ended} {
		c.mu.Lock()
		c.state(s)
		c.mu.Unlock()
	}
	c.sweep(store)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[ended.BMCID]; ok {
		t.Error("the ended session's keys are still cached after a sweep")
	}
	if _, ok := c.m[live.BMCID]; !ok {
		t.Error("the live session's keys were swept")
	}
}

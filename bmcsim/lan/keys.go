package lan

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"hash"
	"sync"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/crypto"
	"github.com/bougou/go-ipmi/pkg/types"
	"github.com/ooblab/ooblab/internal/rmcpp"
)

// keyCache keeps each session's HMAC (K1) and AES (K2) state across its
// packets, for the guard's own integrity check and decryption of every
// in-session request: building an HMAC (two hash blocks and three
// allocations) and expanding an AES key per packet was most of the guard's
// CPU under load (bench/lan profile at 4 sessions). An entry is used only
// while the session still holds the same algorithm and keys, so a session
// ID that is reused with new keys gets new state.
//
// The guard reads packets from one goroutine, but the cache does not rely
// on it: one mutex covers an entry's use.
type keyCache struct {
	mu sync.Mutex
	m  map[uint32]*keyState
}

// maxKeyStates bounds the cache; past it, it starts over (a session's
// state is rebuilt on its next packet).
const maxKeyStates = 256

type keyState struct {
	alg    types.IntegrityAlg
	k1, k2 []byte // copies of the session's keys when the state was built
	mac    hash.Hash
	block  cipher.Block // nil when K2 is shorter than 16 bytes
	sum    []byte
	plain  []byte
}

// state returns sess's entry, rebuilt when the session's keys changed.
// Call with c.mu held.
func (c *keyCache) state(sess *bmc.Session) *keyState {
	st := c.m[sess.BMCID]
	if st != nil && st.alg == sess.IntegrityAlg && bytes.Equal(st.k1, sess.K1) && bytes.Equal(st.k2, sess.K2) {
		return st
	}
	if c.m == nil || len(c.m) >= maxKeyStates {
		c.m = map[uint32]*keyState{}
	}
	st = &keyState{alg: sess.IntegrityAlg, k1: bytes.Clone(sess.K1), k2: bytes.Clone(sess.K2)}
	switch sess.IntegrityAlg {
	case types.IntegrityAlg_HMAC_SHA1_96:
		st.mac = hmac.New(sha1.New, st.k1)
	case types.IntegrityAlg_HMAC_SHA256_128:
		st.mac = hmac.New(sha256.New, st.k1)
	case types.IntegrityAlg_HMAC_MD5_128:
		st.mac = hmac.New(md5.New, st.k1)
	}
	if len(st.k2) >= 16 {
		st.block, _ = aes.NewCipher(st.k2[:16]) // a 16-byte key never fails
	}
	c.m[sess.BMCID] = st
	return st
}

// sweep forgets the key state of sessions the store no longer holds, so
// copies of an ended session's K1 and K2 do not outlive it in memory.
func (c *keyCache) sweep(sessions *bmc.SessionStore) {
	c.mu.Lock()
	ids := make([]uint32, 0, len(c.m))
	for id := range c.m {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	gone := ended(sessions, ids, func(id uint32) uint32 { return id })
	if len(gone) == 0 {
		return
	}
	c.mu.Lock()
	for _, id := range gone {
		delete(c.m, id)
	}
	c.mu.Unlock()
}

// request checks an in-session packet's AuthCode (v2.0 Table 13-8) and
// returns its payload's plaintext (v2.0 §13.29), as go-ipmi's server will
// judge them. The plaintext is valid until the next call.
func (c *keyCache) request(pkt []byte, sess *bmc.Session, flags uint8, payload []byte, fn func(plain []byte)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state(sess)
	if !st.verify(pkt, sess, flags&types.PayloadFlagAuthenticated != 0) {
		return false
	}
	plain, ok := st.decrypt(flags, payload)
	if ok {
		fn(plain)
	}
	return ok
}

func (st *keyState) verify(pkt []byte, sess *bmc.Session, authenticated bool) bool {
	n, ok := crypto.IntegrityAuthCodeLen(st.alg)
	if !ok {
		return false
	}
	if n == 0 {
		return true
	}
	if !authenticated || len(st.k1) == 0 {
		return false
	}
	signed, code, ok := rmcpp.AuthCode(pkt, n)
	if !ok {
		return false
	}
	if st.mac == nil { // MD5-128 (no HMAC): go-ipmi's own code
		want, err := crypto.SessionIntegrityAuthCode(st.alg, signed, st.k1, "")
		return err == nil && crypto.Equal(want, code)
	}
	st.mac.Reset()
	st.mac.Write(signed)
	st.sum = st.mac.Sum(st.sum[:0])
	return len(st.sum) >= n && hmac.Equal(st.sum[:n], code)
}

// decrypt is go-ipmi's DecryptAESPayload with the session's expanded key:
// IV(16) ‖ AES-CBC-128(plain ‖ 01 02 … n ‖ n). Unlike it, a ciphertext that
// is not whole blocks is refused instead of panicking.
func (st *keyState) decrypt(flags uint8, payload []byte) ([]byte, bool) {
	if flags&types.PayloadFlagEncrypted == 0 {
		return payload, true
	}
	if st.block == nil || len(payload) < 16 {
		return nil, false
	}
	ct := payload[16:]
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, false
	}
	st.plain = append(st.plain[:0], ct...)
	cipher.NewCBCDecrypter(st.block, payload[:16]).CryptBlocks(st.plain, st.plain)
	padLen := int(st.plain[len(st.plain)-1])
	if padLen >= len(st.plain) {
		return nil, false
	}
	return st.plain[:len(st.plain)-1-padLen], true
}

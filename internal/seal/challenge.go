package seal

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"time"
)

// ChallengeStep is the time step of challenge codes.
const ChallengeStep = 30 * time.Second

// ChallengeDigits is the length of a challenge code.
const ChallengeDigits = 6

// ChallengeCode is the registered user's answer to a challenge nonce at t:
// RFC 4226 HOTP whose counter is followed by the nonce, so the code is
// bound to that one challenge:
//
//	mac  = HMAC-SHA1(user's decoded TOTP secret, T as u64 big-endian ‖ nonce), T = unix/30
//	code = dynamic truncation of mac mod 10^6, 6 digits zero padded
//
// With an empty nonce this is the plain RFC 6238 TOTP code. It is the same
// function as hvagent/challenge.NonceTOTP.
func ChallengeCode(userSecret, nonce []byte, t time.Time) string {
	return challengeAt(userSecret, nonce, challengeStep(t))
}

func challengeStep(t time.Time) int64 { return t.Unix() / int64(ChallengeStep/time.Second) }

func challengeAt(secret, nonce []byte, step int64) string {
	m := hmac.New(sha1.New, secret)
	var tb [8]byte
	binary.BigEndian.PutUint64(tb[:], uint64(step))
	m.Write(tb[:])
	m.Write(nonce)
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	bin := binary.BigEndian.Uint32(sum[off:]) & 0x7fffffff
	return fmt.Sprintf("%0*d", ChallengeDigits, bin%1_000_000)
}

// VerifyChallengeCode accepts the code of step T-1, T or T+1 at now and
// returns the step it matched (so a caller can refuse reuse). It compares in
// constant time and checks all three steps.
func VerifyChallengeCode(userSecret, nonce []byte, code string, now time.Time) (step int64, ok bool) {
	if len(code) != ChallengeDigits {
		return 0, false
	}
	t := challengeStep(now)
	match := 0
	for _, s := range []int64{t - 1, t, t + 1} {
		if subtle.ConstantTimeCompare([]byte(challengeAt(userSecret, nonce, s)), []byte(code)) == 1 {
			step, match = s, 1
		}
	}
	return step, match == 1
}

// ChallengeVerifier adapts VerifyChallengeCode to hvagent/challenge.Verifier.
type ChallengeVerifier struct{}

// Verify calls VerifyChallengeCode.
func (ChallengeVerifier) Verify(secret, nonce []byte, code string, now time.Time) (int64, bool) {
	return VerifyChallengeCode(secret, nonce, code, now)
}

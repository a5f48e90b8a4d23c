package lan

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/internal/testutil"
)

func testLogins(t testing.TB, edit func(*config.Config)) (*Logins, *testutil.Clock) {
	t.Helper()
	cfg := config.Config{Name: "t1", LAN: "127.0.0.1:0",
		Users: []config.User{{Name: "admin", Password: "pw", Privilege: "administrator"}}}
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Normalize(); err != nil {
		t.Fatal(err)
	}
	lb := NewLogins(&cfg)
	clk := testutil.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	lb.now = clk.Now
	return lb, clk
}

// fail runs one handshake naming user from addr that a stranger can make
// (RAKP 1, then RAKP 3 with an error status) and reports whether its
// RAKP 1 passed.
func fail(lb *Logins, id uint32, addr, user string) bool {
	if res := lb.rakp1(id, addr, id, user, true); res.verdict != rakp1Pass {
		return false
	}
	lb.rakp3(id, addr, 0x0F)
	return true
}

// login runs a successful handshake and reports whether its RAKP 1 passed.
func login(lb *Logins, id uint32, addr, user string) bool {
	if res := lb.rakp1(id, addr, id, user, true); res.verdict != rakp1Pass {
		return false
	}
	if pass, _ := lb.rakp3(id, addr, 0); !pass {
		return false
	}
	lb.rakp4(addr, id, 0)
	return true
}

// Whatever strangers send from one address, the owner waits nothing at
// another and at most BackoffMax (after their last attempt) at theirs; a
// success there then delays nothing.
func TestLoginsWaitIsBounded(t *testing.T) {
	lb, clk := testLogins(t, nil)
	max := lb.Policy().BackoffMax
	id := uint32(1)
	for i := 0; i < 1000; i++ {
		fail(lb, id, "127.0.0.1:999", "admin")
		id++
		if w := lb.Wait("admin", "127.0.0.1"); w > max {
			t.Fatalf("after %d failures: wait %v, bound %v", i+1, w, max)
		}
		clk.Add(10 * time.Millisecond)
	}
	if w := lb.Wait("admin", "127.0.0.2"); w != 0 {
		t.Fatalf("a clean source waits %v", w)
	}
	if !login(lb, id, "127.0.0.2:623", "admin") {
		t.Fatal("a clean source was refused")
	}
	id++
	clk.Add(max)
	if w := lb.Wait("admin", "127.0.0.1"); w != 0 {
		t.Fatalf("the strangers' source still waits %v a bound after their last attempt", w)
	}
	if !login(lb, id, "127.0.0.1:623", "admin") || !login(lb, id+1, "127.0.0.1:624", "admin") {
		t.Fatal("logins right after the backoff were refused: a success must not delay the next")
	}
}

// A burst counts before anything is settled: as many RAKP 1s as the
// threshold pass, the next waits.
func TestLoginsBurstCounted(t *testing.T) {
	lb, _ := testLogins(t, nil)
	th := lb.Policy().Threshold
	for i := 0; i < th; i++ {
		if res := lb.rakp1(uint32(i+1), fmt.Sprintf("10.0.0.1:%d", 1000+i), 7, "admin", true); res.verdict != rakp1Pass {
			t.Fatalf("RAKP 1 #%d of a burst refused below the threshold (%d)", i+1, th)
		}
	}
	if res := lb.rakp1(99, "10.0.0.1:2000", 7, "admin", true); res.verdict != rakp1Backoff {
		t.Fatalf("RAKP 1 past the threshold, all still pending: verdict %d, want backoff", res.verdict)
	}
}

// Guessing spread over many sources: once the user is past its threshold
// every source with failures shares one attempt per BackoffMax; a source
// without failures still gets in at once.
func TestLoginsUserSlowdown(t *testing.T) {
	lb, clk := testLogins(t, func(c *config.Config) { c.LockoutAttempts = 3 })
	max := lb.Policy().BackoffMax
	id := uint32(1)
	for i := 0; i < 3; i++ {
		if !fail(lb, id, fmt.Sprintf("10.0.1.%d:623", i), "admin") {
			t.Fatal("a first failure from a fresh source was refused")
		}
		id++
	}
	if !lb.Slowed("admin") {
		t.Fatal("admin not slowed after 3 failures")
	}
	clk.Add(max / 2)
	for i := 0; i < 3; i++ {
		if w := lb.Wait("admin", fmt.Sprintf("10.0.1.%d", i)); w <= 0 || w > max {
			t.Fatalf("source %d with a failure: wait %v, want (0, %v]", i, w, max)
		}
	}
	if w := lb.Wait("admin", "10.0.2.1"); w != 0 {
		t.Fatalf("a clean source waits %v during the user's slowdown", w)
	}
	clk.Add(max / 2)
	if !fail(lb, id, "10.0.1.0:623", "admin") {
		t.Fatal("a source with a failure refused a bound after the user's last attempt")
	}
	id++
	if fail(lb, id, "10.0.1.1:623", "admin") {
		t.Fatal("a second source with a failure passed in the same slot")
	}
}

// Counts are forgotten after the reset interval, and records of idle
// sources after it.
func TestLoginsForget(t *testing.T) {
	lb, clk := testLogins(t, nil)
	p := lb.Policy()
	for i := 0; i < 2*p.Threshold; i++ {
		fail(lb, uint32(i+1), "10.0.0.9:623", "admin")
		clk.Add(p.BackoffMax)
	}
	clk.Add(p.Reset + time.Second)
	lb.expire()
	if lb.sources.len() != 0 || len(lb.users) != 0 {
		t.Fatalf("%d sources and %d users remembered past the reset interval", lb.sources.len(), len(lb.users))
	}
}

// An abandoned handshake is a failure at the sweep after authTimeout, and
// a newer handshake from its address and console ID supersedes it at once.
func TestLoginsAbandoned(t *testing.T) {
	lb, clk := testLogins(t, nil)
	lb.rakp1(1, "10.0.0.1:623", 5, "admin", true)
	res := lb.rakp1(2, "10.0.0.1:623", 5, "admin", true)
	if len(res.close) != 1 || res.close[0] != 1 || len(res.charged) != 1 || res.charged[0].reason != "abandoned" {
		t.Fatalf("superseding handshake: %+v", res)
	}
	clk.Add(lb.authTimeout + time.Millisecond)
	ids, outs := lb.expire()
	if len(ids) != 1 || ids[0] != 2 || len(outs) != 1 || outs[0].reason != "abandoned" {
		t.Fatalf("expire: %v %+v", ids, outs)
	}
	if s := lb.sources.get("10.0.0.1"); s == nil || s.fails != 2 || s.pending != 0 {
		t.Fatalf("source record %+v, want 2 failures, none pending", s)
	}
}

// The source table is bounded: a flood from more addresses than it holds
// evicts the least recently active.
func TestLoginsSourcesBounded(t *testing.T) {
	lb, clk := testLogins(t, nil)
	for i := 0; i < 2*maxSources; i++ {
		fail(lb, uint32(i+1), fmt.Sprintf("10.%d.%d.%d:623", i>>16&0xFF, i>>8&0xFF, i&0xFF), "admin")
		clk.Add(time.Millisecond)
	}
	if n := lb.sources.len(); n != maxSources {
		t.Fatalf("%d sources held, bound %d", n, maxSources)
	}
	if len(lb.pending) != 0 || len(lb.byConsole) != 0 {
		t.Fatalf("%d pending, %d by console after settled handshakes", len(lb.pending), len(lb.byConsole))
	}
}

// BenchmarkLoginFlood sends the login book a flood of handshakes from a new
// source address each (the worst case for its tables). "window": a third
// end in an error-status RAKP 3, a third in a wrong RAKP 3 code, a third
// are abandoned and swept, as the guard's sweep does, the clock moving
// 50 ms a packet (sources forgotten after their window). "burst": halves
// error-status and wrong code, 10 µs a packet (the source table fills and
// evicts). ns/op is per handshake; heap-before-B / heap-after-B are
// the live heap (after a GC) before the flood and after it, and sources
// the records held at the end. Run with -benchtime=100000x (the figure in
// docs/bmcsim.md) and 1000000x: flat memory and flat ns/op.
func BenchmarkLoginFlood(b *testing.B) {
	b.Run("window", func(b *testing.B) { benchmarkLoginFlood(b, 50*time.Millisecond, 3) })
	b.Run("burst", func(b *testing.B) { benchmarkLoginFlood(b, 10*time.Microsecond, 2) })
}

func benchmarkLoginFlood(b *testing.B, step time.Duration, kinds int) {
	lb, clk := testLogins(b, nil)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		addr := fmt.Sprintf("10.%d.%d.%d:623", i>>16&0xFF, i>>8&0xFF, i&0xFF)
		id := uint32(i + 1)
		if res := lb.rakp1(id, addr, id, "admin", true); res.verdict == rakp1Pass {
			switch i % kinds {
			case 0:
				lb.rakp3(id, addr, 0x0F)
			case 1:
				lb.rakp3(id, addr, 0)
				lb.rakp4(addr, id, 0x0F)
			}
		}
		clk.Add(step)
		if i%64 == 63 {
			lb.expire()
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(before), "heap-before-B")
	b.ReportMetric(float64(ms.HeapAlloc), "heap-after-B")
	b.ReportMetric(float64(lb.sources.len()), "sources")
	b.ReportMetric(float64(len(lb.pending)), "pending")
}

// The slot book: a source's half-open handshakes are capped; a full table
// makes room only from the source holding the most, and only for a source
// holding fewer; claims respect the user, source and reserve caps.
func TestSlots(t *testing.T) {
	cfg := config.Config{Name: "t1", LAN: "127.0.0.1:0", SessionLimit: 8, HandshakeSourceLimit: 4,
		SessionUserLimit: 3, SessionSourceLimit: 8, SessionReserved: 6,
		Users: []config.User{{Name: "admin", Password: "pw", Privilege: "administrator"}}}
	if err := cfg.Normalize(); err != nil {
		t.Fatal(err)
	}
	s := NewSlots(&cfg)
	stored := 0
	id := uint32(100)
	open := func(addr string) (bool, uint32) {
		id++
		ok, victim := s.open(addr, id, stored)
		if victim != 0 {
			s.Removed(victim)
			stored--
		}
		if ok {
			s.opened(addr, id, 0, id)
			stored++
		}
		return ok, victim
	}
	for i := 0; i < 4; i++ {
		if ok, _ := open("10.0.0.1:623"); !ok {
			t.Fatalf("open %d of the flooder refused below its cap", i)
		}
	}
	if ok, _ := open("10.0.0.1:623"); ok {
		t.Fatal("a fifth half-open handshake of one source passed a cap of 4")
	}
	for i := 0; i < 4; i++ {
		if ok, victim := open(fmt.Sprintf("10.0.0.%d:623", 2+i)); !ok || victim != 0 {
			t.Fatalf("source %d: ok %v, victim %d while the table had room", i, ok, victim)
		}
	}
	// Full (8): a new source takes the flooder's oldest, never the others'.
	ok, victim := open("10.0.0.9:623")
	if !ok || victim != 101 {
		t.Fatalf("full table: ok %v, victim %d, want the flooder's oldest (101)", ok, victim)
	}
	// Once every source holds one, a new source may take nobody's.
	for open("10.0.0.10:623"); s.halfOpen["10.0.0.1"] > 1; open("10.0.0.11:623") {
	}
	if ok, victim := open("10.0.0.12:623"); ok || victim != 0 {
		t.Fatalf("table full of one handshake per source: ok %v, victim %d, want a refusal", ok, victim)
	}
	// Claims: one user may hold 3; users below operator together 8−6 = 2.
	var ids []uint32
	for sid := range s.sessions {
		ids = append(ids, sid)
	}
	if len(ids) != 8 {
		t.Fatalf("%d sessions in a table of 8", len(ids))
	}
	for i, sid := range ids[:3] {
		if why := s.claim(sid, "admin", false); why != "" {
			t.Fatalf("claim %d: %s", i, why)
		}
	}
	if why := s.claim(ids[3], "admin", false); why != "user_sessions" {
		t.Fatalf("a fourth session of one user: %q, want user_sessions", why)
	}
	for i, sid := range ids[3:] {
		why := s.claim(sid, fmt.Sprintf("viewer%d", i), true)
		if want := slotRefusal(""); i >= 2 {
			want = "reserved_sessions"
			if why != want {
				t.Fatalf("low claim %d: %q, want %q", i, why, want)
			}
		} else if why != want {
			t.Fatalf("low claim %d: %q", i, why)
		}
	}
}

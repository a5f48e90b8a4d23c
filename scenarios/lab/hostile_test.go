package lab_test

import (
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/lanattack"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// A stranger on the management LAN, who knows no password, attacks the
// lab's BMC and VMM-I the ways issue 20 lists, while the VMS goes on: the
// failover demo (VMM-I unplugged, the BMC carries the command) still works.
var _ = Describe("Hostile network", Lab, Hostile, Failover, Serial, Ordered, ContinueOnFailure, func() {
	const host = "h1"

	AfterAll(func(ctx SpecContext) { MustLab(ctx, "plug", host, "vmmi") })

	It("keeps the VMM-I answering while 64 silent TCP peers hold connections", func(ctx SpecContext) {
		h, err := inv.Host(host)
		Expect(err).NotTo(HaveOccurred())
		Eventually(Via(ctx, client.ViaAuto, host, vmsg.CmdPing, "")).WithTimeout(time.Minute).Should(Equal(client.ViaVMMI))
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := range 64 {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%4))}, Timeout: 5 * time.Second}
			c, err := d.DialContext(ctx, "tcp", h.VMMI.Addr)
			Expect(err).NotTo(HaveOccurred(), "silent peer %d", i)
			conns = append(conns, c) // says nothing: no TLS ClientHello
		}
		out, code := VmsctlStdout(ctx, "vm", "list", host, "--via", "vmmi", "-o", "json", "--timeout", "20s")
		Expect(code).To(Equal(0), out)
		var res VMResult
		Expect(json.Unmarshal([]byte(out), &res)).To(Succeed(), out)
		Expect(res.VMs).NotTo(BeEmpty())
	}, SpecTimeout(2*time.Minute))

	It("carries the failover demo through the BMC while strangers try to lock the VMS's BMC user out", func(ctx SpecContext) {
		h, err := inv.Host(host)
		Expect(err).NotTo(HaveOccurred())
		MustLab(ctx, "unplug", host, "vmmi")

		// Every handshake a sender without the password can make, naming
		// the VMS's own BMC user: from a stranger's address and from the
		// VMS's own (UDP sources are spoofable), more than any lockout
		// threshold; then an Open Session flood.
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for _, src := range []string{"127.0.0.2", "127.0.0.1"} {
			for _, k := range []lanattack.Kind{lanattack.ErrorStatus, lanattack.RandomHMAC, lanattack.Abandon} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 8 {
						if _, err := lanattack.Handshake(src, h.BMC.Addr, h.BMC.User, k, time.Second); err != nil {
							errs <- fmt.Errorf("%s from %s: %w", k, src, err)
							return
						}
					}
				}()
			}
		}
		wg.Wait()
		for range 200 {
			_, err := lanattack.Handshake("127.0.0.2", h.BMC.Addr, h.BMC.User, lanattack.OpenOnly, time.Second)
			Expect(err).NotTo(HaveOccurred())
		}
		close(errs)
		for err := range errs {
			// A BMC that stops answering a stranger is fine; note it.
			GinkgoWriter.Printf("attacker: %v\n", err)
		}

		// The demo: the same command, carried by the BMC, at once — the
		// VMS's login is not refused for longer than the backoff's bound.
		t0 := time.Now()
		out, code := VmsctlStdout(ctx, "vm", "destroy", host, "web1", "-o", "json", "--timeout", "60s")
		Expect(code).To(Equal(0), out)
		var res VMResult
		Expect(json.Unmarshal([]byte(out), &res)).To(Succeed(), out)
		Expect(res.Via).To(Equal(client.ViaOOB))
		GinkgoWriter.Printf("destroy via the OOB-I after the attacks: %v\n", time.Since(t0).Round(time.Millisecond))
		Expect(time.Since(t0)).To(BeNumerically("<", 30*time.Second))

		out, code = VmsctlStdout(ctx, "vm", "start", host, "web1", "-o", "json", "--timeout", "60s")
		Expect(code).To(Equal(0), out)
		Expect(json.Unmarshal([]byte(out), &res)).To(Succeed(), out)
		Expect(res.Via).To(Equal(client.ViaOOB))
		Eventually(VM(ctx, client.ViaOOB, host, "web1")).WithTimeout(time.Minute).Should(BeInState("running"))

		// And the administrator's ipmitool still gets in with the right password.
		Expect(MustIpmitool(ctx, host, "chassis", "power", "status")).To(ContainSubstring("on"))
		MustLab(ctx, "plug", host, "vmmi")
	}, SpecTimeout(5*time.Minute))
})

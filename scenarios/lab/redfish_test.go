package lab_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/vmsctl/client"
)

// Redfish beside IPMI (issue 22): the lab BMC's Redfish service carries the
// failover demo's command with the VMM-I unplugged, and pushes hvagent's
// alert of a change made behind its back to an SSE subscriber.
var _ = Describe("Redfish", Lab, Redfish, Failover, Serial, Ordered, func() {
	const host = "h1"
	AfterAll(func(ctx SpecContext) { MustLab(ctx, "plug", host, "vmmi") })

	It("carries a destroy over the Redfish OOB-I exactly once, and pushes a local change's alert on the SSE stream", func(ctx SpecContext) {
		h, err := inv.Host(host)
		Expect(err).NotTo(HaveOccurred())
		Expect(h.BMC.Redfish).To(HavePrefix("https://127.0.0.1:"), "lab up puts the BMC's Redfish URL in the inventory")

		// An SSE subscriber, as a monitoring tool would be: the lab CA,
		// the VMS's BMC user (operator), Basic auth.
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(inv.Path(h.BMC.RedfishCAFile))
		Expect(err).NotTo(HaveOccurred())
		Expect(pool.AppendCertsFromPEM(pem)).To(BeTrue())
		pass, err := os.ReadFile(inv.Path(h.BMC.PasswordFile))
		Expect(err).NotTo(HaveOccurred())
		sctx, cancel := context.WithCancel(context.Background())
		DeferCleanup(cancel)
		// Only new log entries, as an alert watcher asks: the unfiltered
		// stream also carries a Queue2Record event per OOB-I answer (the
		// lab page's polls among them), and a subscriber that falls that
		// far behind is closed by the BMC.
		filter := url.Values{"$filter": {"MessageId eq 'ResourceEvent.1.3.ResourceCreated'"}}.Encode()
		req, err := http.NewRequestWithContext(sctx, "GET", h.BMC.Redfish+"/redfish/v1/EventService/SSE?"+filter, nil)
		Expect(err).NotTo(HaveOccurred())
		req.SetBasicAuth(h.BMC.User, strings.TrimSpace(string(pass)))
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := hc.Do(req)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(resp.Body.Close)
		Expect(resp.StatusCode).To(Equal(200))
		lines := make(chan string, 1024)
		go func() {
			defer GinkgoRecover()
			rd := bufio.NewReader(resp.Body)
			for {
				l, err := rd.ReadString('\n')
				if err != nil {
					close(lines)
					return
				}
				select {
				case lines <- l:
				default: // a slow reader never blocks the stream
				}
			}
		}()

		Eventually(VM(ctx, client.ViaOOB, host, "web1")).WithTimeout(time.Minute).Should(BeInState("running"))
		since, err := ConsoleSince(host)
		Expect(err).NotTo(HaveOccurred())
		MustLab(ctx, "unplug", host, "vmmi")
		out, code := VmsctlStdout(ctx, "--oob-transport", "redfish", "vm", "destroy", host, "web1", "--timeout", "60s", "-o", "json")
		Expect(code).To(Equal(0), out)
		var res VMResult
		Expect(json.Unmarshal([]byte(out), &res)).To(Succeed(), out)
		Expect(res.Via).To(Equal(client.ViaOOBRedfish), out)
		Eventually(func(g Gomega) {
			log, err := since()
			g.Expect(err).NotTo(HaveOccurred())
			lines := AgentLines(log, res.RequestID)
			g.Expect(Executions(lines)).To(Equal(1), strings.Join(lines, "\n"))
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		MustLab(ctx, "plug", host, "vmmi")

		// A change behind hvagent's back: its alert reaches the SEL over KCS
		// and the subscriber as a Redfish event.
		MustLab(ctx, "exec", host, "--", "virsh", "start", "web1")
		Eventually(lines).WithTimeout(time.Minute).Should(Receive(ContainSubstring("unauthorized local change")))
	}, SpecTimeout(4*time.Minute))
})

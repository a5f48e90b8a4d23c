package lab_test

import (
	"encoding/json"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

var _ = Describe("What the VMS side sees", Lab, VMSSide, func() {
	const host = "h1"

	It("shows a running VM's vCPUs, memory and uptime over both channels", func(ctx SpecContext) {
		_, err := Do(ctx, client.ViaVMMI, host, vmsg.CmdStart, "web1") // running since boot; start is idempotent
		Expect(err).NotTo(HaveOccurred())
		Eventually(VM(ctx, client.ViaVMMI, host, "web1")).WithTimeout(time.Minute).Should(BeInState("running"))
		for _, via := range []string{client.ViaVMMI, client.ViaOOB} {
			for _, cmd := range []vmsg.Command{vmsg.CmdList, vmsg.CmdStatus} {
				vm := ""
				if cmd == vmsg.CmdStatus {
					vm = "web1"
				}
				res, err := Do(ctx, via, host, cmd, vm)
				Expect(err).NotTo(HaveOccurred(), "%s %s", via, cmd)
				Expect(res.Via).To(Equal(via))
				var web1 *vmsg.VMState
				for i := range res.Reply.VMs {
					if res.Reply.VMs[i].Name == "web1" {
						web1 = &res.Reply.VMs[i]
					}
				}
				Expect(web1).NotTo(BeNil(), "%s %s: %+v", via, cmd, res.Reply.VMs)
				GinkgoWriter.Printf("%s %s web1: %+v\n", via, cmd, *web1)
				Expect(web1.State).To(Equal("running"))
				Expect(web1.VCPUs).To(BeNumerically(">", 0), "%s %s", via, cmd)
				Expect(web1.MemoryKiB).To(BeNumerically(">", 0), "%s %s", via, cmd)
				Expect(web1.MaxMemKiB).To(BeNumerically(">=", web1.MemoryKiB))
				Expect(web1.Persistent).To(BeTrue())
				Expect(web1.Reason).NotTo(BeEmpty())
				Expect(web1.UptimeSource).To(Equal("qemu-process"), "hvagent reads the QEMU process's start")
				Expect(web1.UptimeSec).To(BeNumerically(">", 0))
			}
		}
	}, SpecTimeout(3*time.Minute))

	It("prints them with vmsctl in the documented JSON schema, over either channel", func(ctx SpecContext) {
		for _, via := range []string{"vmmi", "oob"} {
			out, code := Vmsctl(ctx, "--via", via, "-o", "json", "vm", "list", host)
			Expect(code).To(Equal(0), out)
			var res struct {
				Via string `json:"via"`
				VMs []struct {
					Name      string `json:"name"`
					State     string `json:"state"`
					VCPUs     uint32 `json:"vcpus"`
					MemoryKiB uint64 `json:"memory_kib"`
					UptimeS   uint64 `json:"uptime_s"`
				} `json:"vms"`
			}
			Expect(json.Unmarshal([]byte(out), &res)).To(Succeed(), out)
			Expect(res.VMs).NotTo(BeEmpty())
			for _, v := range res.VMs {
				Expect(v.VCPUs).To(BeNumerically(">", 0), "every VM, running or not, has its vCPUs: %s", out)
				Expect(v.MemoryKiB).To(BeNumerically(">", 0), out)
				if v.Name == "web1" {
					Expect(v.State).To(Equal("running"))
					Expect(v.UptimeS).To(BeNumerically(">", 0))
				}
			}
			table, code := Vmsctl(ctx, "--via", via, "vm", "list", host)
			Expect(code).To(Equal(0), table)
			AddReportEntry("vm list via "+via, table)
		}
	}, SpecTimeout(2*time.Minute))

	It("journals --meta with a request sent over the OOB-I and lists it in history over the VMM-I", func(ctx SpecContext) {
		ticket := fmt.Sprintf("E2E-%d", time.Now().UnixNano())
		out, code := Vmsctl(ctx, "--via", "oob", "--meta", "ticket="+ticket, "-o", "json", "vm", "start", host, "web1")
		Expect(code).To(Equal(0), out)
		var started struct {
			RequestID string            `json:"request_id"`
			Metadata  map[string]string `json:"metadata"`
		}
		Expect(json.Unmarshal([]byte(out), &started)).To(Succeed(), out)
		Expect(started.Metadata).To(HaveKeyWithValue("ticket", ticket), "the agent returns what it recorded")

		out, code = Vmsctl(ctx, "--via", "vmmi", "-o", "json", "history", host)
		Expect(code).To(Equal(0), out)
		var h struct {
			Requests []struct {
				RequestID string            `json:"request_id"`
				Via       string            `json:"via"`
				Action    string            `json:"action"`
				VM        string            `json:"vm"`
				OK        bool              `json:"ok"`
				Metadata  map[string]string `json:"metadata"`
				VMSOOBI   string            `json:"vms_oob_i"`
				VMSVMMI   string            `json:"vms_vmm_i"`
			} `json:"requests"`
		}
		Expect(json.Unmarshal([]byte(out), &h)).To(Succeed(), out)
		found := false
		for _, r := range h.Requests {
			if r.Metadata["ticket"] == ticket {
				found = true
				Expect(r.RequestID).To(Equal(started.RequestID))
				Expect(r.Via).To(Equal(client.ViaOOB))
				Expect(r.Action).To(Equal("start"))
				Expect(r.VM).To(Equal("web1"))
				Expect(r.OK).To(BeTrue())
				// The VMS's own addresses (the lab runs on loopback), not
				// the host's BMC and VMM-I addresses.
				Expect(r.VMSOOBI).To(Equal("127.0.0.1"))
				Expect(r.VMSVMMI).To(Equal("127.0.0.1"))
			}
		}
		Expect(found).To(BeTrue(), "history lacks ticket %s:\n%s", ticket, out)
	}, SpecTimeout(2*time.Minute))

	It("reads the host's power and SEL from its BMC with vmsctl", func(ctx SpecContext) {
		out, code := Vmsctl(ctx, "-o", "json", "host", "power", "status", host)
		Expect(code).To(Equal(0), out)
		var st struct {
			Power string `json:"power"`
		}
		Expect(json.Unmarshal([]byte(out), &st)).To(Succeed(), out)
		Expect(st.Power).To(Equal("on"))
		out, code = Vmsctl(ctx, "host", "sel", host)
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("SEL record(s) from BMC"))
	}, SpecTimeout(time.Minute))
})

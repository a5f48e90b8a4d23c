package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// The failover demo in a browser (issue 24): the lab's page in headless
// Chromium, driven by the controls' accessible names as a keyboard or
// screen-reader user would find them.
var _ = Describe("Lab page", Lab, UI, Failover, Serial, Ordered, func() {
	const host = "h1"
	var (
		browser context.Context
		url     string
	)

	BeforeAll(func(ctx SpecContext) {
		chromium, err := exec.LookPath("chromium")
		need(err)
		b, err := os.ReadFile(filepath.Join(labDir, "lab.json"))
		Expect(err).NotTo(HaveOccurred())
		var st struct {
			UIURL string `json:"ui_url"`
		}
		Expect(json.Unmarshal(b, &st)).To(Succeed())
		Expect(st.UIURL).To(HavePrefix("http://127.0.0.1:"), "lab up starts the page and records its URL")
		url = st.UIURL
		opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium),
			chromedp.NoSandbox, chromedp.DisableGPU, chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true), chromedp.WindowSize(1280, 720), chromedp.UserDataDir(GinkgoT().TempDir()))
		actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
		DeferCleanup(cancelA)
		var cancelB context.CancelFunc
		browser, cancelB = chromedp.NewContext(actx)
		DeferCleanup(cancelB)
		_, err = chromedp.Run(browser, chromedp.Navigate("about:blank"))
		Expect(err).NotTo(HaveOccurred(), "start chromium")
	})
	AfterAll(func(ctx SpecContext) { MustLab(ctx, "plug", host, "vmmi") })

	text := func() (string, error) {
		return chromedp.Run(browser, chromedp.Evaluate[string](`document.body.innerText`))
	}
	// press clicks the control with that accessible name (in the page's
	// script, so a re-render between finding and clicking cannot miss).
	press := func(name string) {
		GinkgoHelper()
		Eventually(func() (bool, error) {
			return chromedp.Run(browser, chromedp.Evaluate[bool](fmt.Sprintf(
				`(() => { const b = document.querySelector('[aria-label=%q]'); if (!b) return false; b.click(); return true })()`, name)))
		}).WithTimeout(30*time.Second).WithPolling(200*time.Millisecond).Should(BeTrue(), "no control named %q", name)
	}
	// commandRow is the newest command row's text.
	commandRow := func() (string, error) {
		return chromedp.Run(browser, chromedp.Evaluate[string](`(document.querySelector('#commands tbody tr')||{}).innerText||""`))
	}

	It("shows h1, both channels and its VMs; unplugging the VMM-I and destroying web1 goes through the BMC", func(ctx SpecContext) {
		Eventually(Via(ctx, client.ViaAuto, host, vmsg.CmdList, "")).WithTimeout(time.Minute).Should(Equal(client.ViaVMMI))
		Eventually(VM(ctx, client.ViaOOB, host, "web1")).WithTimeout(time.Minute).Should(BeInState("running"))
		t0 := time.Now()
		_, err := chromedp.Run(browser, chromedp.Navigate(url))
		Expect(err).NotTo(HaveOccurred())
		Eventually(text).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(
			And(ContainSubstring("h1"), ContainSubstring("web1"), ContainSubstring("db1"), ContainSubstring("app1")))
		GinkgoWriter.Printf("page showed h1 and its VMs %v after navigating\n", time.Since(t0).Round(time.Millisecond))
		Eventually(text).WithTimeout(30 * time.Second).Should(MatchRegexp(`VMM-I UP`))

		press("Unplug VMM-I h1")
		Eventually(text).WithTimeout(30 * time.Second).Should(MatchRegexp(`VMM-I DOWN`))
		press("Destroy web1 on h1")
		Eventually(commandRow).WithTimeout(2 * time.Minute).WithPolling(200 * time.Millisecond).Should(
			And(ContainSubstring("destroy web1"), ContainSubstring("oob-i"), ContainSubstring("ok: shut off")))
		Expect(VM(ctx, client.ViaOOB, host, "web1")()).To(BeInState("shut off"))
	}, SpecTimeout(5*time.Minute))

	It("shows the alert of a local virsh start as it arrives", func(ctx SpecContext) {
		MustLab(ctx, "exec", host, "--", "virsh", "start", "web1")
		Eventually(func() (string, error) {
			return chromedp.Run(browser, chromedp.Evaluate[string](`document.querySelector('#alerts tbody').innerText`))
		}).WithTimeout(2 * time.Minute).WithPolling(250 * time.Millisecond).Should(
			And(ContainSubstring("web1"), ContainSubstring("unauthorized local change")))
		// The same alert, as the BMC's event log holds it (over KCS).
		Eventually(func() (string, error) {
			return chromedp.Run(browser, chromedp.Evaluate[string](`document.querySelector('#sel tbody').innerText`))
		}).WithTimeout(time.Minute).WithPolling(250 * time.Millisecond).Should(ContainSubstring("hvagent alert: unauthorized local change"))
		press("Plug VMM-I h1")
		Eventually(text).WithTimeout(time.Minute).Should(MatchRegexp(`VMM-I UP`))
		out, _ := text()
		Expect(strings.Count(out, "h1")).To(BeNumerically(">=", 1))
	}, SpecTimeout(4*time.Minute))
})

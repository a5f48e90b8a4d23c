package lab_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/termtest"
)

// The host's serial console through its BMC: each console logs in on the
// getty of ttyS0 and gets an answer to a typed line. One SOL session per
// host, so the specs run one after the other.
var _ = Describe("The host's serial console over SOL", Lab, SOL, VMSSide, Serial, Ordered, func() {
	const host = "h1"

	It("is ipmitool sol activate's: a login prompt, and a shell that answers", func(ctx SpecContext) {
		h, err := inv.Host(host)
		Expect(err).NotTo(HaveOccurred())
		hostPart, port, _ := strings.Cut(h.BMC.Addr, ":")
		t := startTerm(exec.Command("ipmitool", "-I", "lanplus", "-C", "17", "-H", hostPart, "-p", port,
			"-U", h.BMC.ConsoleUser, "-f", inv.Path(h.BMC.ConsolePasswordFile), "sol", "activate"))
		Expect(expect(ctx, t, 0, "SOL Session operational")).To(Succeed())
		Expect(loginAndEcho(ctx, t, "ipmitool")).To(Succeed())
		Expect(logout(ctx, t)).To(Succeed())
		Expect(t.Type("\r~.")).To(Succeed())
		Expect(t.Wait(ctx)).To(Succeed())
	}, NodeTimeout(4*time.Minute))

	It("is FreeIPMI ipmiconsole's too", func(ctx SpecContext) {
		h, err := inv.Host(host)
		Expect(err).NotTo(HaveOccurred())
		pw, err := os.ReadFile(inv.Path(h.BMC.ConsolePasswordFile))
		Expect(err).NotTo(HaveOccurred())
		t := startTerm(exec.Command("ipmiconsole", "-h", h.BMC.Addr, "-u", h.BMC.ConsoleUser,
			"-p", strings.TrimSpace(string(pw)), "-l", "ADMIN", "-I", "17"))
		Expect(expect(ctx, t, 0, "[SOL established]")).To(Succeed())
		Expect(loginAndEcho(ctx, t, "ipmiconsole")).To(Succeed())
		Expect(logout(ctx, t)).To(Succeed())
		Expect(t.Type("&.")).To(Succeed())
		Expect(t.Wait(ctx)).To(Succeed())
	}, NodeTimeout(4*time.Minute))

	It("is vmsctl host console's, with the inventory's BMC credentials", func(ctx SpecContext) {
		t := startTerm(exec.Command(filepath.Join(root, "bin", "vmsctl"), "--inventory", filepath.Join(labDir, "inventory.json"),
			"host", "console", host))
		Expect(expect(ctx, t, 0, "serial console up")).To(Succeed())
		Expect(loginAndEcho(ctx, t, "vmsctl")).To(Succeed())
		Expect(logout(ctx, t)).To(Succeed())
		Expect(t.Type("\r~.")).To(Succeed())
		Expect(t.Wait(ctx)).To(Succeed())
		AddReportEntry("vmsctl host console "+host, tail(t.Output()))
	}, NodeTimeout(4*time.Minute))
})

func startTerm(cmd *exec.Cmd) *termtest.Term {
	GinkgoHelper()
	t, err := termtest.Start(cmd)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		GinkgoWriter.Printf("%s printed:\n%s\n", filepath.Base(cmd.Path), tail(t.Output()))
		_ = t.Close()
	})
	return t
}

// expect waits for want after offset from, for at most 2 minutes (a login
// under TCG on a loaded machine takes seconds).
func expect(ctx context.Context, t *termtest.Term, from int, want string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_, err := t.Expect(ctx, from, want)
	return err
}

// loginAndEcho logs in as root on the host's ttyS0 getty (the lab's
// console-root.password) and checks the shell answers a typed line.
func loginAndEcho(ctx context.Context, t *termtest.Term, who string) error {
	pw, err := os.ReadFile(filepath.Join(labDir, "h1", "console-root.password"))
	if err != nil {
		return err
	}
	// Enter draws a fresh prompt from getty (or from a shell left open).
	from := t.Len()
	if err := t.Type("\r"); err != nil {
		return err
	}
	if err := expect(ctx, t, from, "login: "); err != nil {
		return fmt.Errorf("no login prompt: %w", err)
	}
	from = t.Len()
	if err := t.Type("root\r"); err != nil {
		return err
	}
	if err := expect(ctx, t, from, "Password: "); err != nil {
		return err
	}
	from = t.Len()
	if err := t.Type(strings.TrimSpace(string(pw)) + "\r"); err != nil {
		return err
	}
	if err := expect(ctx, t, from, "# "); err != nil {
		return fmt.Errorf("no root shell after login: %w", err)
	}
	from = t.Len()
	if err := t.Type("echo " + who + "-$((6*7))\r"); err != nil {
		return err
	}
	return expect(ctx, t, from, who+"-42")
}

// logout leaves the shell and waits for getty's next prompt, so the next
// console finds a login prompt, not this shell.
func logout(ctx context.Context, t *termtest.Term) error {
	from := t.Len()
	if err := t.Type("exit\r"); err != nil {
		return err
	}
	return expect(ctx, t, from, "login: ")
}

func tail(s string) string {
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

package lab_test

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/lab/ctl"
	"github.com/ooblab/ooblab/vmsctl/client"
)

var (
	clientsMu sync.Mutex
	clients   = map[string]*client.Client{}
)

// Client returns the suite's long-lived vmsctl client for a channel, as a
// VMS would keep one (connections, sessions and channel health persist).
func Client(via string) *client.Client {
	clientsMu.Lock()
	defer clientsMu.Unlock()
	if c := clients[via]; c != nil {
		return c
	}
	c, err := client.New(inv, client.Options{Via: via, Logger: slog.New(slog.DiscardHandler)})
	Expect(err).NotTo(HaveOccurred())
	clients[via] = c
	return c
}

// Do runs one VM command through vmsctl's Go package on the given channel.
func Do(via, host string, cmd vmsg.Command, vm string) (*client.Result, error) {
	c := Client(via)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return c.Do(ctx, host, cmd, vm)
}

// VM returns a getter of a nested VM's state as hvagent reports it, for
// Eventually(VM(host, "web1")).Should(BeInState("running")).
func VM(via, host, name string) func() (string, error) {
	return func() (string, error) {
		res, err := Do(via, host, vmsg.CmdStatus, name)
		if err != nil {
			return "", err
		}
		if len(res.Reply.VMs) == 0 {
			return "", fmt.Errorf("no VM in the reply")
		}
		return res.Reply.VMs[0].State, nil
	}
}

// BeInState matches a VM state word ("running", "shut off", "paused").
func BeInState(s string) types.GomegaMatcher { return Equal(s) }

// RunLab runs bin/lab with the suite's state folder.
func RunLab(args ...string) string {
	out, err := exec.Command(filepath.Join(root, "bin", "lab"), append([]string{"--dir", labDir}, args...)...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "lab %v:\n%s", args, out)
	return string(out)
}

// Vmsctl runs the vmsctl binary as an operator would.
func Vmsctl(args ...string) (string, int) {
	cmd := exec.Command(filepath.Join(root, "bin", "vmsctl"), append([]string{"--inventory", filepath.Join(labDir, "inventory.json")}, args...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return string(out), code
}

// Ipmitool runs ipmitool against host's BMC with the lab's credentials.
func Ipmitool(host string, args ...string) string {
	h, err := inv.Host(host)
	Expect(err).NotTo(HaveOccurred())
	hostPart, port, _ := strings.Cut(h.BMC.Addr, ":")
	base := []string{"-I", "lanplus", "-C", "17", "-H", hostPart, "-p", port, "-U", h.BMC.User, "-f", inv.Path(h.BMC.PasswordFile)}
	out, err := exec.Command("ipmitool", append(base, args...)...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "ipmitool %v:\n%s", args, out)
	return string(out)
}

var _ = ctl.Dir

// SpecContextTimeout is a minute-long context for direct client calls.
func SpecContextTimeout() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	DeferCleanup(cancel)
	return ctx
}

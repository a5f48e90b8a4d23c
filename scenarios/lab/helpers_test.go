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

	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// The helpers take the spec's context and return errors: a spec asserts
// with Expect, a poll with Eventually retries what failed for now (a
// transient ipmitool or channel error is a retry, not a failed spec).

var (
	clientsMu sync.Mutex
	clients   = map[string]*client.Client{}
)

// Client returns the suite's long-lived vmsctl client for a channel, as a
// VMS would keep one (connections, sessions and channel health persist).
func Client(via string) (*client.Client, error) {
	clientsMu.Lock()
	defer clientsMu.Unlock()
	if c := clients[via]; c != nil {
		return c, nil
	}
	c, err := client.New(inv, client.Options{Via: via, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	clients[via] = c
	return c, nil
}

// Do runs one VM command through vmsctl's Go package on the given channel,
// for at most a minute.
func Do(ctx context.Context, via, host string, cmd vmsg.Command, vm string) (*client.Result, error) {
	c, err := Client(via)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return c.Do(ctx, host, cmd, vm)
}

// VM returns a getter of a nested VM's state as hvagent reports it, for
// Eventually(VM(ctx, via, host, "web1")).Should(BeInState("running")).
func VM(ctx context.Context, via, host, name string) func() (string, error) {
	return func() (string, error) {
		res, err := Do(ctx, via, host, vmsg.CmdStatus, name)
		if err != nil {
			return "", err
		}
		if len(res.Reply.VMs) == 0 {
			return "", fmt.Errorf("no VM in the reply")
		}
		return res.Reply.VMs[0].State, nil
	}
}

// Via returns a getter of the channel that carried a command, for
// Eventually(Via(ctx, client.ViaAuto, host, vmsg.CmdPing, "")).Should(Equal(client.ViaVMMI)).
func Via(ctx context.Context, via, host string, cmd vmsg.Command, vm string) func() (string, error) {
	return func() (string, error) {
		res, err := Do(ctx, via, host, cmd, vm)
		if err != nil {
			return "", err
		}
		return res.Via, nil
	}
}

// AlertsJSON returns a getter of host's alert log as `vmsctl alerts -o
// json` prints it, for
// Eventually(AlertsJSON(ctx, host)).Should(ContainSubstring("intern")).
func AlertsJSON(ctx context.Context, host string) func(Gomega) string {
	return func(g Gomega) string {
		out, code := Vmsctl(ctx, "alerts", host, "-o", "json")
		g.Expect(code).To(Equal(0), out)
		return out
	}
}

// BeInState matches a VM state word ("running", "shut off", "paused").
func BeInState(s string) types.GomegaMatcher { return Equal(s) }

// RunLab runs bin/lab with the suite's state folder.
func RunLab(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, filepath.Join(root, "bin", "lab"), append([]string{"--dir", labDir}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("lab %v: %w\n%s", args, err, out)
	}
	return string(out), nil
}

// Vmsctl runs the vmsctl binary as an operator would and returns its output
// and exit code (-1 when it could not run).
func Vmsctl(ctx context.Context, args ...string) (string, int) {
	out, err := vmsctlCmd(ctx, args).CombinedOutput()
	return string(out), exitCode(err)
}

// VmsctlStdout runs vmsctl like Vmsctl but returns its standard output
// alone, for output that is parsed (JSON); its standard error (warnings
// such as a BMC session reopened under load) goes to GinkgoWriter.
func VmsctlStdout(ctx context.Context, args ...string) (string, int) {
	cmd := vmsctlCmd(ctx, args)
	cmd.Stderr = GinkgoWriter
	out, err := cmd.Output()
	return string(out), exitCode(err)
}

func vmsctlCmd(ctx context.Context, args []string) *exec.Cmd {
	return exec.CommandContext(ctx, filepath.Join(root, "bin", "vmsctl"), append([]string{"--inventory", filepath.Join(labDir, "inventory.json")}, args...)...)
}

// exitCode is a finished command's exit status, -1 when it did not run.
func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	} else if err != nil {
		return -1
	}
	return 0
}

// Ipmitool runs ipmitool against host's BMC with the lab's administrator
// account (the inventory's console user), as the README tour does: ipmitool
// asks for ADMINISTRATOR unless told otherwise, and the OOB-I's own account
// is an OPERATOR.
func Ipmitool(ctx context.Context, host string, args ...string) (string, error) {
	h, err := inv.Host(host)
	if err != nil {
		return "", err
	}
	hostPart, port, _ := strings.Cut(h.BMC.Addr, ":")
	base := []string{"-I", "lanplus", "-C", "17", "-H", hostPart, "-p", port, "-U", h.BMC.ConsoleUser, "-f", inv.Path(h.BMC.ConsolePasswordFile)}
	out, err := exec.CommandContext(ctx, "ipmitool", append(base, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %v: %w\n%s", args, err, out)
	}
	return string(out), nil
}

// MustLab and MustIpmitool are RunLab and Ipmitool for a spec's own steps
// (not inside Eventually): they fail the spec on error.
func MustLab(ctx context.Context, args ...string) string {
	GinkgoHelper()
	out, err := RunLab(ctx, args...)
	Expect(err).NotTo(HaveOccurred())
	return out
}

func MustIpmitool(ctx context.Context, host string, args ...string) string {
	GinkgoHelper()
	out, err := Ipmitool(ctx, host, args...)
	Expect(err).NotTo(HaveOccurred())
	return out
}

// need skips the spec when err says this machine lacks what it needs, or
// fails it under CI, which must run every spec (testutil.Need's rule).
func need(err error) {
	GinkgoHelper()
	if err == nil {
		return
	}
	if testutil.InCI() {
		Fail("CI must run this spec: " + err.Error())
	}
	Skip(err.Error())
}

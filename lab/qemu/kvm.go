package qemu

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// KVMProbeTimeout is how long a KVM guest may take from start to the
// kernel's "VFS: Unable to mount root" panic (full kernel init, 2 vCPUs). On
// a working KVM host that takes well under a second; under TCG ~4.3 s here.
const KVMProbeTimeout = 2500 * time.Millisecond

var kvmCache struct {
	sync.Mutex
	done bool
	ok   bool
}

// KVMUsable tells whether QEMU guests actually run under KVM here, booting
// kernel (a bzImage, e.g. lab/image's Kernel; "" = the newest readable
// /boot/vmlinuz-*) as the probe payload. The answer is computed once per
// process (ProbeKVM) and logged.
func KVMUsable(ctx context.Context, kernel string, log *slog.Logger) bool {
	kvmCache.Lock()
	defer kvmCache.Unlock()
	if kvmCache.done {
		return kvmCache.ok
	}
	ok, why := ProbeKVM(ctx, kernel)
	if ctx.Err() == nil {
		kvmCache.done, kvmCache.ok = true, ok
	}
	if log != nil {
		if ok {
			log.Info("KVM usable", "why", why)
		} else {
			log.Info("KVM not usable; guests run under TCG (slower)", "why", why)
		}
	}
	return ok
}

// hostKernel is the build host's readable /boot/vmlinuz-* that sorts last
// (the newest, by name), or "" if there is none (Debian makes them
// root-only).
func hostKernel() string {
	m, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(m)))
	for _, k := range m {
		if f, err := os.Open(k); err == nil {
			f.Close()
			return k
		}
	}
	return ""
}

// ProbeKVM boots kernel with no root disk under -accel kvm and waits for
// its "VFS: Unable to mount root" panic on the serial port: that proves
// vCPUs run a Linux kernel through its whole init (timers, SMP). /dev/kvm
// existing, or even firmware running, is not enough: on this kind of host
// (nested virtualisation) SeaBIOS runs, slowly, and Linux hangs before its
// first line.
func ProbeKVM(ctx context.Context, kernel string) (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, err.Error()
	}
	f.Close()
	if kernel == "" {
		if kernel = hostKernel(); kernel == "" {
			return false, "no readable /boot/vmlinuz-* to probe KVM with"
		}
	}
	ctx, cancel := context.WithTimeout(ctx, KVMProbeTimeout)
	defer cancel()
	cmd := exec.Command("qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
		"-machine", "pc", "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "2", "-monitor", "none",
		"-kernel", kernel, "-append", "console=ttyS0 panic=-1 loglevel=4",
		"-serial", "stdio", "-no-reboot")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return false, err.Error()
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return false, err.Error()
	}
	t0 := time.Now()
	reached := make(chan bool, 1)
	var lastLine string
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lastLine = sc.Text()
			if strings.Contains(lastLine, "Unable to mount root") {
				reached <- true
				return
			}
		}
		reached <- false
	}()
	var ok, got bool
	select {
	case ok = <-reached:
		got = true
	case <-ctx.Done():
	}
	cmd.Process.Kill()
	cmd.Wait() // closes the pipe, which ends the scanner
	if ok {
		return true, fmt.Sprintf("a KVM guest kernel finished init in %v", time.Since(t0).Round(time.Millisecond))
	}
	if !got {
		<-reached
	}
	// the scanner has ended (Wait closed the pipe); lastLine is ours now
	return false, fmt.Sprintf("a KVM guest kernel did not finish init within %v (last console line %q; qemu: %s)",
		KVMProbeTimeout, lastLine, strings.TrimSpace(stderr.String()))
}

package image

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

const eatmydataHooks = "/usr/share/mmdebstrap/hooks/eatmydata"

// mmdebstrap bootstraps the Debian root filesystem into dir (root mode).
func mmdebstrap(ctx context.Context, r Recipe, dir string, log *slog.Logger) error {
	args := []string{
		"--mode=root",
		"--variant=" + r.Variant,
		"--include=" + strings.Join(r.Include, ","),
		"--aptopt=Acquire::Retries \"3\"",
		// Docs, man pages and translations are dead weight in a lab guest.
		"--dpkgopt=path-exclude=/usr/share/man/*",
		"--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-include=/usr/share/doc/*/copyright",
		"--dpkgopt=path-exclude=/usr/share/locale/*",
		"--dpkgopt=path-exclude=/usr/share/info/*",
		// libvirt 9.0 needs this user even with user="root" in qemu.conf.
		`--customize-hook=chroot "$1" getent passwd libvirt-qemu >/dev/null || chroot "$1" useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin libvirt-qemu`,
	}
	// dpkg without fsync: the image is rebuilt from scratch on any failure.
	// The hook fetches eatmydata into the chroot and removes it at the end.
	if st, err := os.Stat(eatmydataHooks); err == nil && st.IsDir() {
		args = append(args, "--hook-dir="+eatmydataHooks)
	}
	args = append(args, r.Suite, dir, r.Mirror)
	return run(ctx, log, "mmdebstrap", args...)
}

// customize writes the lab's own files into the bootstrapped tree.
func customize(r Recipe, dir string) error {
	w := func(rel string, data []byte, mode os.FileMode) error {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, data, mode)
	}
	init, _ := files.ReadFile("files/ooblab-init")
	if err := w("usr/local/sbin/ooblab-init", init, 0o755); err != nil {
		return err
	}
	pd, _ := files.ReadFile("files/ooblab-powerdown")
	if err := w("usr/local/sbin/ooblab-powerdown", pd, 0o755); err != nil {
		return err
	}
	if err := w("etc/acpi/PWRF/00000080", []byte("#!/bin/sh\nexec /usr/local/sbin/ooblab-powerdown\n"), 0o755); err != nil {
		return err
	}
	// busybox for acpid (the power button) only; no applet links.
	if err := copyFile(busyboxPath, filepath.Join(dir, "usr/local/bin/busybox"), 0o755); err != nil {
		return err
	}
	qc, _ := files.ReadFile("files/qemu.conf.append")
	f, err := os.OpenFile(filepath.Join(dir, "etc/libvirt/qemu.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("libvirt not in the image? %w", err)
	}
	if _, err := f.Write(qc); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// The default network needs dnsmasq, which the lab does not ship.
	os.Remove(filepath.Join(dir, "etc/libvirt/qemu/networks/autostart/default.xml"))
	if err := w("etc/hostname", []byte("hvhost\n"), 0o644); err != nil {
		return err
	}
	if err := w("etc/hosts", []byte("127.0.0.1 localhost\n127.0.1.1 hvhost\n"), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "etc/ooblab/vms"), 0o755); err != nil {
		return err
	}
	for name, xml := range r.VMs {
		if err := w("etc/ooblab/vms/"+name+".xml", []byte(xml), 0o644); err != nil {
			return err
		}
	}
	if len(r.HVAgentArgs) > 0 {
		if err := w("etc/ooblab/hvagent.args", []byte(strings.Join(r.HVAgentArgs, "\n")+"\n"), 0o644); err != nil {
			return err
		}
	}
	if r.HVAgent != "" {
		if err := copyFile(r.HVAgent, filepath.Join(dir, "usr/local/bin/hvagent"), 0o755); err != nil {
			return err
		}
	}
	return nil
}

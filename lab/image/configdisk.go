package image

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Config is one lab host's settings, delivered on the config disk so that
// changing them does not rebuild the image. ooblab-init copies the disk over
// /etc/ooblab at boot.
type Config struct {
	Hostname    string
	Net         string            // "ADDR/PREFIX GATEWAY"; empty = 10.0.2.15/24 10.0.2.2
	HVAgentArgs []string          // replaces the baked hvagent.args when set
	VMs         map[string]string // extra domains (name -> XML)
	StartVMs    []string          // domains to start at boot
	Files       map[string][]byte // more files, relative to /etc/ooblab
}

// BuildConfigDisk writes cfg as a small ext4 image at path (labelled
// ooblab-cfg), to attach as the guest's second virtio disk. It needs
// mkfs.ext4 (e2fsprogs), not root.
func BuildConfigDisk(ctx context.Context, cfg Config, path string) error {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".cfgdisk-")
	if err != nil {
		return fmt.Errorf("image: config disk: %w", err)
	}
	defer os.RemoveAll(dir)
	w := func(rel, data string) error {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, []byte(data), 0o600) // secrets among them: root only
	}
	var errs []error
	if cfg.Hostname != "" {
		errs = append(errs, w("hostname", cfg.Hostname+"\n"))
	}
	if cfg.Net != "" {
		errs = append(errs, w("net", cfg.Net+"\n"))
	}
	if len(cfg.HVAgentArgs) > 0 {
		errs = append(errs, w("hvagent.args", strings.Join(cfg.HVAgentArgs, "\n")+"\n"))
	}
	for n, x := range cfg.VMs {
		errs = append(errs, w("vms/"+n+".xml", x))
	}
	if len(cfg.StartVMs) > 0 {
		errs = append(errs, w("start-vms", strings.Join(cfg.StartVMs, "\n")+"\n"))
	}
	for n, b := range cfg.Files {
		errs = append(errs, w(n, string(b)))
	}
	for _, e := range errs {
		if e != nil {
			return fmt.Errorf("image: config disk: %w", e)
		}
	}
	os.Remove(path)
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", "ooblab-cfg", "-d", dir, path, "8M").CombinedOutput()
	if err != nil {
		return fmt.Errorf("image: config disk: mkfs.ext4: %w: %s", err, out)
	}
	return nil
}

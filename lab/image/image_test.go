package image

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func kernelOrSkip(t *testing.T) string {
	t.Helper()
	v, err := NewestKernel()
	if err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat(filepath.Join("/lib/modules", v, "modules.dep")); err != nil {
		t.Skip("no modules for ", v)
	}
	if f, err := os.Open(kernelPath(v)); err != nil {
		t.Skip("kernel not readable (Debian makes /boot/vmlinuz-* root-only): ", err)
	} else {
		f.Close()
	}
	return v
}

func TestKey(t *testing.T) {
	kernelOrSkip(t)
	r := DefaultRecipe()
	k1, _, err := Key(r)
	if err != nil {
		t.Fatal(err)
	}
	r2 := DefaultRecipe()
	slices.Reverse(r2.Include) // order does not matter
	if k2, _, _ := Key(r2); k2 != k1 {
		t.Errorf("package order changed the key: %s vs %s", k1, k2)
	}
	r2.Include = append(r2.Include, "strace")
	if k3, _, _ := Key(r2); k3 == k1 {
		t.Error("a new package did not change the key")
	}
	agent := filepath.Join(t.TempDir(), "hvagent")
	os.WriteFile(agent, []byte("v1"), 0o755)
	r3 := DefaultRecipe()
	r3.HVAgent = agent
	k4, _, _ := Key(r3)
	os.WriteFile(agent, []byte("v2"), 0o755)
	k5, _, _ := Key(r3)
	if k4 == k1 || k4 == k5 {
		t.Errorf("hvagent content not in the key: %s %s %s", k1, k4, k5)
	}
}

func TestModuleOrder(t *testing.T) {
	v := kernelOrSkip(t)
	order, err := moduleOrder(v, DefaultRecipe().Modules)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range order {
		n := filepath.Base(m)
		pos[n[:strings.Index(n, ".ko")]] = i
	}
	for _, dep := range [][2]string{
		{"virtio", "virtio_pci"}, {"virtio_ring", "virtio_blk"}, {"jbd2", "ext4"}, {"mbcache", "ext4"},
		{"crc32c_generic", "ext4"}, {"ipmi_msghandler", "ipmi_si"}, {"ipmi_msghandler", "ipmi_devintf"},
		{"failover", "virtio_net"},
	} {
		a, okA := pos[dep[0]]
		b, okB := pos[dep[1]]
		if !okA || !okB || a > b {
			t.Errorf("%s must load before %s: order %v", dep[0], dep[1], order)
		}
	}
	if _, err := moduleOrder(v, []string{"no_such_module"}); err == nil {
		t.Error("unknown module accepted")
	}
}

func TestInitramfs(t *testing.T) {
	v := kernelOrSkip(t)
	for _, tool := range []string{"cpio", busyboxPath} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool, " missing (make deps)")
		}
	}
	r := DefaultRecipe()
	r.KernelVersion = v
	dir := t.TempDir()
	out := filepath.Join(dir, "initrd.img")
	if err := buildInitramfs(context.Background(), r, filepath.Join(dir, "tree"), out); err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command("cpio", "-t", "--quiet", "-F", out).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"init", "bin/busybox", "modules.list", "lib/modules/ext4.ko", "lib/modules/ipmi_si.ko"} {
		if !slices.Contains(strings.Fields(string(list)), want) && !slices.Contains(strings.Fields(string(list)), "./"+want) {
			t.Errorf("initramfs lacks %s", want)
		}
	}
}

func TestConfigDisk(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 missing (e2fsprogs)")
	}
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs missing (e2fsprogs)")
	}
	p := filepath.Join(t.TempDir(), "cfg.ext4")
	err := BuildConfigDisk(context.Background(), Config{
		Hostname: "hv7", StartVMs: []string{"web1", "db1"}, HVAgentArgs: []string{"-v", "-listen", ":8443"},
		VMs: map[string]string{"x": DomainXML("x", 16)},
	}, p)
	if err != nil {
		t.Fatal(err)
	}
	cat := func(f string) string {
		out, err := exec.Command("debugfs", "-R", "cat /"+f, p).Output()
		if err != nil {
			t.Fatalf("debugfs cat %s: %v", f, err)
		}
		return string(out)
	}
	if got := cat("hvagent.args"); got != "-v\n-listen\n:8443\n" {
		t.Errorf("hvagent.args = %q", got)
	}
	if got := cat("start-vms"); got != "web1\ndb1\n" {
		t.Errorf("start-vms = %q", got)
	}
	if got := cat("vms/x.xml"); !strings.Contains(got, "<name>x</name>") || !strings.Contains(got, "<acpi/>") {
		t.Errorf("vms/x.xml = %q", got)
	}
	if !bytes.Contains([]byte(cat("hostname")), []byte("hv7")) {
		t.Error("hostname missing")
	}
}

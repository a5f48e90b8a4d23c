package initramfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCpioList checks the archive with Debian's cpio, when present.
func TestCpioList(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed; cannot cross-check the newc output")
	}
	b := New()
	b.Add(File{Path: "/init", Mode: 0o755, Data: []byte("#!/bin/sh\necho hi\n")})
	b.Add(File{Path: "bin/sh", Mode: os.ModeSymlink | 0o777, Data: []byte("busybox")})
	b.Add(File{Path: "dev/console", Mode: os.ModeDevice | os.ModeCharDevice | 0o600, Rdev: [2]uint32{5, 1}})
	b.Add(File{Path: "a/b/c/odd", Mode: 0o644, Data: []byte("x")})
	var gz bytes.Buffer
	if _, err := b.WriteTo(&gz); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "i.cpio.gz")
	os.WriteFile(img, gz.Bytes(), 0o644)
	out, err := exec.Command("sh", "-c", "gzip -dc "+img+" | "+cpio+" -itv 2>&1").CombinedOutput()
	if err != nil {
		t.Fatalf("cpio: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"init", "bin/sh -> busybox", "a/b/c/odd", "a/b", "crw-------"} {
		if !strings.Contains(s, want) {
			t.Errorf("listing lacks %q:\n%s", want, s)
		}
	}
}

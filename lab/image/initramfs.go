package image

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

const busyboxPath = "/bin/busybox"

// moduleDeps reads /lib/modules/<ver>/modules.dep: module path -> dep paths
// (relative to the version folder), and name -> path.
func moduleDeps(ver string) (deps map[string][]string, byName map[string]string, err error) {
	f, err := os.Open(filepath.Join("/lib/modules", ver, "modules.dep"))
	if err != nil {
		return nil, nil, fmt.Errorf("kernel modules of %s: %w (is linux-image-%s installed?)", ver, err, ver)
	}
	defer f.Close()
	deps, byName = map[string][]string{}, map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		n := filepath.Base(mod)
		n = n[:strings.Index(n, ".ko")]
		byName[strings.ReplaceAll(n, "-", "_")] = mod
	}
	return deps, byName, sc.Err()
}

// moduleOrder returns the module paths to insmod, dependencies first.
func moduleOrder(ver string, names []string) ([]string, error) {
	deps, byName, err := moduleDeps(ver)
	if err != nil {
		return nil, err
	}
	var order []string
	seen := map[string]bool{}
	var visit func(string)
	visit = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		// modules.dep lists the full closure, most dependent first: reverse.
		d := deps[p]
		for i := len(d) - 1; i >= 0; i-- {
			visit(d[i])
		}
		order = append(order, p)
	}
	for _, n := range names {
		p, ok := byName[strings.ReplaceAll(n, "-", "_")]
		if !ok {
			return nil, fmt.Errorf("module %s not found for kernel %s (built in?)", n, ver)
		}
		visit(p)
	}
	return order, nil
}

// buildInitramfs lays out the stage-1 tree in dir and writes it as a newc
// cpio archive (uncompressed: it is small, and the kernel unpacks it faster).
func buildInitramfs(ctx context.Context, r Recipe, dir, out string) error {
	for _, d := range []string{"bin", "dev", "proc", "sys", "newroot", "lib/modules"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(busyboxPath, filepath.Join(dir, "bin/busybox"), 0o755); err != nil {
		return err
	}
	if err := os.Symlink("busybox", filepath.Join(dir, "bin/sh")); err != nil {
		return err
	}
	init, _ := files.ReadFile("files/stage1-init")
	if err := os.WriteFile(filepath.Join(dir, "init"), init, 0o755); err != nil {
		return err
	}
	order, err := moduleOrder(r.KernelVersion, r.Modules)
	if err != nil {
		return err
	}
	var list strings.Builder
	for _, m := range order {
		src := filepath.Join("/lib/modules", r.KernelVersion, m)
		if strings.HasSuffix(m, ".xz") || strings.HasSuffix(m, ".zst") || strings.HasSuffix(m, ".gz") {
			return fmt.Errorf("module %s is compressed; busybox insmod needs plain .ko", m)
		}
		name := filepath.Base(m)
		if err := copyFile(src, filepath.Join(dir, "lib/modules", name), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(&list, name)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.list"), []byte(list.String()), 0o644); err != nil {
		return err
	}
	o, err := os.Create(out)
	if err != nil {
		return err
	}
	defer o.Close()
	cmd := exec.CommandContext(ctx, "sh", "-c", "find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet")
	cmd.Dir = dir
	cmd.Stdout = o
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cpio: %w: %s", err, stderr.String())
	}
	return o.Close()
}

// Package initramfs builds small Linux initramfs images (gzip-compressed
// cpio "newc") in pure Go: busybox, kernel modules, an init script and any
// other files, for guests that need seconds, not a root filesystem.
//
// newc record: a 110-byte ASCII header, the name (NUL-terminated), padding to
// 4 bytes, the data, padding to 4 bytes; the archive ends with "TRAILER!!!".
//
//	"070701" ino mode uid gid nlink mtime filesize devmajor devminor
//	rdevmajor rdevminor namesize check   (13 fields, 8 hex digits each)
package initramfs

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// File is one entry of the archive.
type File struct {
	Path string      // path inside the image, without leading "/"
	Mode os.FileMode // permission bits plus os.ModeDir / os.ModeSymlink / os.ModeCharDevice
	Data []byte      // contents; the link target for a symlink
	Rdev [2]uint32   // major, minor for a device node
}

// Builder collects files; parent directories are added automatically.
type Builder struct {
	files map[string]File
}

// New returns an empty Builder.
func New() *Builder { return &Builder{files: map[string]File{}} }

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// Add adds or replaces f.
func (b *Builder) Add(f File) {
	f.Path = clean(f.Path)
	for d := path.Dir(f.Path); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := b.files[d]; !ok {
			b.files[d] = File{Path: d, Mode: os.ModeDir | 0o755}
		}
	}
	b.files[f.Path] = f
}

// AddFile copies the host file src to dst with its permission bits.
func (b *Builder) AddFile(dst, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	b.Add(File{Path: dst, Mode: st.Mode().Perm(), Data: data})
	return nil
}

// AddBusybox adds a static busybox at /bin/busybox with links for applets
// (e.g. "sh", "mount", "insmod"). Busybox must be statically linked: the
// image has no libc.
func (b *Builder) AddBusybox(busybox string, applets ...string) error {
	if err := b.AddFile("bin/busybox", busybox); err != nil {
		return err
	}
	for _, a := range applets {
		b.Add(File{Path: "bin/" + a, Mode: os.ModeSymlink | 0o777, Data: []byte("busybox")})
	}
	return nil
}

// AddModule adds a kernel module under /lib/modules as NAME.ko, unpacking
// .ko.xz and .ko.zst with the host's xz or zstd.
func (b *Builder) AddModule(src string) (string, error) {
	base := filepath.Base(src)
	var data []byte
	var err error
	switch {
	case strings.HasSuffix(base, ".ko.xz"):
		data, err = exec.Command("xz", "-dc", src).Output()
		base = strings.TrimSuffix(base, ".xz")
	case strings.HasSuffix(base, ".ko.zst"):
		data, err = exec.Command("zstd", "-dc", src).Output()
		base = strings.TrimSuffix(base, ".zst")
	case strings.HasSuffix(base, ".ko"):
		data, err = os.ReadFile(src)
	default:
		return "", fmt.Errorf("initramfs: %s is not a kernel module", src)
	}
	if err != nil {
		return "", fmt.Errorf("initramfs: read module %s: %w", src, err)
	}
	dst := "lib/modules/" + base
	b.Add(File{Path: dst, Mode: 0o644, Data: data})
	return "/" + dst, nil
}

// FindModule finds module name (e.g. "ipmi_si") for kernel version kver
// under /lib/modules, compressed or not.
func FindModule(kver, name string) (string, error) {
	root := filepath.Join("/lib/modules", kver, "kernel")
	var found string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || found != "" {
			return err
		}
		n := d.Name()
		for _, ext := range []string{".ko", ".ko.xz", ".ko.zst"} {
			if n == name+ext {
				found = p
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("initramfs: look for module %s: %w", name, err)
	}
	if found == "" {
		return "", fmt.Errorf("initramfs: module %s not found under %s", name, root)
	}
	return found, nil
}

// WriteTo writes the gzip-compressed newc archive to w. Entries are sorted
// so that directories precede their contents and output is reproducible.
func (b *Builder) WriteTo(w io.Writer) (int64, error) {
	var buf bytes.Buffer
	names := make([]string, 0, len(b.files))
	for n := range b.files {
		names = append(names, n)
	}
	sort.Strings(names)
	ino := uint32(1)
	for _, n := range names {
		writeEntry(&buf, ino, b.files[n])
		ino++
	}
	writeEntry(&buf, 0, File{Path: "TRAILER!!!"})
	zw := gzip.NewWriter(w)
	if _, err := zw.Write(buf.Bytes()); err != nil {
		return 0, err
	}
	return int64(buf.Len()), zw.Close()
}

// WriteFile writes the archive to a file.
func (b *Builder) WriteFile(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if _, err := b.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("initramfs: write %s: %w", name, err)
	}
	return f.Close()
}

func writeEntry(buf *bytes.Buffer, ino uint32, f File) {
	mode := uint32(f.Mode.Perm())
	switch {
	case f.Mode&os.ModeDir != 0:
		mode |= 0o040000
	case f.Mode&os.ModeSymlink != 0:
		mode |= 0o120000
	case f.Mode&os.ModeCharDevice != 0:
		mode |= 0o020000
	case f.Mode&os.ModeDevice != 0:
		mode |= 0o060000
	case f.Path != "TRAILER!!!":
		mode |= 0o100000
	}
	nlink := uint32(1)
	if f.Mode&os.ModeDir != 0 {
		nlink = 2
	}
	name := f.Path
	fmt.Fprintf(buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(f.Data), 0, 0, f.Rdev[0], f.Rdev[1], len(name)+1, 0)
	buf.WriteString(name)
	buf.WriteByte(0)
	pad(buf)
	buf.Write(f.Data)
	pad(buf)
}

func pad(buf *bytes.Buffer) {
	for buf.Len()%4 != 0 {
		buf.WriteByte(0)
	}
}

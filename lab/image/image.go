// Package image builds the artifacts of the ooblab hypervisor-host guest and
// caches them by a hash of their recipe.
//
// The artifacts, in <cache>/ooblab/images/<key>/ (cache = $XDG_CACHE_HOME or
// ~/.cache):
//
//	vmlinuz      the build host's Debian kernel (/boot/vmlinuz-<ver>)
//	vmlinux      the same kernel unpacked, booted PVH (no decompression
//	             under TCG; pvh.go) when it has the PVH entry point
//	initrd.img   stage-1 initramfs: busybox-static, the modules below, /init
//	root.qcow2   Debian root filesystem (ext4 in qcow2), with libvirt and QEMU
//	recipe.json  what the key was computed from
//
// Boot chain: the kernel runs /init from the initramfs, which insmods (in
// dependency order) virtio_pci, virtio_blk, virtio_net, crc32c, ext4 and the
// IPMI modules (ipmi_msghandler, ipmi_devintf, ipmi_si), mounts root= (default
// /dev/vda) and switch_roots to /usr/local/sbin/ooblab-init. That script is
// PID 1 (no systemd): it mounts /proc, /sys, /dev, /run, applies the lab config
// disk, brings up the VMM-I NIC, starts libvirtd, defines the domains from
// /etc/ooblab/vms/*.xml, starts those in /etc/ooblab/start-vms and runs
// /usr/local/bin/hvagent, printing markers on the console. The ACPI power
// button (QMP system_powerdown, or a BMC's graceful shutdown) runs
// ooblab-powerdown through busybox acpid: domains are shut down (destroyed
// after 5 s), then the guest powers off.
//
//	ooblab: stage1 t=<uptime>
//	ooblab: rootfs up t=…
//	ooblab: ipmi dev=/dev/ipmi0 t=…     (or "ooblab: ipmi none …")
//	ooblab: getty ttyS0 t=…            (login prompt on the serial console, SOL)
//	ooblab: network up dev=eth0 addr=10.0.2.15/24 t=…
//	ooblab: libvirtd up t=…
//	ooblab: vms defined n=2 t=…
//	ooblab: vm <name> running t=…
//	ooblab: hvagent started t=…        (or "ooblab: no hvagent, idle")
//	ooblab: vmmi carrier down n=1 t=…  (and "up n=2"…: VMM-I link changes)
//	ooblab: powerdown requested t=…, ooblab: powering off t=…
//	ooblab: FAILED: <what> t=…         on any failure
//
// Because ipmi_si loads in stage 1, the BMC (the ipmi-bmc-extern chardev peer)
// must be listening before QEMU starts, or /dev/ipmi0 never appears.
//
// What goes where: the hvagent binary is copied into the image (its hash is
// part of the key). Per-lab settings that must not force a rebuild (hvagent
// arguments and config, extra domains, start list, host name, address) go on
// a small ext4 "config disk" made by [BuildConfigDisk] and attached as the
// second virtio disk (/dev/vdb); ooblab-init copies it over /etc/ooblab.
//
// Building needs root (mmdebstrap in root mode, files owned by root in the
// image). As a normal user mmdebstrap would need --mode=unshare with subuids;
// that is not done yet.
package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

//go:embed files
var files embed.FS

// recipeVersion changes whenever Build's own steps change in a way the
// recipe fields do not show.
const recipeVersion = 3 // 2: zstd-compressed qcow2 (zlib took 10 s, zstd 1.7 s); 3: vmlinux for a PVH boot

// Recipe says what goes into the guest. Every field, and the embedded guest
// scripts, are part of the cache key.
type Recipe struct {
	Suite   string   // Debian suite, e.g. "bookworm"
	Mirror  string   // Debian mirror URL
	Variant string   // mmdebstrap variant: "apt" or "minbase"
	Include []string // packages
	// KernelVersion names /boot/vmlinuz-<ver> and /lib/modules/<ver>;
	// empty means the newest in /boot.
	KernelVersion string
	// Modules are loaded by stage 1, with their dependencies, in this order.
	Modules []string
	// HVAgent is the path of the hvagent binary to copy into the image;
	// empty for none (the guest then idles after its markers).
	HVAgent string
	// HVAgentArgs are written to /etc/ooblab/hvagent.args (may be overridden
	// by the config disk).
	HVAgentArgs []string
	// VMs are the libvirt domains baked into /etc/ooblab/vms, by name.
	VMs map[string]string
	// RootSizeMiB is the ext4 file system size (sparse; qcow2 stores only
	// what is used).
	RootSizeMiB int
	// WarmCaps boots the new image once at build time (TCG or KVM) so that
	// libvirt's QEMU capability cache (/var/cache/libvirt/qemu/capabilities)
	// is in the image, saving the ~3 s probe at every lab boot.
	WarmCaps bool
}

// DefaultRecipe is the lab's hypervisor host: Debian bookworm with libvirt,
// QEMU, ipmitool, and two small diskless domains, web1 and db1.
func DefaultRecipe() Recipe {
	return Recipe{
		Suite:   "bookworm",
		Mirror:  "http://deb.debian.org/debian",
		Variant: "apt",
		Include: []string{
			"libvirt-daemon-system", "libvirt-daemon-driver-qemu", "libvirt-clients", "libvirt0",
			"qemu-system-x86", "ipmitool", "iproute2", "kmod", "procps",
		},
		Modules: []string{
			"virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4",
			"ipmi_msghandler", "ipmi_devintf", "ipmi_si",
			"button", "evdev", // ACPI power button for busybox acpid
		},
		VMs: map[string]string{
			"web1": DomainXML("web1", 32),
			"db1":  DomainXML("db1", 32),
		},
		RootSizeMiB: 2048,
		WarmCaps:    true,
	}
}

// DomainXML returns a small diskless BIOS-only libvirt domain (type qemu,
// with ACPI so graceful shutdown can work) of memMiB MiB.
func DomainXML(name string, memMiB int) string {
	b, err := files.ReadFile("files/vm.xml.tmpl")
	if err != nil {
		panic(err)
	}
	s := strings.ReplaceAll(string(b), "{{.Name}}", name)
	return strings.ReplaceAll(s, "{{.MemoryMiB}}", fmt.Sprint(memMiB))
}

// Options steer one Build.
type Options struct {
	// CacheDir overrides <user cache dir>/ooblab/images.
	CacheDir string
	// Force rebuilds even when the cache holds the key.
	Force bool
	// ScratchDir holds the unpacked tree during the build (~1 GiB);
	// default /dev/shm when it has 4 GiB free, else the cache folder.
	ScratchDir string
}

// Artifacts are the built files, ready for lab/qemu.
type Artifacts struct {
	Dir       string // the cache entry
	Key       string // hex recipe hash
	Kernel    string
	Initrd    string
	RootQCOW2 string // the base image: boot an overlay of it, never it
	// Append is the kernel command line these artifacts expect.
	Append string
	Cached bool // true when nothing was built
}

// KernelAppend is the command line for the artifacts: serial console, root on
// the first virtio disk, reboot at once on panic (run QEMU with -no-reboot to
// turn that into an exit).
const KernelAppend = "console=ttyS0 root=/dev/vda rootfstype=ext4 panic=-1 quiet loglevel=4"

// CacheRoot is <user cache dir>/ooblab/images.
func CacheRoot() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("image: no cache folder (set XDG_CACHE_HOME or HOME): %w", err)
	}
	return filepath.Join(d, "ooblab", "images"), nil
}

// keyInput is what the cache key hashes.
type keyInput struct {
	Version     int
	Suite       string
	Mirror      string
	Variant     string
	Include     []string
	Kernel      string // version
	KernelHash  string
	Modules     []string
	HVAgentHash string
	HVAgentArgs []string
	VMs         map[string]string
	RootSizeMiB int
	WarmCaps    bool
	Files       map[string]string // embedded file -> sha256
}

func (r *Recipe) resolve() error {
	if r.Suite == "" || r.Mirror == "" || r.Variant == "" {
		return errors.New("image: recipe needs Suite, Mirror and Variant")
	}
	if r.RootSizeMiB == 0 {
		r.RootSizeMiB = 2048
	}
	if r.KernelVersion == "" {
		v, err := NewestKernel()
		if err != nil {
			return err
		}
		r.KernelVersion = v
	}
	return nil
}

// NewestKernel returns the version of the newest /boot/vmlinuz-*.
func NewestKernel() (string, error) {
	m, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(m) == 0 {
		return "", errors.New("image: no /boot/vmlinuz-*: install linux-image-amd64 (make deps)")
	}
	sort.Strings(m)
	return strings.TrimPrefix(filepath.Base(m[len(m)-1]), "vmlinuz-"), nil
}

// Key computes the recipe's cache key (hashing the kernel and hvagent files).
func Key(r Recipe) (string, []byte, error) {
	if err := r.resolve(); err != nil {
		return "", nil, err
	}
	in := keyInput{
		Version: recipeVersion, Suite: r.Suite, Mirror: r.Mirror, Variant: r.Variant,
		Include: slices.Sorted(slices.Values(r.Include)), Kernel: r.KernelVersion,
		Modules: r.Modules, HVAgentArgs: r.HVAgentArgs, VMs: r.VMs, RootSizeMiB: r.RootSizeMiB,
		WarmCaps: r.WarmCaps, Files: map[string]string{},
	}
	var err error
	if in.KernelHash, err = fileHash(kernelPath(r.KernelVersion)); err != nil {
		return "", nil, err
	}
	if r.HVAgent != "" {
		if in.HVAgentHash, err = fileHash(r.HVAgent); err != nil {
			return "", nil, err
		}
	}
	ents, _ := files.ReadDir("files")
	for _, e := range ents {
		b, _ := files.ReadFile("files/" + e.Name())
		s := sha256.Sum256(b)
		in.Files[e.Name()] = hex.EncodeToString(s[:])
	}
	j, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		return "", nil, err
	}
	s := sha256.Sum256(j)
	return hex.EncodeToString(s[:])[:16], j, nil
}

func kernelPath(ver string) string { return "/boot/vmlinuz-" + ver }

// bootKernel is the kernel a guest of the cache entry dir boots: the
// unpacked vmlinux (PVH boot, pvh.go) when the build made one, else the
// bzImage.
func bootKernel(dir string) string {
	if _, err := os.Stat(filepath.Join(dir, "vmlinux")); err == nil {
		return filepath.Join(dir, "vmlinux")
	}
	return filepath.Join(dir, "vmlinuz")
}

func fileHash(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("image: hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Build returns the recipe's artifacts from the cache, building them first
// when missing or when opt.Force is set. Progress goes to log. Concurrent
// Builds of one key wait for each other (a lock file beside the entry).
func Build(ctx context.Context, r Recipe, opt Options, log *slog.Logger) (Artifacts, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, keyJSON, err := Key(r)
	if err != nil {
		return Artifacts{}, err
	}
	_ = r.resolve()
	root := opt.CacheDir
	if root == "" {
		if root, err = CacheRoot(); err != nil {
			return Artifacts{}, err
		}
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return Artifacts{}, fmt.Errorf("image: %w", err)
	}
	dir := filepath.Join(root, key)
	a := Artifacts{
		Dir: dir, Key: key,
		Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img"),
		RootQCOW2: filepath.Join(dir, "root.qcow2"), Append: KernelAppend,
	}

	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return Artifacts{}, fmt.Errorf("image: %w", err)
	}
	defer lock.Close()
	if err := flock(ctx, lock, log, dir); err != nil {
		return Artifacts{}, err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	if !opt.Force {
		if _, err := os.Stat(filepath.Join(dir, "recipe.json")); err == nil {
			log.Info("guest image cached", "dir", dir)
			a.Cached = true
			a.Kernel = bootKernel(dir)
			return a, nil
		}
	}
	if os.Geteuid() != 0 {
		return Artifacts{}, errors.New("image: building the guest image needs root (mmdebstrap root mode); run scripts/images.sh as root")
	}
	for _, tool := range []string{"mmdebstrap", "mkfs.ext4", "qemu-img", "cpio"} {
		if _, err := exec.LookPath(tool); err != nil {
			return Artifacts{}, fmt.Errorf("image: %s missing: run make deps: %w", tool, err)
		}
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		return Artifacts{}, fmt.Errorf("image: %s missing (busybox-static): run make deps", busyboxPath)
	}

	start := time.Now()
	log.Info("building guest image", "key", key, "dir", dir, "kernel", r.KernelVersion)
	// Scratch (the unpacked tree, the raw ext4) on tmpfs when it has room:
	// dpkg and mkfs are IO-bound. The artifacts go beside the cache entry
	// so that the final rename is atomic.
	scratch := opt.ScratchDir
	if scratch == "" {
		scratch = root
		var fs syscall.Statfs_t
		if syscall.Statfs("/dev/shm", &fs) == nil && uint64(fs.Bavail)*uint64(fs.Bsize) >= 4<<30 {
			scratch = "/dev/shm"
		}
	}
	work, err := os.MkdirTemp(scratch, "ooblab-image-"+key+"-")
	if err != nil {
		return Artifacts{}, fmt.Errorf("image: %w", err)
	}
	defer os.RemoveAll(work)
	out, err := os.MkdirTemp(root, key+".build-")
	if err != nil {
		return Artifacts{}, fmt.Errorf("image: %w", err)
	}
	defer os.RemoveAll(out) // gone after the rename when all went well
	if err := os.Chmod(out, 0o755); err != nil {
		return Artifacts{}, err
	}
	log.Info("image scratch", "dir", work)

	step := func(name string, f func() error) error {
		t := time.Now()
		log.Info("image step", "step", name)
		if err := f(); err != nil {
			return fmt.Errorf("image: %s: %w", name, err)
		}
		log.Info("image step done", "step", name, "took", time.Since(t).Round(time.Millisecond))
		return nil
	}
	if err := step("kernel", func() error {
		if err := copyFile(kernelPath(r.KernelVersion), filepath.Join(out, "vmlinuz"), 0o644); err != nil {
			return err
		}
		_, err := unpackPVH(ctx, filepath.Join(out, "vmlinuz"), filepath.Join(out, "vmlinux"), log)
		return err
	}); err != nil {
		return Artifacts{}, err
	}
	if err := step("initramfs", func() error {
		return buildInitramfs(ctx, r, filepath.Join(work, "initramfs"), filepath.Join(out, "initrd.img"))
	}); err != nil {
		return Artifacts{}, err
	}
	rootDir := filepath.Join(work, "rootfs")
	if err := step("mmdebstrap", func() error { return mmdebstrap(ctx, r, rootDir, log) }); err != nil {
		return Artifacts{}, err
	}
	if err := step("customize", func() error { return customize(r, rootDir) }); err != nil {
		return Artifacts{}, err
	}
	raw := filepath.Join(work, "root.ext4")
	if err := step("mkfs.ext4", func() error {
		return run(ctx, log, "mkfs.ext4", "-q", "-F", "-L", "ooblab-root", "-d", rootDir, raw, fmt.Sprintf("%dM", r.RootSizeMiB))
	}); err != nil {
		return Artifacts{}, err
	}
	if r.WarmCaps {
		if err := step("warm libvirt capability cache", func() error {
			return warm(ctx, filepath.Join(work, "warm"), bootKernel(out), filepath.Join(out, "initrd.img"), raw, log)
		}); err != nil {
			return Artifacts{}, err
		}
	}
	if err := step("qemu-img convert", func() error {
		return run(ctx, log, "qemu-img", "convert", "-c", "-o", "compression_type=zstd", "-f", "raw", "-O", "qcow2", raw, filepath.Join(out, "root.qcow2"))
	}); err != nil {
		return Artifacts{}, err
	}
	if err := os.WriteFile(filepath.Join(out, "recipe.json"), keyJSON, 0o644); err != nil {
		return Artifacts{}, err
	}
	os.RemoveAll(dir)
	if err := os.Rename(out, dir); err != nil {
		return Artifacts{}, fmt.Errorf("image: %w", err)
	}
	a.Kernel = bootKernel(dir)
	st, _ := os.Stat(a.RootQCOW2)
	var size int64
	if st != nil {
		size = st.Size()
	}
	log.Info("guest image built", "dir", dir, "took", time.Since(start).Round(time.Millisecond), "root_qcow2_bytes", size)
	return a, nil
}

func flock(ctx context.Context, f *os.File, log *slog.Logger, dir string) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		return nil
	}
	log.Info("waiting for another build of this guest image", "dir", dir)
	done := make(chan error, 1)
	go func() { done <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		f.Close() // the blocked flock keeps the lock on an fd we no longer use; closing releases it
		return fmt.Errorf("image: waiting for build lock: %w", ctx.Err())
	}
}

// run runs a tool, sending its output lines to log as progress.
func run(ctx context.Context, log *slog.Logger, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var tail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			log.Info(name, "out", line)
			tail = append(tail, line)
			if len(tail) > 20 {
				tail = tail[1:]
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", name, err, strings.Join(tail, "\n"))
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

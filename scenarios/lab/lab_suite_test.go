// Package lab_test holds ooblab's end-to-end specs: they bring up a real lab
// (bmcsim, a QEMU hypervisor host with libvirt and hvagent inside) and drive
// it as an operator would, through vmsctl's Go package, the vmsctl binary,
// ipmitool and virsh in the guest.
package lab_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/lab/ctl"
)

func TestLab(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "ooblab lab scenarios")
}

// labSelected says whether the run's label filter can select a spec
// labelled "lab" (every lab spec carries "lab" and at most its own labels):
// then the lab comes up in BeforeSuite, outside every spec's SpecTimeout.
// (A cold image build and a TCG boot on a loaded machine take minutes; in
// the first lab spec's BeforeEach they counted against that spec's
// deadline, and a spec with a short one timed out while the lab came up.)
// It errs towards yes; the labels of specs that need no lab are left out.
func labSelected(filter string) bool {
	if filter == "" {
		return true
	}
	sets := []Labels{{"lab"}}
	for _, w := range regexp.MustCompile(`[A-Za-z0-9_.-]+`).FindAllString(filter, -1) {
		if !slices.Contains(slices.Concat(KCSGuest, Loss), w) { // specs that need no lab
			sets = append(sets, Labels{"lab", w})
		}
	}
	for _, l := range sets {
		if l.MatchesLabelFilter(filter) {
			return true
		}
	}
	return false
}

var (
	labDir string
	root   string
	inv    *inventory.Inventory
)

// missing names what this machine lacks to run a lab, or "".
func missing(root string) string {
	if os.Geteuid() != 0 {
		return "building the guest image needs root (mmdebstrap)"
	}
	for _, tool := range []string{"qemu-system-x86_64", "mmdebstrap", "ipmitool", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not installed (make deps)"
		}
	}
	for _, b := range []string{"bmcsim", "hvagent", "vmsctl", "lab"} {
		if _, err := os.Stat(filepath.Join(root, "bin", b)); err != nil {
			return "bin/" + b + " not built (make build)"
		}
	}
	return ""
}

var _ = BeforeSuite(func(ctx SpecContext) {
	wd, err := os.Getwd()
	Expect(err).NotTo(HaveOccurred())
	root = filepath.Dir(filepath.Dir(wd))
	// A failed lab up fails the lab specs (BeforeEach), not the suite: the
	// specs that need no lab still run.
	if labSelected(GinkgoLabelFilter()) && !testing.Short() && missing(root) == "" {
		labTried, labErr = true, upLab(ctx)
	}
}, NodeTimeout(20*time.Minute))

// labErr keeps a failed lab up, so the next lab spec fails at once instead
// of trying again; labTried says lab up was tried.
var (
	labErr   error
	labTried bool
)

// The lab comes up once for the suite (which runs on one process): in
// BeforeSuite when the filters select a lab spec, else (should the preview
// have missed one) before the first spec labelled "lab". Specs that need
// none (kcs-guest) run without it.
var _ = BeforeEach(func(ctx SpecContext) {
	if !slices.Contains(CurrentSpecReport().Labels(), "lab") || labDir != "" {
		return
	}
	if testing.Short() {
		Skip("-short: the lab scenarios need a real lab")
	}
	if why := missing(root); why != "" {
		if testutil.InCI() {
			Fail("CI must run the lab scenarios, but " + why)
		}
		Skip(why)
	}
	Expect(labErr).NotTo(HaveOccurred(), "lab up failed before")
	Expect(labTried).To(BeFalse(), "lab up was tried and left no lab")
	// Marked before the attempt: a spec that times out here leaks the
	// attempt, and the next spec must not start a second lab beside it.
	labTried = true
	labErr = upLab(ctx)
	Expect(labErr).NotTo(HaveOccurred())
}, NodeTimeout(20*time.Minute))

func upLab(ctx context.Context) error {
	// A folder and ports of this run's own, so two runs on one machine (a
	// developer's and CI's) never tear down or collide with each other.
	dir, err := os.MkdirTemp("", "ooblab-scenarios-")
	if err != nil {
		return err
	}
	base, err := freeBasePort(1)
	if err != nil {
		return err
	}
	start := time.Now()
	_, err = ctl.Up(ctx, ctl.Options{
		Dir: dir, Hosts: 1, BinDir: filepath.Join(root, "bin"), BasePort: base,
		Out: GinkgoWriter, Probe: ctl.ProbeBoth,
	}, nil)
	if err != nil {
		saveLabLogs(root, dir)
		return fmt.Errorf("lab up (console: %s/h1/qemu/console.log, copied to artifacts/lab-logs): %w", dir, err)
	}
	GinkgoWriter.Printf("lab up took %v\n", time.Since(start))
	if inv, err = fileio.LoadInventory(filepath.Join(dir, "inventory.json")); err != nil {
		return err
	}
	labDir = dir
	return nil
}

var _ = AfterSuite(func(ctx SpecContext) {
	clientsMu.Lock()
	for _, c := range clients {
		c.Close()
	}
	clientsMu.Unlock()
	if labDir == "" {
		return
	}
	saveLabLogs(root, labDir)
	if os.Getenv("OOBLAB_KEEP_LAB") != "" {
		GinkgoWriter.Printf("keeping the lab in %s\n", labDir)
		return
	}
	Expect(ctl.Down(ctx, labDir, GinkgoWriter, nil)).To(Succeed())
	Expect(os.RemoveAll(labDir)).To(Succeed())
}, NodeTimeout(2*time.Minute))

// freeBasePort finds a base port B for hosts lab hosts whose ports (lab/ctl:
// LAN B.., KCS B+100.., serial B+200.., VMM-I B+2000.., metrics B+3000, page B+3001) are all free now.
func freeBasePort(hosts int) (int, error) {
	for try := 0; try < 200; try++ {
		// Below the kernel's ephemeral range (32768+), so an outgoing
		// connection cannot take a port between this check and QEMU's bind.
		b := 20000 + rand.IntN(9000)
		ok := true
		var held []io.Closer
		for n := 0; n < hosts && ok; n++ {
			u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", b+n))
			if ok = err == nil; ok {
				held = append(held, u)
			}
			for _, off := range []int{100, 200, 2000} {
				l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", b+off+n))
				if err != nil {
					ok = false
					break
				}
				held = append(held, l)
			}
		}
		for _, off := range []int{3000, 3001} { // metrics, the lab page
			if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", b+off)); err == nil {
				held = append(held, l)
			} else {
				ok = false
			}
		}
		for _, c := range held {
			c.Close()
		}
		if ok {
			return b, nil
		}
	}
	return 0, errors.New("no free block of lab ports")
}

// saveLabLogs copies the lab's logs (serial consoles, QEMU and bmcsim logs)
// into artifacts/lab-logs, where CI keeps them.
func saveLabLogs(root, dir string) {
	out := filepath.Join(root, "artifacts", "lab-logs")
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".log") {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		dst := filepath.Join(out, rel)
		if b, err := os.ReadFile(p); err == nil && os.MkdirAll(filepath.Dir(dst), 0o755) == nil {
			_ = os.WriteFile(dst, b, 0o644)
		}
		return nil
	})
}

func TestLabSelected(t *testing.T) {
	for filter, want := range map[string]bool{
		"": true, "lab": true, "vms-side": true, "failover && !power": true, "!kcs-guest": true,
		"kcs-guest": false, "loss": false, "kcs-guest || loss": false, "!lab": false, "vms-side || security": true,
	} {
		if got := labSelected(filter); got != want {
			t.Errorf("labSelected(%q) = %v, want %v", filter, got, want)
		}
	}
}

// Package lab_test holds ooblab's end-to-end specs: they bring up a real lab
// (bmcsim, a QEMU hypervisor host with libvirt and hvagent inside) and drive
// it as an operator would, through vmsctl's Go package, the vmsctl binary,
// ipmitool and virsh in the guest.
package lab_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/lab/ctl"
)

func TestLab(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "ooblab lab scenarios")
}

var (
	labDir string
	root   string
	inv    *inventory.Inventory
)

type suiteEnv struct {
	Dir  string `json:"dir"`
	Root string `json:"root"`
}

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

var _ = SynchronizedBeforeSuite(func(ctx SpecContext) []byte {
	if testing.Short() {
		Skip("-short: the lab scenarios need a real lab")
	}
	wd, err := os.Getwd()
	Expect(err).NotTo(HaveOccurred())
	root := filepath.Dir(filepath.Dir(wd))
	if why := missing(root); why != "" {
		if os.Getenv("CI") != "" {
			Fail("CI must run the lab scenarios, but " + why)
		}
		Skip(why)
	}
	dir := filepath.Join(os.TempDir(), "ooblab-scenarios")
	_ = ctl.Down(context.Background(), dir, GinkgoWriter, nil)
	Expect(os.RemoveAll(dir)).To(Succeed())
	start := time.Now()
	_, err = ctl.Up(ctx, ctl.Options{
		Dir: dir, Hosts: 1, BinDir: filepath.Join(root, "bin"), BasePort: 16230,
		Out: GinkgoWriter, Probe: ctl.ProbeBoth,
	}, nil)
	Expect(err).NotTo(HaveOccurred(), "lab up (console: %s/h1/qemu/console.log)", dir)
	GinkgoWriter.Printf("lab up took %v\n", time.Since(start))
	b, err := json.Marshal(suiteEnv{Dir: dir, Root: root})
	Expect(err).NotTo(HaveOccurred())
	return b
}, func(b []byte) {
	var env suiteEnv
	Expect(json.Unmarshal(b, &env)).To(Succeed())
	labDir, root = env.Dir, env.Root
	var err error
	inv, err = inventory.Load(filepath.Join(labDir, "inventory.json"))
	Expect(err).NotTo(HaveOccurred())
}, NodeTimeout(20*time.Minute))

var _ = SynchronizedAfterSuite(func() {
	clientsMu.Lock()
	defer clientsMu.Unlock()
	for _, c := range clients {
		c.Close()
	}
}, func() {
	if labDir == "" {
		return
	}
	if os.Getenv("OOBLAB_KEEP_LAB") != "" {
		GinkgoWriter.Printf("keeping the lab in %s\n", labDir)
		return
	}
	Expect(ctl.Down(context.Background(), labDir, GinkgoWriter, nil)).To(Succeed())
})

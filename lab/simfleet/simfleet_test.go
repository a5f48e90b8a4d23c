package simfleet

import (
	"context"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// TestFleet brings up 3 simulated hosts with the real bmcsim binary and asks
// each over the OOB-I, as vmsctl does, then stops the fleet.
func TestFleet(t *testing.T) {
	testutil.Integration(t, "go")
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "bmcsim"), "github.com/ooblab/ooblab/bmcsim")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build bmcsim: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f, err := Start(ctx, Options{N: 3, BinDir: bin, Dir: t.TempDir(), HostLog: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	if f.IdleRSS <= 0 || f.KCSBase != f.LANBase+3 {
		t.Errorf("fleet %+v", f)
	}
	inv, err := fileio.LoadInventory(f.Inventory)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Hosts) != 3 || inv.Hosts[2].Name != "h-2" || inv.Principal != Principal {
		t.Fatalf("inventory %+v", inv)
	}
	cl, err := client.New(inv, client.Options{Via: client.ViaOOB, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, h := range inv.Hosts {
		res, err := cl.Do(ctx, h.Name, vmsg.CmdList, "")
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		if res.Via != client.ViaOOB || len(res.Reply.VMs) != 1 || res.Reply.VMs[0].Name != "test" {
			t.Errorf("%s: via %s, VMs %+v (want test:///default's one domain)", h.Name, res.Via, res.Reply.VMs)
		}
	}
	pid := f.BMCPid
	f.Stop()
	// Stop waited for bmcsim: its pid is gone (reaped), so signal 0 fails.
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("bmcsim pid %d still running after Stop", pid)
	}
}

func TestStartRefuses(t *testing.T) {
	if _, err := Start(context.Background(), Options{N: 0, Dir: t.TempDir()}); err == nil {
		t.Error("0 hosts accepted")
	}
	_, err := Start(context.Background(), Options{N: 2, BinDir: t.TempDir(), Dir: t.TempDir()})
	if err == nil {
		t.Error("a missing bmcsim binary was not reported")
	}
}

func TestFreeRanges(t *testing.T) {
	lan, kcs, err := FreeRanges(50)
	if err != nil {
		t.Fatal(err)
	}
	if kcs != lan+50 || lan < 10000 || kcs+50 > 65536 {
		t.Errorf("ranges %d, %d", lan, kcs)
	}
	if e := ephemeralStart(); e-10000 >= 101 && kcs+50 > e {
		t.Errorf("ranges %d-%d run into the ephemeral range from %d", lan, kcs+49, e)
	}
}

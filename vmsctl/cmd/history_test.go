package cmd

import (
	"strings"
	"testing"
)

// --meta travels in the request with the VMS's own addresses (the
// inventory's vms section);
// bad --meta is a usage error; history prints the agent's list.
func TestMetaAndHistory(t *testing.T) {
	r := newRig(t)
	code, out, errs := r.run(t, "--via", "oob", "--meta", "ticket=OPS-42", "--meta", "by=alice=admin", "vm", "destroy", "h1", "web1")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	calls := r.oob.Calls()
	req := calls[len(calls)-1].Req
	if req.Metadata["ticket"] != "OPS-42" || req.Metadata["by"] != "alice=admin" || len(req.Metadata) != 2 ||
		req.OOBAddr != "192.0.2.10" || req.VMMAddr != "198.51.100.10" {
		t.Fatalf("request %+v", req)
	}
	for _, bad := range [][]string{{"--meta", "novalue"}, {"--meta", "=x"}, {"--meta", "a=1", "--meta", "a=2"}} {
		if code, _, _ := r.run(t, append(bad, "vm", "list", "h1")...); code != ExitUsage {
			t.Errorf("%v: exit %d, want usage", bad, code)
		}
	}
	code, out, _ = r.run(t, "history", "h1")
	if code != 0 || !strings.Contains(out, "ticket=OPS-42") || !strings.Contains(out, "ok (running)") ||
		!strings.Contains(out, "failed: cannot suspend") || !strings.Contains(out, "h1: 2 request(s), via vmm-i") {
		t.Fatalf("history table: exit %d\n%s", code, out)
	}
}

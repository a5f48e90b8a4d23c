package inventory

import (
	"strings"
	"testing"
)

var parseTests = []struct {
	name, json, err string
}{
	{"defaults", `{"principal":"vms","hosts":[{"name":"h1","host_id":"hv1","bmc":{"addr":"127.0.0.1:6230"}}]}`, ""},
	{"no host id", `{"hosts":[{"name":"h1"}]}`, "lacks name or host_id"},
	{"not json", `{"hosts":`, "unexpected end"},
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		inv, err := Parse([]byte(tt.json), "/lab/inventory.json")
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: error %v, want %q", tt.name, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		h, err := inv.Host("h1")
		if err != nil || h.BMC.CipherSuite != 17 || h.BMC.IANA != 32473 || inv.Dir != "/lab" {
			t.Errorf("%s: %+v %v", tt.name, h, err)
		}
		b, err := inv.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if again, err := Parse(b, "/lab/inventory.json"); err != nil || again.Hosts[0] != inv.Hosts[0] {
			t.Errorf("%s: round trip %+v %v", tt.name, again, err)
		}
	}
}

// FuzzParse: an inventory file is read from disk; whatever it holds, Parse
// returns an error or an inventory that marshals and parses again.
func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		f.Add([]byte(tt.json))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		inv, err := Parse(b, "inventory.json")
		if err != nil {
			return
		}
		out, err := inv.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(out, "inventory.json"); err != nil {
			t.Fatalf("marshalled inventory does not parse: %v", err)
		}
	})
}

package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestFleet(t *testing.T) {
	base := Config{Name: "h", LAN: "127.0.0.1:40000", KCS: "127.0.0.1:41000", Redfish: "127.0.0.1:42000", State: "/tmp/st",
		Users: []User{{Name: "admin", Password: "pw"}}, CipherSuites: []int{17}}
	got, err := Fleet(base, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d configs, want 3", len(got))
	}
	for i, want := range []struct{ name, lan, kcs, redfish, state string }{
		{"h-0", "127.0.0.1:40000", "127.0.0.1:41000", "127.0.0.1:42000", filepath.Join("/tmp/st", "h-0")},
		{"h-1", "127.0.0.1:40001", "127.0.0.1:41001", "127.0.0.1:42001", filepath.Join("/tmp/st", "h-1")},
		{"h-2", "127.0.0.1:40002", "127.0.0.1:41002", "127.0.0.1:42002", filepath.Join("/tmp/st", "h-2")},
	} {
		c := got[i]
		if c.Name != want.name || c.LAN != want.lan || c.KCS != want.kcs || c.Redfish != want.redfish || c.State != want.state {
			t.Errorf("bmc %d = %s %s %s %s, want %+v", i, c.Name, c.LAN, c.KCS, c.State, want)
		}
	}
	// Each BMC owns its slices: normalizing one (which reads password
	// files into Users) must not touch another.
	got[0].Users[0].Password = "changed"
	if got[1].Users[0].Password != "pw" || base.Users[0].Password != "pw" {
		t.Error("fleet BMCs share the Users slice")
	}
	for i := range got {
		if err := got[i].Normalize(); err != nil {
			t.Errorf("bmc %d: %v", i, err)
		}
	}
	noKCS, err := Fleet(Config{LAN: "[::1]:623", Users: base.Users}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if noKCS[1].KCS != "" || noKCS[1].LAN != "[::1]:624" || noKCS[1].Name != "bmc-1" || noKCS[1].State != "" {
		t.Errorf("no-KCS fleet: %+v", noKCS[1])
	}
}

func TestFleetRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		c    Config
		n    int
		want string
	}{
		{"zero", Config{LAN: "127.0.0.1:40000"}, 0, "want 1.."},
		{"too many", Config{LAN: "127.0.0.1:40000"}, MaxFleet + 1, "want 1.."},
		{"port zero", Config{LAN: "127.0.0.1:0"}, 2, "fixed port"},
		{"no port", Config{LAN: "127.0.0.1"}, 2, "lan address"},
		{"past 65535", Config{LAN: "127.0.0.1:65000"}, 1000, "past 65535"},
		{"overlap", Config{LAN: "127.0.0.1:40000", KCS: "127.0.0.1:40005"}, 10, "overlap"},
		{"kcs past", Config{LAN: "127.0.0.1:40000", KCS: "127.0.0.1:65535"}, 2, "kcs ports"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Fleet(tt.c, tt.n)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

package cmd

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// requestID is random per run; the goldens hold a placeholder.
// YAML quotes it only when it could read as a number.
var requestID = regexp.MustCompile(`(request_id"?: )"?[0-9a-f]{16}"?`)

// TestGolden pins the output schema of every command that prints
// something: lowercase snake_case keys, the same shape for a VM, a host
// and an alert wherever they appear (docs/vmsctl.md, "Output schema").
// Run with -update after a deliberate change, and update the doc.
func TestGolden(t *testing.T) {
	at := time.Date(2026, 11, 29, 14, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"vm-list.json", []string{"-o", "json", "vm", "list", "h1"}},
		{"vm-list.yaml", []string{"-o", "yaml", "vm", "list", "h1"}},
		{"vm-list.txt", []string{"vm", "list", "h1"}},
		{"vm-status.json", []string{"-o", "json", "vm", "status", "h1", "web1"}},
		{"vm-start.json", []string{"-o", "json", "--via", "oob", "--otp-secret-file", "OPFILE", "vm", "start", "h1", "db1"}},
		{"host-list.json", []string{"-o", "json", "host", "list"}},
		{"host-status.json", []string{"-o", "json", "host", "status", "h1"}},
		{"alerts.json", []string{"-o", "json", "alerts", "h1"}},
		{"alerts.yaml", []string{"-o", "yaml", "alerts", "h1"}},
		{"watch.json", []string{"-o", "json", "watch", "--once", "h1"}},
		{"history.json", []string{"-o", "json", "history", "h1"}},
		{"result.json", []string{"-o", "json", "result", "h1", "0000000000001111"}},
		{"result.txt", []string{"result", "h1", "0000000000001111"}},
		{"host-status.txt", []string{"host", "status", "h1"}},
		{"vm-start-meta.json", []string{"-o", "json", "--meta", "ticket=OPS-42", "--meta", "reason=", "vm", "start", "h1", "web1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			if !strings.HasPrefix(tt.name, "vm-start") { // the challenge code needs the real clock
				r.now = func() time.Time { return at }
			}
			r.oob.PushAlert("h1", &vmsg.Alert{TimeMs: at.Add(-time.Minute).UnixMilli(), Host: "hv1", Principal: "mallory",
				VM: "db1", Action: "destroy", Reason: "denied: not on the authorization list"})
			args := append([]string(nil), tt.args...)
			for i := range args {
				if args[i] == "OPFILE" {
					args[i] = r.opFile
				}
			}
			code, out, errs := r.run(t, args...)
			if code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, out, errs)
			}
			checkGolden(t, tt.name, requestID.ReplaceAllString(out, `${1}"REQUEST_ID"`))
		})
	}
}

// checkGolden compares got with testdata/NAME.golden (or writes it with
// -update), after checking every key is snake_case.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	if strings.HasSuffix(name, ".json") && !json.Valid([]byte(got)) {
		t.Fatalf("not JSON:\n%s", got)
	}
	checkKeys(t, got)
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./vmsctl/cmd -run Golden -update to create it)", err)
	}
	if !bytes.Equal([]byte(got), want) {
		t.Errorf("%s differs from %s (if deliberate: -update, and update docs/vmsctl.md)\ngot:\n%s\nwant:\n%s", name, path, got, want)
	}
}

var (
	jsonKey = regexp.MustCompile(`(?m)^\s*"([^"]+)":`)
	yamlKey = regexp.MustCompile(`(?m)^[\s-]*([A-Za-z_][^:\s]*):`)
	snake   = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

// checkKeys fails on any key that is not lowercase snake_case.
func checkKeys(t *testing.T, out string) {
	t.Helper()
	re := yamlKey
	if strings.HasPrefix(strings.TrimSpace(out), "{") || strings.HasPrefix(strings.TrimSpace(out), "[") {
		re = jsonKey
	}
	if !strings.Contains(out, ":") || strings.Contains(out, "NAME ") {
		return // a table
	}
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if !snake.MatchString(m[1]) {
			t.Errorf("key %q is not snake_case", m[1])
		}
	}
}

// TestErrorLinesGolden pins what a failed command says on stderr: each
// thing once, the request id on every line about a request, and how to
// look up an unknown outcome (testdata/errors.txt.golden; -update).
func TestErrorLinesGolden(t *testing.T) {
	var b strings.Builder
	for _, args := range [][]string{
		{"vm", "start", "h1", "secret"},
		{"VMSCTL_OTP=000000", "vm", "destroy", "h1", "db1"},
		{"vm", "status", "h1", "nope"},
		{"vm", "start", "h1", "app1"},
		{"--timeout", "100ms", "--via", "oob", "vm", "list", "dead"},
		{"--timeout", "200ms", "--via", "oob", "vm", "reboot", "h1", "slow1"},
		{"--timeout", "200ms", "vm", "list", "dead"},
		{"--timeout", "200ms", "vm", "reboot", "h1", "slow1"},
		{"--timeout", "0s", "vm", "list", "h1"},
	} {
		r := newRig(t)
		shown := "vmsctl " + strings.Join(args, " ")
		if k, v, ok := strings.Cut(args[0], "="); ok { // the environment, as a shell line shows it
			r.env = map[string]string{k: v}
			args = args[1:]
			shown = args0(k, v) + " vmsctl " + strings.Join(args, " ")
		}
		code, _, errs := r.run(t, args...)
		errs = errorRequestID.ReplaceAllString(logLine.ReplaceAllString(errs, ""), "REQUEST_ID")
		fmt.Fprintf(&b, "$ %s\nexit %d\n%s\n", shown, code, errs)
	}
	got := b.String()
	for _, l := range strings.Split(got, "\n") {
		if strings.HasPrefix(l, "vmsctl: h1: ") && !strings.Contains(l, "request REQUEST_ID") {
			t.Errorf("error line names no request id: %s", l)
		}
		for _, clause := range strings.Split(l, "; ") { // one clause per channel
			for _, w := range strings.Split(clause, ": ") {
				if w != "" && strings.Count(clause, ": "+w+": ") > 1 {
					t.Errorf("line says %q twice: %s", w, l)
				}
			}
		}
	}
	checkGolden(t, "errors.txt", got)
}

var (
	errorRequestID = regexp.MustCompile(`\b[0-9a-f]{16}\b`)
	logLine        = regexp.MustCompile(`(?m)^time=.*\n`) // --debug/warning logs, not error lines
)

func args0(k, v string) string { return k + "=" + v }

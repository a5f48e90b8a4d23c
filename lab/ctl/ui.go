package ctl

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ooblab/ooblab/internal/fileio"
)

// UIToken returns the lab's page token (<dir>/ui.token, 0600), made on
// first use: 128 random bits, hex.
func UIToken(dir string) (string, error) {
	path := filepath.Join(dir, "ui.token")
	if err := writeSecretOnce(path, func() ([]byte, error) {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		return []byte(hex.EncodeToString(b) + "\n"), nil
	}); err != nil {
		return "", err
	}
	b, err := fileio.ReadSecret(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// UIURL is the page's address with its token.
func UIURL(addr, token string) string { return "http://" + addr + "/?token=" + token }

// startUI starts `lab ui` for this lab (detached, log <dir>/ui.log) on
// BasePort+3001 and waits until it listens.
func (u *upRun) startUI(ctx context.Context) error {
	token, err := UIToken(u.o.Dir)
	if err != nil {
		return fmt.Errorf("ui token: %w", err)
	}
	// bin/lab beside bmcsim (Up may run inside another program: the e2e
	// suite, the lab bench); without it the lab runs without its page.
	exe := filepath.Join(u.o.BinDir, "lab")
	if _, err := os.Stat(exe); err != nil {
		fmt.Fprintf(u.o.Out, "  no web page: %s is not there (the page is served by the lab program beside bmcsim)\n", exe)
		return nil
	}
	addr := fmt.Sprintf("127.0.0.1:%d", u.o.BasePort+3001)
	pid, err := startDetachedLog(exe, []string{"--dir", u.o.Dir, "ui", "--addr", addr},
		filepath.Join(u.o.Dir, "ui.log"), filepath.Join(u.o.Dir, "ui.pid"), syscall.O_TRUNC)
	if err != nil {
		return fmt.Errorf("start lab ui: %w", err)
	}
	u.st.UI = Proc{Pid: pid}
	if err := waitTCP(ctx, addr, 10*time.Second, pid); err != nil {
		return fmt.Errorf("lab ui (log %s/ui.log): %w", u.o.Dir, err)
	}
	u.st.UIURL = UIURL(addr, token)
	u.clk.done("web page")
	return nil
}

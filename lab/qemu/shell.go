package qemu

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// Exec runs script with /bin/sh as root inside the guest of run folder dir,
// through the lab shell on its second serial port (Config.Shell), copies
// the script's output (stdout and stderr) to out, and returns its exit
// status. The socket serves one caller at a time: another Exec waits for
// it. ctx bounds the whole run; when it ends the connection closes, and the
// script may still finish inside the guest.
//
// The script is written as one line group framed by two markers that carry
// a fresh nonce, so output left on the port by an earlier, abandoned call is
// skipped:
//
//	echo '@ooblab-exec N begin'; ( SCRIPT
//	) </dev/null 2>&1; echo "@ooblab-exec N rc=$?"
//
// The subshell keeps an "exit" in the script from ending the guest's shell.
func Exec(ctx context.Context, dir, script string, out io.Writer) (int, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(dir, "shell.sock"))
	if err != nil {
		return -1, fmt.Errorf("qemu: lab shell (started with Config.Shell?): %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	var nb [8]byte
	_, _ = rand.Read(nb[:])
	mark := "@ooblab-exec " + hex.EncodeToString(nb[:])
	if _, err := fmt.Fprintf(c, "echo '%s begin'; ( %s\n) </dev/null 2>&1; echo \"%s rc=$?\"\n", mark, script, mark); err != nil {
		return -1, ctxErr(ctx, fmt.Errorf("qemu: lab shell: write: %w", err))
	}
	r := bufio.NewReader(c)
	begun := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return -1, ctxErr(ctx, fmt.Errorf("qemu: lab shell: read: %w", err))
		}
		trimmed := strings.TrimRight(line, "\r\n")
		switch {
		case trimmed == mark+" begin":
			begun = true
		case begun && strings.HasPrefix(trimmed, mark+" rc="):
			rc, err := strconv.Atoi(strings.TrimPrefix(trimmed, mark+" rc="))
			if err != nil {
				return -1, fmt.Errorf("qemu: lab shell: bad status line %q", trimmed)
			}
			return rc, nil
		case begun:
			if _, err := io.WriteString(out, line); err != nil {
				return -1, err
			}
		}
	}
}

// ctxErr prefers ctx's error to err once ctx has ended (the read failed
// because AfterFunc closed the connection).
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

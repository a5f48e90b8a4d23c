package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Hook runs a command for each alert. The alert goes to the command as
// JSON on stdin and as environment variables:
//
//	OOBLAB_ALERT_TIME       RFC 3339, UTC
//	OOBLAB_ALERT_HOST
//	OOBLAB_ALERT_PRINCIPAL
//	OOBLAB_ALERT_VM
//	OOBLAB_ALERT_ACTION
//	OOBLAB_ALERT_REASON
//	OOBLAB_ALERT_REQUEST_ID decimal
//	OOBLAB_ALERT_USERS      comma separated
//
// on top of the agent's own environment and Env. The command runs in its
// own process group, which is killed when Timeout (default 10 s) or ctx
// ends. A failure is logged and returned; it never stops the agent.
type Hook struct {
	Command []string // argv, e.g. {"sh", "-c", "mail -s alert root"}
	Env     []string // extra KEY=value
	Timeout time.Duration
	Logger  *slog.Logger // nil: slog.Default()
}

var _ Sink = (*Hook)(nil)

// Send runs the hook for a.
func (h *Hook) Send(ctx context.Context, a Alert) error {
	err := h.run(ctx, a)
	if err != nil {
		lg := h.Logger
		if lg == nil {
			lg = slog.Default()
		}
		lg.ErrorContext(ctx, "alert hook failed; the alert still went to the other sinks, check the hook command",
			slog.Any("command", h.Command), slog.String("error", err.Error()))
	}
	return err
}

func (h *Hook) run(ctx context.Context, a Alert) error {
	if len(h.Command) == 0 {
		return errors.New("alert hook: no command")
	}
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("alert hook: %w", err)
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, h.Command[0], h.Command[1:]...)
	cmd.Stdin = bytes.NewReader(body)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(append(os.Environ(), h.Env...), envOf(a)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second // a grandchild holding the output pipe
	err = cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("alert hook %q: %w (output: %q)", h.Command[0], ctx.Err(), out.String())
	}
	if err != nil {
		return fmt.Errorf("alert hook %q: %w (output: %q)", h.Command[0], err, out.String())
	}
	return nil
}

func envOf(a Alert) []string {
	return []string{
		"OOBLAB_ALERT_TIME=" + a.Time.UTC().Format(time.RFC3339),
		"OOBLAB_ALERT_HOST=" + a.Host,
		"OOBLAB_ALERT_PRINCIPAL=" + a.Principal,
		"OOBLAB_ALERT_VM=" + a.VM,
		"OOBLAB_ALERT_ACTION=" + a.Action,
		"OOBLAB_ALERT_REASON=" + a.Reason,
		"OOBLAB_ALERT_REQUEST_ID=" + strconv.FormatUint(a.RequestID, 10),
		"OOBLAB_ALERT_USERS=" + strings.Join(a.Users, ","),
	}
}

// limitedBuffer keeps the first 4 KiB of the hook's output, for the log.
type limitedBuffer struct{ b bytes.Buffer }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return l.b.String() }

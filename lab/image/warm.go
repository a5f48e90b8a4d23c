package image

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ooblab/ooblab/lab/qemu"
)

// warm boots the raw root image once with ooblab.warm=1: ooblab-init lets
// libvirtd probe QEMU, keeps the capability cache, and powers off. The
// guest writes to an overlay, which is then committed into raw.
func warm(ctx context.Context, dir, kernel, initrd, raw string, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	m, err := qemu.Start(ctx, qemu.Config{
		Name: "image-warm", Dir: dir, Kernel: kernel, Initrd: initrd,
		Append:    KernelAppend + " ooblab.warm=1",
		BaseImage: raw, BaseFormat: "raw", KillWithParent: true,
	}, log)
	if err != nil {
		return err
	}
	defer m.Stop(context.Background())
	line, err := m.WaitConsole(ctx, "ooblab: warm done", "ooblab: FAILED")
	if err != nil {
		return err
	}
	if strings.Contains(line, "FAILED") {
		return fmt.Errorf("warm boot: %s", line)
	}
	log.Info("warm boot", "console", line)
	select {
	case <-m.Exited():
	case <-ctx.Done():
		return fmt.Errorf("warm boot: guest did not power off: %w", ctx.Err())
	}
	return run(ctx, log, "qemu-img", "commit", "-q", m.Overlay())
}

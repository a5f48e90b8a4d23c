package sensors

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// rusage is this process's user+system CPU time.
func rusage(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
func pidString() string              { return strconv.Itoa(os.Getpid()) + "\n" }

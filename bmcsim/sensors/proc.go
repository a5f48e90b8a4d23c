package sensors

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux architecture Go runs on (the kernel fixes it for userspace).
const clockTick = 10 * time.Millisecond

// ErrStat is returned for a /proc/<pid>/stat line that does not parse.
var ErrStat = errors.New("malformed /proc stat line")

// ParseStat returns utime+stime from a /proc/<pid>/stat line (proc(5):
// fields 14 and 15, counted after the parenthesised command name, which
// may itself hold spaces and parentheses).
func ParseStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, ErrStat
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, ErrStat
	}
	u, err1 := strconv.ParseUint(string(f[11]), 10, 63)
	s, err2 := strconv.ParseUint(string(f[12]), 10, 63)
	if err1 != nil || err2 != nil || u > 1<<40 || s > 1<<40 {
		return 0, ErrStat
	}
	return time.Duration(u+s) * clockTick, nil
}

// PidFile reads the CPU time of the process whose pid a pidfile holds
// (QEMU's -pidfile). The pid is read again when the process is gone (the
// host restarted).
type PidFile struct {
	Path string

	mu  sync.Mutex
	pid int
}

// CPUTime reads /proc/<pid>/stat of the pidfile's process.
func (p *PidFile) CPUTime() (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for try := 0; try < 2; try++ {
		if p.pid == 0 {
			b, err := os.ReadFile(p.Path)
			if err != nil {
				return 0, false
			}
			pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
			if err != nil || pid <= 0 {
				return 0, false
			}
			p.pid = pid
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
		if err == nil {
			if d, err := ParseStat(b); err == nil {
				return d, true
			}
		}
		p.pid = 0
	}
	return 0, false
}

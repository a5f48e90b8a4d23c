package lvirt

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's starttime; Linux
// fixes it at 100 for userspace on every architecture hvagent runs on.
const clockTicks = 100

// qemuProcessStart finds when the QEMU process of domain name started:
// libvirt's qemu driver keeps its pid in runDir/NAME.pid; /proc/PID/stat
// field 22 is the start in clock ticks after boot, /proc/stat's btime the
// boot time. ok is false when any of it is missing (another host, a
// session URI, no permission).
func qemuProcessStart(runDir, procDir, name string) (time.Time, bool) {
	if strings.ContainsAny(name, "/\x00") {
		return time.Time{}, false
	}
	b, err := os.ReadFile(filepath.Join(runDir, name+".pid"))
	if err != nil {
		return time.Time{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return time.Time{}, false
	}
	stat, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "stat"))
	if err != nil {
		return time.Time{}, false
	}
	// The command name (field 2) may hold spaces and ')': fields resume
	// after the last ')'. starttime is field 22, the 20th after it.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return time.Time{}, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return time.Time{}, false
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	ps, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return time.Time{}, false
	}
	var btime int64 = -1
	for _, line := range strings.Split(string(ps), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			btime, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, false
			}
		}
	}
	if btime < 0 {
		return time.Time{}, false
	}
	return time.Unix(btime, 0).Add(time.Duration(ticks) * time.Second / clockTicks), true
}

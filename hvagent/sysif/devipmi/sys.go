package devipmi

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// syscalls is the kernel as this package uses it; tests swap in a fake to
// force errno, EINTR and silence.
type syscalls interface {
	open(path string) (int, error)
	ioctl(fd int, req uintptr, arg unsafe.Pointer) error // unix.Errno or nil
	poll(fds []unix.PollFd, timeoutMs int) (int, error)
	eventfd() (int, error)
	signal(fd int) error // make eventfd fd readable
	close(fd int) error
}

type realSys struct{}

func (realSys) open(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func (realSys) ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

func (realSys) poll(fds []unix.PollFd, timeoutMs int) (int, error) {
	return unix.Poll(fds, timeoutMs)
}

func (realSys) eventfd() (int, error) { return unix.Eventfd(0, unix.EFD_CLOEXEC) }

func (realSys) signal(fd int) error {
	one := [8]byte{1}
	for {
		_, err := unix.Write(fd, one[:])
		if err != unix.EINTR {
			return err
		}
	}
}

func (realSys) close(fd int) error { return unix.Close(fd) }

package image

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
)

// A Debian bzImage is a small real-mode and decompressor stub around the
// kernel, XZ-compressed. Under TCG the decompression alone took ~3 s of
// every lab host's boot (guest code, translated). QEMU boots an
// uncompressed vmlinux directly when it carries the PVH entry point
// (XEN_ELFNOTE_PHYS32_ENTRY; Debian builds with CONFIG_PVH=y): no firmware
// boot path, no decompression. One lab host, warm, quiet machine: lab up
// 12.4 s → ~8 s to ready.

// xzMagic opens an XZ stream (the compressed kernel inside a bzImage).
var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// xenNotePHYS32Entry is the ELF note type of the PVH entry point.
const xenNotePHYS32Entry = 18

// unpackPVH writes the kernel inside bzImage to out as an ELF vmlinux and
// reports whether it can be booted PVH. It returns false (and writes
// nothing) for a kernel that is not XZ-compressed or has no PVH entry; the
// caller then boots the bzImage as it is.
func unpackPVH(ctx context.Context, bzImage, out string, log *slog.Logger) (bool, error) {
	b, err := os.ReadFile(bzImage)
	if err != nil {
		return false, err
	}
	at := bytes.Index(b, xzMagic)
	if at < 0 {
		log.Info("kernel is not XZ-compressed: booting the bzImage", "kernel", bzImage)
		return false, nil
	}
	if _, err := exec.LookPath("xz"); err != nil {
		return false, fmt.Errorf("xz missing (xz-utils): run make deps: %w", err)
	}
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return false, err
	}
	defer os.Remove(out + ".tmp")
	// --single-stream: the bzImage goes on after the stream (its size
	// field and the stub's data); stop at the stream's end.
	cmd := exec.CommandContext(ctx, "xz", "-dc", "--single-stream")
	cmd.Stdin = bytes.NewReader(b[at:])
	cmd.Stdout = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("xz -d of the kernel at offset %d: %w: %s", at, err, bytes.TrimSpace(stderr.Bytes()))
	}
	ok, err := hasPVHEntry(out + ".tmp")
	if err != nil {
		return false, fmt.Errorf("unpacked kernel: %w", err)
	}
	if !ok {
		log.Info("kernel has no PVH entry point: booting the bzImage", "kernel", bzImage)
		return false, nil
	}
	return true, os.Rename(out+".tmp", out)
}

// hasPVHEntry reports whether the ELF file at path has a Xen
// PHYS32_ENTRY note, the entry point QEMU's PVH boot jumps to.
func hasPVHEntry(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			return false, err
		}
		if notesHave(data, f.ByteOrder, "Xen", xenNotePHYS32Entry) {
			return true, nil
		}
	}
	return false, nil
}

// notesHave walks ELF notes (namesz, descsz, type, name, desc; 4-byte
// aligned) for one of the given name and type.
func notesHave(data []byte, bo binary.ByteOrder, name string, typ uint32) bool {
	align := func(n uint32) uint64 { return (uint64(n) + 3) &^ 3 }
	for len(data) >= 12 {
		nsz, dsz, t := bo.Uint32(data[0:]), bo.Uint32(data[4:]), bo.Uint32(data[8:])
		data = data[12:]
		if align(nsz) > uint64(len(data)) {
			return false
		}
		n := data[:nsz]
		data = data[align(nsz):]
		if align(dsz) > uint64(len(data)) {
			return false
		}
		data = data[align(dsz):]
		if t == typ && string(bytes.TrimRight(n, "\x00")) == name {
			return true
		}
	}
	return false
}

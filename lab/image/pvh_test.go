package image

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/testutil"
)

// TestUnpackPVH: the build host's Debian kernel unpacks to an ELF with the
// PVH entry point, and a file that is no bzImage is left alone.
func TestUnpackPVH(t *testing.T) {
	testutil.Integration(t, "xz")
	ver, err := NewestKernel()
	testutil.Need(t, err)
	dir := t.TempDir()
	out := filepath.Join(dir, "vmlinux")
	ok, err := unpackPVH(testutil.Context(t, time.Minute), kernelPath(ver), out, testutil.Logger(t))
	if err != nil || !ok {
		t.Fatalf("unpack %s: ok %v, err %v", kernelPath(ver), ok, err)
	}
	if ok, err := hasPVHEntry(out); err != nil || !ok {
		t.Fatalf("unpacked kernel: PVH entry %v, err %v", ok, err)
	}
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("not a kernel"), 0o644)
	if ok, err := unpackPVH(testutil.Context(t, time.Minute), plain, filepath.Join(dir, "none"), testutil.Logger(t)); ok || err != nil {
		t.Fatalf("not a bzImage: ok %v, err %v", ok, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "none")); err == nil {
		t.Fatal("wrote a vmlinux for a file that is no bzImage")
	}
}

func note(name string, typ uint32, desc []byte) []byte {
	n := append([]byte(name), 0)
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(n)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(desc)))
	b = binary.LittleEndian.AppendUint32(b, typ)
	for len(n)%4 != 0 {
		n = append(n, 0)
	}
	b = append(b, n...)
	b = append(b, desc...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// FuzzNotes: the ELF note walker never panics, and finds a note that is
// there.
func FuzzNotes(f *testing.F) {
	f.Add(append(note("GNU", 3, []byte{1, 2, 3}), note("Xen", xenNotePHYS32Entry, []byte{0x50, 8, 0, 1})...))
	f.Add(note("Xen", 6, []byte("linux")))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 18, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		notesHave(data, binary.LittleEndian, "Xen", xenNotePHYS32Entry)
		with := append(append([]byte(nil), note("Xen", xenNotePHYS32Entry, []byte{1, 2, 3, 4})...), data...)
		if !notesHave(with, binary.LittleEndian, "Xen", xenNotePHYS32Entry) {
			t.Fatal("missed a PVH note at the start")
		}
	})
}

// Package fileio is the file access the programs share, kept out of the
// wire-format packages (which do no I/O): secret files that others may not
// read, files replaced atomically with their mode, and the inventory file
// (internal/inventory's codec on disk).
package fileio

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ooblab/ooblab/internal/inventory"
)

// ErrLooseMode is returned by ReadSecret for a secret file that others
// than its owner may read or write.
var ErrLooseMode = errors.New("secret file readable or writable by others than its owner")

// MaxSecret bounds a secret file: keys, passwords and otpauth URIs are
// far smaller, so a larger file is a mistake (or a device), not a secret.
const MaxSecret = 64 << 10

// ReadSecret reads a secret file, refusing one whose mode lets its group
// or others read or write it (checked on the opened file, so a rename
// between the check and the read cannot slip another file in), and one
// that is not a regular file.
func ReadSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("secret file %s is not a regular file (%s)", path, st.Mode().Type())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, want 0600 (chmod 600 %s)", ErrLooseMode, path, perm, path)
	}
	if st.Size() > MaxSecret {
		return nil, fmt.Errorf("secret file %s is %d bytes, more than any secret (%d)", path, st.Size(), MaxSecret)
	}
	return io.ReadAll(io.LimitReader(f, MaxSecret+1))
}

// ErrBadName is returned by CheckName.
var ErrBadName = errors.New("bad name")

// CheckName checks a name that becomes (part of) a file name: a principal,
// an operator, a host group. 1-64 bytes of letters, digits, '.', '_' and
// '-', not starting with '.' or '-': no path separator, no "..", nothing
// a shell or an otpauth label would mangle.
func CheckName(kind, name string) error {
	if len(name) == 0 || len(name) > 64 {
		return fmt.Errorf("%w: %s %q: 1 to 64 characters", ErrBadName, kind, name)
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("%w: %s %q may not start with %q", ErrBadName, kind, name, name[0])
	}
	for _, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: %s %q: only letters, digits, '.', '_' and '-'", ErrBadName, kind, name)
		}
	}
	return nil
}

// WriteFile replaces path with b atomically: a temporary file beside it
// gets mode (also when path existed with a looser one), b and an fsync,
// then is renamed over path, and the folder is fsynced so the rename
// lasts. A crash leaves the old file or the new one. A symbolic link at
// path is replaced, never followed: nothing is written where it points.
func WriteFile(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// LoadInventory reads an inventory file.
func LoadInventory(path string) (*inventory.Inventory, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	return inventory.Parse(b, path)
}

// SaveInventory writes inv to path with mode 0600 (WriteFile).
func SaveInventory(inv *inventory.Inventory, path string) error {
	b, err := inv.Marshal()
	if err != nil {
		return err
	}
	return WriteFile(path, b, 0o600)
}

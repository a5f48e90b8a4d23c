// Package fileio is the file access the programs share, kept out of the
// wire-format packages (which do no I/O): secret files that others may not
// read, files replaced atomically with their mode, and the inventory file
// (internal/inventory's codec on disk).
package fileio

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ooblab/ooblab/internal/inventory"
)

// ReadSecret reads a secret file, refusing one that others can read.
func ReadSecret(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secret file %s has mode %o; want 0600", path, st.Mode().Perm())
	}
	return os.ReadFile(path)
}

// WriteFile replaces path with b atomically: a temporary file beside it
// gets mode (also when path existed with a looser one), b and an fsync,
// then is renamed over path, and the folder is fsynced so the rename
// lasts. A crash leaves the old file or the new one.
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

package sensors

import (
	"os"
	"strconv"
)

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
func pidString() string              { return strconv.Itoa(os.Getpid()) + "\n" }

package ctl

import (
	"context"
	"path/filepath"

	"github.com/ooblab/ooblab/bmcsim/admin"
)

// AdminSocket is bmcsim's admin socket in the lab state folder dir.
func AdminSocket(dir string) string { return filepath.Join(dir, "bmcsim-admin.sock") }

// PinSensor pins a sensor of host's BMC at v (bmcsim/admin); it returns
// bmcsim's answer.
func PinSensor(ctx context.Context, dir, host, sensor string, v float64) (string, error) {
	return admin.NewClient(AdminSocket(dir)).Pin(ctx, host, sensor, v)
}

// ReleaseSensor lets a pinned sensor follow its host again.
func ReleaseSensor(ctx context.Context, dir, host, sensor string) (string, error) {
	return admin.NewClient(AdminSocket(dir)).Release(ctx, host, sensor)
}

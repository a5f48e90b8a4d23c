package ctl

import "testing"

func TestGuestCPUs(t *testing.T) {
	for _, c := range []struct{ hosts, cores, want int }{
		{1, 2, 2}, {2, 2, 1}, {3, 2, 1}, {10, 2, 1}, {1, 1, 1}, {3, 8, 2}, {4, 8, 2}, {5, 8, 1}, {0, 2, 2},
	} {
		if got := guestCPUs(c.hosts, c.cores); got != c.want {
			t.Errorf("guestCPUs(%d hosts, %d cores) = %d, want %d", c.hosts, c.cores, got, c.want)
		}
	}
}

package board

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// statDisk returns the space available to unprivileged users (what the
// gateway, running as its own user, can still write) and the size of the
// file system holding dir.
func statDisk(dir string) (disk, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return disk{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize)
	return disk{free: st.Bavail * bs, total: st.Blocks * bs}, nil
}

//go:build !unix

package board

import "time"

// processCPUTime is not available here: the scaler stays off.
func processCPUTime() (time.Duration, bool) { return 0, false }

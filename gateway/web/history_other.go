//go:build !unix

package web

import "time"

// processCPU is 0 where getrusage is missing: the chart shows no CPU use.
func processCPU() time.Duration { return 0 }

//go:build linux && race

package rawio

import (
	"runtime"
	"unsafe"
)

// The race detector does not see what the kernel reads from or writes into
// a buffer; tell it, as the syscall package does for its Read and Write.

func raceWrote(p []byte) {
	if len(p) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&p[0]), len(p))
	}
}

func raceReading(p []byte) {
	if len(p) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&p[0]), len(p))
	}
}

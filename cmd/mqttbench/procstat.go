package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicksPerSecond is USER_HZ, the unit of /proc/PID/stat's CPU times.
// It is 100 on every Linux architecture Go supports.
const clockTicksPerSecond = 100

// readCPUTicks returns the user+system CPU time of process pid, in clock
// ticks, from /proc/PID/stat.
func readCPUTicks(pid int) (int64, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read broker CPU time: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields from the last ')'. After it, field 3 (state) is index 0,
	// so utime (14) and stime (15) are indexes 11 and 12.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse %s: no ')' in %q", path, b)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("parse %s: %d fields after the command name", path, len(fields))
	}
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse utime in %s: %w", path, err)
	}
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse stime in %s: %w", path, err)
	}
	return utime + stime, nil
}

// cpuPercent converts CPU ticks used over wall time into percent of one
// core.
func cpuPercent(ticks int64, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return 100 * float64(ticks) / clockTicksPerSecond / wall.Seconds()
}

// readRSSKiB returns VmRSS of process pid in KiB, from /proc/PID/status.
func readRSSKiB(pid int) (int64, error) {
	return readStatusKiB(pid, "VmRSS")
}

// readPeakRSSKiB returns VmHWM of process pid in KiB: its peak resident
// memory since it started.
func readPeakRSSKiB(pid int) (int64, error) {
	return readStatusKiB(pid, "VmHWM")
}

// readStatusKiB returns the field of /proc/PID/status, in kB.
func readStatusKiB(pid int, field string) (int64, error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read broker memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s in %s: %w", field, path, err)
		}
		return kib, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return 0, fmt.Errorf("no %s in %s", field, path)
}

// selfCPU returns the user+system CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit (brokers
// started afterwards inherit it) and returns the new soft limit.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("get RLIMIT_NOFILE: %w", err)
	}
	// Call Setrlimit even when the soft limit already looks raised: the Go
	// runtime raises it at start-up but restores the original for child
	// processes unless the program sets the limit itself.
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
	}
	return lim.Cur, nil
}

// cpuSample is a reading of CPU time used, in clock ticks: by the whole
// machine (all CPUs, busy time only), by the broker and by this process.
type cpuSample struct {
	at                    time.Time
	machine, broker, self int64
}

// sampleCPU reads the CPU times of the machine, of process pid and of this
// process.
func sampleCPU(pid int) (cpuSample, error) {
	s := cpuSample{at: time.Now()}
	var err error
	if s.machine, err = readMachineBusyTicks(); err != nil {
		return s, err
	}
	if s.broker, err = readCPUTicks(pid); err != nil {
		return s, err
	}
	if s.self, err = readCPUTicks(os.Getpid()); err != nil {
		return s, err
	}
	return s, nil
}

// othersPercent is the CPU used between a and b by processes other than the
// broker and the benchmark, in percent of one core. Anything much above
// zero means the machine was not quiet and the numbers are noisy.
func othersPercent(a, b cpuSample) float64 {
	others := (b.machine - a.machine) - (b.broker - a.broker) - (b.self - a.self)
	return max(0, cpuPercent(others, b.at.Sub(a.at)))
}

// readMachineBusyTicks returns the busy time of all CPUs (user, nice,
// system, steal), in clock ticks, from /proc/stat. Interrupt time is left
// out: loopback TCP is largely processed in softirq context, which counts
// there rather than in the broker's or the benchmark's system time.
func readMachineBusyTicks() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read machine CPU time: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("parse /proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 8} { // user nice system steal
		v, err := strconv.ParseInt(fields[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/stat field %d: %w", i, err)
		}
		busy += v
	}
	return busy, nil
}

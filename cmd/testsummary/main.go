// Command testsummary runs `go test -json` with the arguments it is given
// and prints what a person needs from a long run: each package's result
// line, the whole output of every failed test, every skipped test with its
// reason, and one closing line with how many tests passed, failed and were
// skipped. It exits non-zero when go test does or when anything failed.
//
//	go run ./cmd/testsummary -race -count=1 ./...
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type key struct{ pkg, test string }

// summary accumulates the events of one run.
type summary struct {
	out                      io.Writer
	buf                      map[key]*strings.Builder
	passed, failed, nskipped int
	skipped                  []string
	failedNames              []string
	pkgFailed                int
}

func main() {
	args := append([]string{"test", "-json"}, os.Args[1:]...)
	cmd := exec.Command("go", args...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary: start go test:", err)
		os.Exit(2)
	}
	s := &summary{out: os.Stdout, buf: map[key]*strings.Builder{}}
	s.read(stdout)
	runErr := cmd.Wait()
	s.report(time.Since(start))
	if runErr != nil || s.failed > 0 || s.pkgFailed > 0 {
		os.Exit(1)
	}
}

// read consumes the JSON stream; a line that is not JSON (a build error
// printed by go itself) is passed through as it is.
func (s *summary) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Action == "" {
			fmt.Fprintln(s.out, sc.Text())
			continue
		}
		s.add(e)
	}
}

func (s *summary) add(e event) {
	k := key{e.Package, e.Test}
	switch e.Action {
	case "output":
		if e.Test == "" {
			// Package-level lines: keep the result lines and anything that
			// is not the test runner's own chatter (a panic, a build error).
			line := e.Output
			if strings.HasPrefix(line, "=== ") || line == "PASS\n" || strings.HasPrefix(line, "--- ") && !strings.HasPrefix(line, "--- FAIL") {
				return
			}
			fmt.Fprint(s.out, line)
			return
		}
		b := s.buf[k]
		if b == nil {
			b = &strings.Builder{}
			s.buf[k] = b
		}
		if b.Len() < 1<<20 {
			b.WriteString(e.Output)
		}
	case "pass":
		if e.Test != "" {
			s.passed++
		}
		delete(s.buf, k)
	case "skip":
		if e.Test != "" {
			s.nskipped++
			s.skipped = append(s.skipped, e.Package+" "+e.Test+": "+skipReason(s.buf[k]))
		}
		delete(s.buf, k)
	case "fail":
		if e.Test == "" {
			s.pkgFailed++
			return
		}
		s.failed++
		s.failedNames = append(s.failedNames, e.Package+" "+e.Test)
		if b := s.buf[k]; b != nil {
			fmt.Fprint(s.out, b.String())
		}
		delete(s.buf, k)
	}
}

// skipReason is the last non-empty line a skipped test printed.
func skipReason(b *strings.Builder) string {
	if b == nil {
		return "(no reason given)"
	}
	reason := "(no reason given)"
	for line := range strings.Lines(b.String()) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "=== ") || strings.HasPrefix(line, "--- SKIP") {
			continue
		}
		reason = line
	}
	return reason
}

func (s *summary) report(took time.Duration) {
	if len(s.skipped) > 0 {
		sort.Strings(s.skipped)
		fmt.Fprintln(s.out, "skipped tests:")
		for _, n := range s.skipped {
			fmt.Fprintln(s.out, "  "+n)
		}
	}
	if len(s.failedNames) > 0 {
		fmt.Fprintln(s.out, "failed tests:")
		for _, n := range s.failedNames {
			fmt.Fprintln(s.out, "  "+n)
		}
	}
	fmt.Fprintf(s.out, "tests: %d ran, %d passed, %d failed, %d skipped; %d packages failed; %s\n",
		s.passed+s.failed+s.nskipped, s.passed, s.failed, s.nskipped, s.pkgFailed, took.Round(time.Second))
}

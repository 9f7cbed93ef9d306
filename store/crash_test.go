package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "FIELDGATE_STORE_CRASH_HELPER"

// TestHelperProcess is not a test: TestCrashKill runs the test binary again
// with helperEnv set, and this writes keys in batches, printing after each
// Sync how many keys are durable, until it is killed.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process for TestCrashKill")
	}
	db, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	const batch = 50
	for n := 0; ; {
		for range batch {
			if err := db.Put("crash", crashKey(n), []byte(strings.Repeat("v", 100))); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			n++
		}
		if err := db.Sync(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println(n)
	}
}

func crashKey(n int) []byte { return []byte(fmt.Sprintf("k%09d", n)) }

// TestCrashKill SIGKILLs a process in the middle of writing and checks that
// every key it reported synced is there and that the file opens cleanly.
func TestCrashKill(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), helperEnv+"="+path)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		must(t, err)
		must(t, cmd.Start())

		synced := 0
		sc := bufio.NewScanner(out)
		deadline := time.Now().Add(30 * time.Second)
		target := 2000 + round*1500 // kill at a different point each round
		for sc.Scan() {
			n, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
			if err != nil {
				continue // test framework output
			}
			synced = n
			if synced >= target || time.Now().After(deadline) {
				break
			}
		}
		time.Sleep(time.Duration(round) * 700 * time.Microsecond) // kept sleep: moves the kill to another point of the child's commit each round, nothing to wait for
		must(t, cmd.Process.Signal(syscall.SIGKILL))
		// Reports already printed before the kill are durable too.
		for sc.Scan() {
			if n, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
				synced = n
			}
		}
		_ = cmd.Wait()
		if synced == 0 {
			t.Fatalf("round %d: helper reported nothing synced", round)
		}

		db, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		var have int
		must(t, db.ForEach("crash", func(k, v []byte) error {
			have++
			return nil
		}))
		for i := range synced {
			if _, err := db.Get("crash", crashKey(i)); err != nil {
				t.Fatalf("round %d: key %d of %d reported synced is missing: %v", round, i, synced, err)
			}
		}
		must(t, db.Close())
		t.Logf("round %d: %d reported synced, %d present", round, synced, have)
	}
}

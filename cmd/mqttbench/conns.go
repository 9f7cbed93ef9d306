package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// idleSettle is the pause before each resident memory reading: the
	// resting cost of idle connections is asked for, not the connect
	// storm's. A garbage-collected broker holds the storm's garbage until
	// its next collection; fieldgate returns it once the count of clients
	// has been steady for a second (internal/memreturn), so 2 s measured
	// the storm or the rest depending on the machine's load. mosquitto's
	// reading does not depend on it.
	idleSettle = 5 * time.Second
	// idleReturnSettle is the pause after the idle connections closed
	// before the last reading: time for the broker to give memory back.
	idleReturnSettle = 5 * time.Second
	// idleConnectors is how many goroutines open the idle connections.
	idleConnectors = 16
	// churnWorkers is how many goroutines run connect/disconnect cycles.
	churnWorkers = 8
	// churnTimeout bounds one connect/disconnect cycle.
	churnTimeout = 2 * time.Second
)

// idleResult is what the idle-connections scenario measured.
type idleResult struct {
	opened, failed int64
	openTime       time.Duration
	rssBeforeKiB   int64
	rssAfterKiB    int64
	// rssClosedKiB is read idleReturnSettle after all connections closed.
	rssClosedKiB int64
	// firstErr is the first failure to connect, if any.
	firstErr error
}

// perConnKiB is the broker's resident memory growth per open connection.
func (r idleResult) perConnKiB() float64 {
	if r.opened == 0 {
		return 0
	}
	return float64(r.rssAfterKiB-r.rssBeforeKiB) / float64(r.opened)
}

// runIdle opens n connections that send CONNECT (keep alive 60 s) and then
// nothing, and reads the broker's resident memory before and after, each
// after a settle, and once more idleReturnSettle after they all closed.
func runIdle(ctx context.Context, addr string, pid, n int) (res idleResult, err error) {
	if err := sleepCtx(ctx, idleSettle); err != nil {
		return res, err
	}
	if res.rssBeforeKiB, err = readRSSKiB(pid); err != nil {
		return res, err
	}

	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var next, opened, failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range idleConnectors {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := handshake(ctx, addr, "idle-"+strconv.FormatInt(i, 10), 60)
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				conns[i] = c
				opened.Add(1)
			}
		})
	}
	wg.Wait()
	res.openTime = time.Since(start)
	res.opened, res.failed = opened.Load(), failed.Load()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.firstErr = firstErr
	if res.opened == 0 {
		return res, fmt.Errorf("no idle connection opened: %w", firstErr)
	}
	if err := sleepCtx(ctx, idleSettle); err != nil {
		return res, err
	}
	if res.rssAfterKiB, err = readRSSKiB(pid); err != nil {
		return res, err
	}
	for i, c := range conns {
		if c != nil {
			c.Close()
			conns[i] = nil
		}
	}
	if err := sleepCtx(ctx, idleReturnSettle); err != nil {
		return res, err
	}
	if res.rssClosedKiB, err = readRSSKiB(pid); err != nil {
		return res, err
	}
	return res, nil
}

// churnResult is what the connect/disconnect churn scenario measured.
type churnResult struct {
	cycles, failed int64
	elapsed        time.Duration
	// connack are the times from writing CONNECT to reading CONNACK of
	// the successful cycles, sorted.
	connack []time.Duration
	// firstErr is the first failed cycle's error, if any.
	firstErr error
}

// rate is completed cycles per second.
func (r churnResult) rate() float64 {
	return float64(r.cycles) / r.elapsed.Seconds()
}

// runChurn runs CONNECT → CONNACK → DISCONNECT → close cycles at target
// cycles/s in total (0: back to back, uncapped), spread over churnWorkers
// goroutines, for d. A worker that falls behind runs its cycles back to
// back.
func runChurn(ctx context.Context, addr string, d time.Duration, target float64) (churnResult, error) {
	var res churnResult
	var cycles, failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	perWorker := target / churnWorkers
	latencies := make([][]time.Duration, churnWorkers)
	start := time.Now()
	end := start.Add(d)
	for w := range churnWorkers {
		wg.Go(func() {
			scratch := make([]byte, 0, 64)
			var done int64
			for ctx.Err() == nil {
				now := time.Now()
				if !now.Before(end) {
					return
				}
				if due := int64(now.Sub(start).Seconds() * perWorker); perWorker > 0 && done >= due {
					next := start.Add(time.Duration(float64(done+1) / perWorker * float64(time.Second)))
					time.Sleep(min(time.Until(next), time.Until(end)))
					continue
				}
				done++
				id := "churn-" + strconv.Itoa(w) + "-" + strconv.FormatInt(done, 10)
				connack, err := churnCycle(ctx, addr, id, scratch)
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				latencies[w] = append(latencies[w], connack)
				cycles.Add(1)
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.cycles, res.failed = cycles.Load(), failed.Load()
	for _, l := range latencies {
		res.connack = append(res.connack, l...)
	}
	sortDurations(res.connack)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.firstErr = firstErr
	if res.cycles == 0 {
		return res, fmt.Errorf("no connect/disconnect cycle succeeded: %w", firstErr)
	}
	return res, nil
}

// churnCycle connects (clean session), waits for CONNACK, sends DISCONNECT
// and closes. It returns the time from writing CONNECT to reading CONNACK.
func churnCycle(ctx context.Context, addr, clientID string, scratch []byte) (time.Duration, error) {
	d := net.Dialer{Timeout: churnTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	start := time.Now()
	if err := connectOn(conn, clientID, 60, true, churnTimeout, scratch); err != nil {
		return 0, fmt.Errorf("client %s: %w", clientID, err)
	}
	connack := time.Since(start)
	if err := conn.SetWriteDeadline(time.Now().Add(churnTimeout)); err != nil {
		return 0, fmt.Errorf("client %s: set write deadline: %w", clientID, err)
	}
	if _, err := conn.Write(appendDisconnect(scratch[:0])); err != nil {
		return 0, fmt.Errorf("client %s: write DISCONNECT: %w", clientID, err)
	}
	return connack, nil
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

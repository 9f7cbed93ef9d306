package rules

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// action receives a rule's outputs in the rule's goroutine.
type action interface {
	do(ctx context.Context, o output, hop int)
}

// Queue is the bounded FIFO of an http action's requests. store.Queue is
// the durable one; NewMemoryQueue keeps them in memory.
type Queue interface {
	// Push appends b, or returns ErrQueueFull when the queue holds its
	// maximum.
	Push(b []byte) error
	// Peek returns the oldest entry without removing it; ok is false when
	// the queue is empty.
	Peek() (b []byte, ok bool, err error)
	// Pop removes the oldest entry.
	Pop() error
	// Len is how many entries wait.
	Len() int
}

// ErrQueueFull is what Queue.Push returns when the queue is full.
var ErrQueueFull = errors.New("queue full")

// MemoryQueue is a Queue in memory: what it holds is lost on restart.
type MemoryQueue struct {
	mu    sync.Mutex
	items [][]byte
	max   int
}

// NewMemoryQueue returns an empty queue of at most max entries.
func NewMemoryQueue(max int) *MemoryQueue { return &MemoryQueue{max: max} }

// Push appends a copy of b.
func (q *MemoryQueue) Push(b []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) >= q.max {
		return ErrQueueFull
	}
	q.items = append(q.items, bytes.Clone(b))
	return nil
}

// Peek returns the oldest entry.
func (q *MemoryQueue) Peek() ([]byte, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil, false, nil
	}
	return q.items[0], true, nil
}

// Pop removes the oldest entry.
func (q *MemoryQueue) Pop() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 {
		q.items[0] = nil
		q.items = q.items[1:]
	}
	return nil
}

// Len is how many entries wait.
func (q *MemoryQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// queueHandle is an http queue shared by the runs of a rule across reloads,
// with the signal its sender waits on.
type queueHandle struct {
	q      Queue
	signal chan struct{}
}

func (h *queueHandle) close() {
	if c, ok := h.q.(io.Closer); ok {
		_ = c.Close()
	}
}

func queueName(rule string, i int) string { return rule + "." + strconv.Itoa(i) }

func (e *Engine) newAction(ctx context.Context, rule string, i int, a Action, c *actionCounters, run *ruleRun) (action, error) {
	must := func(s string) *Template {
		t, err := ParseTemplate(s)
		if err != nil { // Validate ran: cannot happen
			panic(err)
		}
		return t
	}
	body := func(s string) *Template {
		if s == "" {
			s = "${*}"
		}
		return must(s)
	}
	log := e.log.With("rule", rule, "action", i)
	switch {
	case a.Republish != nil:
		return &publishAction{bus: e.opts.Bus, c: c, log: log, origin: run.origin, topic: must(a.Republish.Topic),
			payload: body(a.Republish.Payload), qos: byte(a.Republish.QoS), retain: a.Republish.Retain}, nil
	case a.Uplink != nil:
		return &publishAction{bus: e.opts.Bus, c: c, log: log, origin: run.origin, topic: must(a.Uplink.Topic),
			payload: body(a.Uplink.Payload), qos: byte(a.Uplink.QoS)}, nil
	case a.HTTP != nil:
		h := a.HTTP
		name := queueName(rule, i)
		qh, ok := e.queues[name]
		limit := h.QueueMax
		if limit == 0 {
			limit = DefaultHTTPQueueMax
		}
		if !ok {
			var q Queue = NewMemoryQueue(limit)
			if e.opts.OpenQueue != nil {
				var err error
				if q, err = e.opts.OpenQueue(name, limit); err != nil {
					return nil, fmt.Errorf("open the http queue: %w", err)
				}
			}
			qh = &queueHandle{q: q, signal: make(chan struct{}, 1)}
			e.queues[name] = qh
		}
		ha := &httpAction{cfg: *h, c: c, log: log, body: body(h.Body), qh: qh, client: e.opts.HTTPClient,
			retryMin: e.opts.RetryMin, retryMax: e.opts.RetryMax, limit: limit}
		if ha.cfg.Timeout == 0 {
			ha.cfg.Timeout = DefaultHTTPTimeout
		}
		if ha.cfg.Method == "" {
			ha.cfg.Method = http.MethodPost
		}
		ha.cfg.Method = strings.ToUpper(ha.cfg.Method)
		run.wg.Add(1)
		go func() {
			defer run.wg.Done()
			ha.send(ctx)
		}()
		return ha, nil
	}
	return &logAction{log: log, c: c, payload: a.Log.Payload}, nil
}

// meta looks a metadata field up for a template.
func meta(o output) func(string) (any, bool) {
	if o.cols == nil {
		return nil
	}
	return o.cols.get
}

// publishAction publishes an output on the local broker. As the uplink
// action at QoS 1, the uplink's forward tap makes the message durable in
// the outbox before Publish returns, and a refusal (outbox full) is an
// error counted as failed.
type publishAction struct {
	bus     bus.Bus
	c       *actionCounters
	log     *slog.Logger
	origin  string
	topic   *Template
	payload *Template
	qos     byte
	retain  bool
}

func (a *publishAction) do(ctx context.Context, o output, hop int) {
	m := bus.Message{
		Topic:          a.topic.Render(o.row, meta(o)),
		Payload:        []byte(a.payload.Render(o.row, meta(o))),
		QoS:            a.qos,
		Retain:         a.retain,
		Origin:         a.origin,
		UserProperties: []bus.UserProperty{{Key: HopProperty, Value: strconv.Itoa(hop)}},
	}
	if err := a.bus.Publish(ctx, m); err != nil {
		a.c.failed.Add(1)
		if ctx.Err() == nil {
			a.log.Warn("rule publish failed", "topic", m.Topic, "error", err)
		}
		return
	}
	a.c.success.Add(1)
}

// logAction logs outputs for debugging.
type logAction struct {
	log     *slog.Logger
	c       *actionCounters
	payload bool
}

func (a *logAction) do(_ context.Context, o output, _ int) {
	b, err := EncodeRow(o.row)
	if err != nil {
		a.c.failed.Add(1)
		return
	}
	if a.payload {
		a.log.Info("rule output", "bytes", len(b), "output", string(b))
	} else {
		a.log.Info("rule output", "bytes", len(b))
	}
	a.c.success.Add(1)
}

// httpAction queues each output's body; its sender goroutine POSTs them in
// order, retrying with backoff while the hook fails.
type httpAction struct {
	cfg                HTTPAction
	c                  *actionCounters
	log                *slog.Logger
	body               *Template
	qh                 *queueHandle
	client             *http.Client
	retryMin, retryMax time.Duration
	limit              int
	lastPushLog        time.Time // of the rule's goroutine
}

func (a *httpAction) do(_ context.Context, o output, _ int) {
	if a.qh.q.Len() >= a.limit {
		a.c.dropped.Add(1)
		return
	}
	b := a.body.Render(o.row, meta(o))
	if err := a.qh.q.Push([]byte(b)); err != nil {
		a.c.dropped.Add(1)
		if !errors.Is(err, ErrQueueFull) && time.Since(a.lastPushLog) > 30*time.Second {
			a.lastPushLog = time.Now()
			a.log.Warn("http queue push failed", "error", err)
		}
		return
	}
	select {
	case a.qh.signal <- struct{}{}:
	default:
	}
}

// send delivers the queue until ctx is done.
func (a *httpAction) send(ctx context.Context) {
	backoff := a.retryMin
	var lastLog time.Time
	for ctx.Err() == nil {
		b, ok, err := a.qh.q.Peek()
		if err != nil || !ok {
			if err != nil {
				a.log.Warn("http queue read failed", "error", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-a.qh.signal:
			case <-time.After(time.Second): // a queue read error, or a missed signal
			}
			continue
		}
		status, err := a.post(ctx, b)
		switch {
		case err == nil && status/100 == 2:
			a.c.success.Add(1)
			backoff = a.retryMin
			if err := a.qh.q.Pop(); err != nil {
				a.log.Warn("http queue pop failed", "error", err)
			}
			continue
		case err == nil && status/100 == 4 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests:
			// the hook refuses this request: retrying cannot help
			a.c.failed.Add(1)
			a.log.Warn("http hook refused an output; dropped", "status", status)
			_ = a.qh.q.Pop()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		a.c.retries.Add(1)
		if time.Since(lastLog) > 30*time.Second {
			lastLog = time.Now()
			if err != nil {
				a.log.Warn("http hook unreachable; retrying", "error", err, "queued", a.qh.q.Len(), "retry_in", backoff)
			} else {
				a.log.Warn("http hook failed; retrying", "status", status, "queued", a.qh.q.Len(), "retry_in", backoff)
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, a.retryMax)
	}
}

func (a *httpAction) post(ctx context.Context, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, a.cfg.Method, a.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	for _, h := range a.cfg.Headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

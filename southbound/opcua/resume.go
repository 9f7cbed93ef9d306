package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
)

// sessionTimeout is the session timeout asked of the server: a session
// lost for less than this can be resumed.
const sessionTimeout = time.Minute

// resumable is a session lost to a network cut, kept by the server until
// its timeout, with its subscription.
type resumable struct {
	sess  *opcua.Session
	subID uint32 // 0 when the session had no subscription
	next  uint32 // next sequence number expected, 0 when not known
	lost  time.Time
}

// resumableErr reports whether a session that ended with err may still
// be open on the server (the connection went, not the session).
func resumableErr(err error) bool {
	if errors.Is(err, errLost) {
		return true
	}
	if _, ok := statusOf(err); ok {
		return false
	}
	k := errorKind(err)
	return k == ErrKindConnection || k == ErrKindTimeout
}

// resumeSession opens a new secure channel and re-activates the lost
// session on it, then publishes for its subscription again, asking the
// server to republish the notifications it kept. gopcua's own
// auto-reconnect is not used: see the package notes. It returns a nil
// client (and clears s.resume) when the session cannot be resumed and
// must be recreated, and an error when the server cannot be reached (the
// resume is tried again on the next attempt).
func (s *server) resumeSession(ctx context.Context, notify chan<- *opcua.PublishNotificationData) (*opcua.Client, *publisher, error) {
	r := s.resume
	if time.Since(r.lost) > sessionTimeout || s.clientOpts == nil {
		s.resume = nil
		return nil, nil, nil
	}
	pubTimeout := time.Duration(max(3, keepAliveTarget/s.cfg.Interval)+1)*s.cfg.Interval + s.cfg.Timeout
	c, err := opcua.NewClient(s.cfg.Endpoint, append(slices.Clip(s.clientOpts), opcua.RequestTimeout(pubTimeout))...)
	if err != nil {
		s.resume = nil
		return nil, nil, nil
	}
	closeClient := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
		c.Close(cctx)
		cancel()
	}
	err = s.call(ctx, func(ctx context.Context) error { return c.Dial(ctx) })
	if err != nil {
		closeClient()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if k := errorKind(err); k == ErrKindConnection || k == ErrKindTimeout {
			return nil, nil, fmt.Errorf("reconnect: %w", err)
		}
		s.resume = nil
		return nil, nil, nil
	}
	err = s.call(ctx, func(ctx context.Context) error { return c.ActivateSession(ctx, r.sess) })
	s.resume = nil
	if err != nil {
		closeClient()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		s.logf(slog.LevelInfo, "session not resumed: creating a new one", "err", err)
		return nil, nil, nil
	}
	if r.subID == 0 {
		return c, nil, nil
	}
	pctx, cancel := context.WithCancel(ctx)
	p := &publisher{c: c, s: s, subID: r.subID, next: r.next, errc: make(chan error, 1), cancel: cancel, done: make(chan struct{})}
	go p.run(pctx, notify)
	return c, p, nil
}

// publisher sends the Publish requests of a resumed session's
// subscription (gopcua's publish loop belongs to the client that created
// the subscription) and republishes the notifications that were lost.
type publisher struct {
	c      *opcua.Client
	s      *server
	subID  uint32
	next   uint32 // next sequence number expected; read after done
	errc   chan error
	cancel context.CancelFunc
	done   chan struct{}
}

// run publishes until ctx is done or an error, sent on errc.
func (p *publisher) run(ctx context.Context, notify chan<- *opcua.PublishNotificationData) {
	defer close(p.done)
	acks := []*ua.SubscriptionAcknowledgement{}
	for {
		var res *ua.PublishResponse
		err := p.c.Send(ctx, &ua.PublishRequest{SubscriptionAcknowledgements: acks}, func(v ua.Response) error {
			r, ok := v.(*ua.PublishResponse)
			if !ok {
				return fmt.Errorf("publish: unexpected answer %T", v)
			}
			res = r
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ua.StatusBadTimeout) {
			continue
		}
		if err == nil && res.NotificationMessage == nil {
			err = errors.New("publish: answer without a notification message")
		}
		if err != nil {
			p.fail(err)
			return
		}
		acks = []*ua.SubscriptionAcknowledgement{}
		msg := res.NotificationMessage
		seq := msg.SequenceNumber
		// The messages the server still holds between the last one we
		// got and this one were lost with the old connection.
		for _, n := range res.AvailableSequenceNumbers {
			if n >= seq || (p.next != 0 && n < p.next) {
				continue
			}
			got, err := p.republish(ctx, n)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				p.fail(err)
				return
			}
			if got == nil {
				continue
			}
			p.s.svc.log.Debug("notification republished", "server", p.s.cfg.Name, "seq", n)
			acks = append(acks, &ua.SubscriptionAcknowledgement{SubscriptionID: p.subID, SequenceNumber: n})
			if !p.deliver(ctx, notify, got) {
				return
			}
		}
		if len(msg.NotificationData) == 0 { // a keep-alive carries the next number
			p.next = seq
			continue
		}
		p.next = seq + 1
		acks = append(acks, &ua.SubscriptionAcknowledgement{SubscriptionID: p.subID, SequenceNumber: seq})
		if !p.deliver(ctx, notify, msg) {
			return
		}
	}
}

// republish asks for message n again; nil when the server no longer has it.
func (p *publisher) republish(ctx context.Context, n uint32) (*ua.NotificationMessage, error) {
	var res *ua.RepublishResponse
	err := p.s.call(ctx, func(ctx context.Context) error {
		return p.c.Send(ctx, &ua.RepublishRequest{SubscriptionID: p.subID, RetransmitSequenceNumber: n}, func(v ua.Response) error {
			r, ok := v.(*ua.RepublishResponse)
			if !ok {
				return fmt.Errorf("republish: unexpected answer %T", v)
			}
			res = r
			return nil
		})
	})
	if errors.Is(err, ua.StatusBadMessageNotAvailable) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("republish %d: %w", n, err)
	}
	return res.NotificationMessage, nil
}

// deliver passes msg's notifications to the session loop.
func (p *publisher) deliver(ctx context.Context, notify chan<- *opcua.PublishNotificationData, msg *ua.NotificationMessage) bool {
	if msg == nil {
		return true
	}
	for _, eo := range msg.NotificationData {
		if eo == nil {
			continue
		}
		select {
		case notify <- &opcua.PublishNotificationData{SubscriptionID: p.subID, Value: eo.Value}:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func (p *publisher) fail(err error) {
	select {
	case p.errc <- err:
	default:
	}
}

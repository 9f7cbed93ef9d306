package opcua

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/southbound/setcmd"
)

// setResult is the payload of a set/result message (as Modbus's).
type setResult struct {
	ID  json.RawMessage `json:"id"`
	OK  bool            `json:"ok"`
	Err *string         `json:"err"`
}

// write executes one set command and publishes its result. c is nil while
// the server is offline.
func (s *server) write(ctx context.Context, c *opcua.Client, cmd command) {
	res := setResult{ID: json.RawMessage("null")}
	topic := cmd.topic + "/result"
	err := func() error {
		id, in, expires, err := setcmd.Parse(cmd.payload)
		if id != nil {
			res.ID = id
		}
		p := s.byName[cmd.point]
		if p == nil {
			return fmt.Errorf("no point %q on server %s", cmd.point, s.cfg.Name)
		}
		topic = p.resultTopic
		if err != nil {
			return err
		}
		now := s.svc.now()
		if err := setcmd.CheckExpiry(now, expires, cmd.received, cmd.expiry); err != nil {
			return err
		}
		if !p.cfg.Writable {
			return fmt.Errorf("point %s is not writable", p.cfg.Name)
		}
		if c == nil {
			s.mu.Lock()
			why := s.stats.LastError
			s.mu.Unlock()
			return fmt.Errorf("server %s is offline: %s", s.cfg.Name, why)
		}
		if p.node == nil {
			return fmt.Errorf("point %s: %v", p.cfg.Name, p.resolveErr)
		}
		if p.typ.id == 0 {
			return fmt.Errorf("point %s: its data type is not a built-in type the gateway can write; set the point's type", p.cfg.Name)
		}
		v, err := p.conv.toVariant(in, p.typ)
		if err != nil {
			return fmt.Errorf("point %s: refused before sending: %w", p.cfg.Name, err)
		}
		req := &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{
			NodeID:      p.node,
			AttributeID: ua.AttributeIDValue,
			Value:       &ua.DataValue{EncodingMask: ua.DataValueValue, Value: v},
		}}}
		var wres *ua.WriteResponse
		err = s.call(ctx, func(ctx context.Context) error {
			var err error
			wres, err = c.Write(ctx, req)
			return err
		})
		if err != nil {
			return fmt.Errorf("write %s: %w", p.cfg.Name, err)
		}
		if len(wres.Results) != 1 {
			return fmt.Errorf("write %s: %d results for one value", p.cfg.Name, len(wres.Results))
		}
		return writeStatus(p.cfg.Name, wres.Results[0])
	}()
	res.OK = err == nil
	s.mu.Lock()
	s.stats.Writes++
	if err != nil {
		s.stats.WriteErrors++
	}
	s.mu.Unlock()
	if err != nil {
		msg := err.Error()
		res.Err = &msg
		s.logf(slog.LevelInfo, "set refused or failed", "point", cmd.point, "err", err)
	}
	payload, _ := json.Marshal(res) // plain types: cannot fail
	s.publish(ctx, bus.Message{Topic: topic, Payload: payload, QoS: byte(s.svc.cfg.QoS)})
}

// writeStatus says in words what a Write's status code means.
func writeStatus(point string, sc ua.StatusCode) error {
	if isGood(sc) {
		return nil
	}
	switch sc & 0xFFFF0000 {
	case ua.StatusBadNotWritable:
		return fmt.Errorf("refused: the server says %s is read-only (BadNotWritable)", point)
	case ua.StatusBadUserAccessDenied:
		return fmt.Errorf("refused: the server does not let this user write %s (BadUserAccessDenied)", point)
	case ua.StatusBadOutOfRange:
		return fmt.Errorf("refused: the value is out of the range the server accepts for %s (BadOutOfRange)", point)
	case ua.StatusBadTypeMismatch:
		return fmt.Errorf("refused: the server expects another type for %s (BadTypeMismatch)", point)
	case ua.StatusBadNodeIDUnknown:
		return fmt.Errorf("refused: the server does not know the node of %s (BadNodeIdUnknown)", point)
	}
	if isUncertain(sc) {
		return fmt.Errorf("written, but the server says %s", statusName(sc))
	}
	return fmt.Errorf("refused by the server: %s", statusName(sc))
}

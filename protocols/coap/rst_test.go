package coap

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fieldgate/fieldgate/bus"
)

// rawPeer speaks CoAP over a bare UDP socket, to send what go-coap's
// client would not (an RST for a notification).
type rawPeer struct {
	t    testing.TB
	conn *net.UDPConn
}

func newRawPeer(t testing.TB, addr string) *rawPeer {
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawPeer{t: t, conn: c}
}

func (p *rawPeer) send(m message.Message) {
	p.t.Helper()
	buf := make([]byte, 2048)
	n, err := coder.DefaultCoder.Encode(m, buf)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.conn.Write(buf[:n]); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) read() message.Message {
	p.t.Helper()
	buf := make([]byte, 2048)
	_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := p.conn.Read(buf)
	if err != nil {
		p.t.Fatal(err)
	}
	m := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
		p.t.Fatal(err)
	}
	return m
}

func TestObserveCancelByRST(t *testing.T) {
	for _, typ := range []message.Type{message.Confirmable, message.NonConfirmable} {
		t.Run(typ.String(), func(t *testing.T) {
			notify := NotifyNon
			if typ == message.Confirmable {
				notify = NotifyCon
			}
			e := startEnv(t, nil, func(c *Config) { c.NotifyType = notify })
			p := newRawPeer(t, e.addr)
			opts := message.Options{
				{ID: message.Observe, Value: []byte{}},
				{ID: message.URIPath, Value: []byte("ps")},
				{ID: message.URIPath, Value: []byte("rst")},
				{ID: message.URIPath, Value: []byte("t")},
			}
			p.send(message.Message{Type: message.Confirmable, Code: codes.GET, MessageID: 100, Token: []byte{1, 2, 3, 4}, Options: opts})
			if ack := p.read(); ack.Code != codes.Content || ack.MessageID != 100 {
				t.Fatalf("registration answer: %v", ack.String())
			}
			if err := e.b.Publish(ctxT(t), bus.Message{Topic: "rst/t", Payload: []byte("one")}); err != nil {
				t.Fatal(err)
			}
			n := p.read()
			if n.Type != typ || !bytes.Equal(n.Payload, []byte("one")) || !bytes.Equal(n.Token, []byte{1, 2, 3, 4}) {
				t.Fatalf("notification: %v", n.String())
			}
			p.send(message.Message{Type: message.Reset, Code: codes.Empty, MessageID: n.MessageID})
			eventually(t, "observation cancelled by RST", func() bool { return e.g.Stats().Observers == 0 })
		})
	}
}

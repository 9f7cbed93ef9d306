// SPDX-License-Identifier: MIT

// fieldgate patch (parked reads): the engine side of parking, with a
// stand-in parker over net.Pipe that records each ParkRead and lets the
// test wake the client. fieldgate's protocols/mqtt/park_test.go runs the
// same paths with the real epoll poller over TCP.

package mqtt

import (
	"bufio"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// pipeParker is a net.Pipe end that parks by recording the Waker.
type pipeParker struct {
	net.Conn
	mu       sync.Mutex
	parks    int
	waker    Waker
	deadline time.Time
}

func (p *pipeParker) ParkAfter() time.Duration { return 20 * time.Millisecond }

func (p *pipeParker) ParkRead(deadline time.Time, w Waker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parks++
	p.waker, p.deadline = w, deadline
	return true
}

// Close wakes a parked client, as the real parker does, and closes.
func (p *pipeParker) Close() error {
	p.mu.Lock()
	w := p.waker
	p.waker = nil
	p.mu.Unlock()
	if w != nil {
		w.Wake()
	}
	return p.Conn.Close()
}

// wake wakes the parked client once, as the poller would.
func (p *pipeParker) wake(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	w := p.waker
	p.waker = nil
	p.mu.Unlock()
	require.NotNil(t, w, "not parked")
	w.Wake()
}

func (p *pipeParker) parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waker == nil {
		return 0
	}
	return p.parks
}

func TestParkedReadResumesAndEnds(t *testing.T) {
	s := newServer()
	require.NoError(t, s.Serve())
	defer s.Close()

	srv, cli := net.Pipe()
	pp := &pipeParker{Conn: srv}
	done := make(chan error, 1)
	go func() { done <- s.EstablishConnection("tcp", pp) }()

	r := bufio.NewReader(cli)
	_, err := cli.Write(packets.TPacketData[packets.Connect].Get(packets.TConnectMqtt311).RawBytes)
	require.NoError(t, err)
	ack := make([]byte, 4)
	_, err = io.ReadFull(r, ack)
	require.NoError(t, err)
	require.Equal(t, byte(packets.Connack<<4), ack[0])

	// Silent for ParkAfter: the connection parks and the first read loop
	// ends with the client still connected.
	require.Eventually(t, func() bool { return pp.parked() == 1 }, 5*time.Second, 5*time.Millisecond)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("EstablishConnection did not return after parking")
	}
	require.Equal(t, int64(1), atomic.LoadInt64(&s.Info.ClientsConnected))
	require.False(t, pp.deadline.IsZero(), "keep alive deadline not passed to the parker")

	// Woken, a new read loop answers the PINGREQ and parks again.
	pp.wake(t)
	_, err = cli.Write([]byte{packets.Pingreq << 4, 0})
	require.NoError(t, err)
	resp := make([]byte, 2)
	_, err = io.ReadFull(r, resp)
	require.NoError(t, err)
	require.Equal(t, []byte{packets.Pingresp << 4, 0}, resp)
	require.Eventually(t, func() bool { return pp.parked() == 2 }, 5*time.Second, 5*time.Millisecond)

	// Woken again, DISCONNECT ends the client as an unparked one ends.
	pp.wake(t)
	_, err = cli.Write([]byte{packets.Disconnect << 4, 0})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return atomic.LoadInt64(&s.Info.ClientsConnected) == 0 }, 5*time.Second, 5*time.Millisecond)
	_, ok := s.Clients.Get("mochi")
	require.False(t, ok, "clean session kept after DISCONNECT")
}

func TestParkedPacketSplitAcrossTheWait(t *testing.T) {
	s := newServer()
	require.NoError(t, s.Serve())
	defer s.Close()

	srv, cli := net.Pipe()
	pp := &pipeParker{Conn: srv}
	// Server.Close stops the clients of its listeners only; this one has
	// none: closing the connection wakes the client if it is parked.
	defer pp.Close()
	go func() { _ = s.EstablishConnection("tcp", pp) }()
	r := bufio.NewReader(cli)
	_, err := cli.Write(packets.TPacketData[packets.Connect].Get(packets.TConnectMqtt311).RawBytes)
	require.NoError(t, err)
	ack := make([]byte, 4)
	_, err = io.ReadFull(r, ack)
	require.NoError(t, err)

	// The first byte of a PINGREQ arrives within ParkAfter, the second
	// after several times it: the short wait applies between packets only.
	_, err = cli.Write([]byte{packets.Pingreq << 4})
	require.NoError(t, err)
	time.Sleep(5 * pp.ParkAfter())
	_, err = cli.Write([]byte{0})
	require.NoError(t, err)
	resp := make([]byte, 2)
	_, err = io.ReadFull(r, resp)
	require.NoError(t, err)
	require.Equal(t, []byte{packets.Pingresp << 4, 0}, resp)
}

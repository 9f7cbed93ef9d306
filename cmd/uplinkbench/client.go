package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// A minimal MQTT 3.1.1 publisher on a raw socket, so that the load
// generator costs little next to what it measures.

// dialMQTT connects and completes CONNECT/CONNACK.
func dialMQTT(addr, id string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60}
	body = append(body, byte(len(id)>>8), byte(len(id)))
	body = append(body, id...)
	if _, err := c.Write(packet(0x10, body)); err != nil {
		c.Close()
		return nil, err
	}
	ack := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("connect %s: % x %v", id, ack, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

// packet frames body with the fixed header h.
func packet(h byte, body []byte) []byte {
	b := []byte{h}
	n := len(body)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			break
		}
	}
	return append(b, body...)
}

// publishPacket is a QoS 1 PUBLISH.
func publishPacket(topic string, payload []byte, id uint16) []byte {
	body := make([]byte, 0, 4+len(topic)+len(payload))
	body = append(body, byte(len(topic)>>8), byte(len(topic)))
	body = append(body, topic...)
	body = append(body, byte(id>>8), byte(id))
	body = append(body, payload...)
	return packet(0x32, body)
}

// publishQoS1 publishes on topic with window messages in flight until ctx
// is done, counting PUBACKs in acked.
func publishQoS1(ctx context.Context, addr, id, topic string, payload []byte, window int, acked *atomic.Int64) error {
	c, err := dialMQTT(addr, id)
	if err != nil {
		return err
	}
	defer c.Close()
	credit := make(chan struct{}, window)
	for range window {
		credit <- struct{}{}
	}
	readErr := make(chan error, 1)
	go func() {
		r := bufio.NewReaderSize(c, 64<<10)
		ack := make([]byte, 4)
		for {
			if _, err := io.ReadFull(r, ack); err != nil {
				readErr <- err
				return
			}
			if ack[0] != 0x40 {
				readErr <- fmt.Errorf("%s: unexpected packet % x", id, ack)
				return
			}
			acked.Add(1)
			credit <- struct{}{}
		}
	}()
	var n uint16
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		case <-credit:
		}
		n++
		if n == 0 {
			n = 1
		}
		if _, err := c.Write(publishPacket(topic, payload, n)); err != nil {
			return err
		}
	}
}

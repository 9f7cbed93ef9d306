package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestAppendRemainingLength(t *testing.T) {
	// The examples of MQTT 3.1.1 section 2.2.3.
	tests := []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x00}},
		{127, []byte{0x7f}},
		{128, []byte{0x80, 0x01}},
		{16383, []byte{0xff, 0x7f}},
		{16384, []byte{0x80, 0x80, 0x01}},
		{2097151, []byte{0xff, 0xff, 0x7f}},
		{2097152, []byte{0x80, 0x80, 0x80, 0x01}},
		{268435455, []byte{0xff, 0xff, 0xff, 0x7f}},
	}
	for _, tt := range tests {
		got := appendRemainingLength(nil, tt.n)
		if !bytes.Equal(got, tt.want) {
			t.Errorf("appendRemainingLength(%d) = % x, want % x", tt.n, got, tt.want)
		}
		n, err := readRemainingLength(bytes.NewReader(tt.want))
		switch {
		case tt.n > maxRemainingLength:
			if !errors.Is(err, errMalformed) {
				t.Errorf("readRemainingLength(% x) = %d, %v; want errMalformed (over the limit)", tt.want, n, err)
			}
		case err != nil || n != tt.n:
			t.Errorf("readRemainingLength(% x) = %d, %v; want %d", tt.want, n, err, tt.n)
		}
	}
}

func TestReadRemainingLengthErrors(t *testing.T) {
	if _, err := readRemainingLength(bytes.NewReader([]byte{0x80, 0x80, 0x80, 0x80, 0x01})); !errors.Is(err, errMalformed) {
		t.Errorf("5-byte length: err = %v, want errMalformed", err)
	}
	if _, err := readRemainingLength(bytes.NewReader([]byte{0x80})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut length: err = %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := readRemainingLength(bytes.NewReader(nil)); err != io.EOF {
		t.Errorf("no length: err = %v, want io.EOF", err)
	}
}

func TestEncodeGolden(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"CONNECT", appendConnect(nil, "a", 60, true), []byte{
			0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 1, 'a'}},
		{"CONNECT no clean session", appendConnect(nil, "", 0, false), []byte{
			0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x00, 0, 0, 0, 0}},
		{"PUBLISH QoS 0", appendPublish(nil, "a/b", 0, 7, []byte("hi")), []byte{
			0x30, 7, 0, 3, 'a', '/', 'b', 'h', 'i'}},
		{"PUBLISH QoS 1", appendPublish(nil, "a/b", 1, 0x0102, []byte("hi")), []byte{
			0x32, 9, 0, 3, 'a', '/', 'b', 1, 2, 'h', 'i'}},
		{"SUBSCRIBE", appendSubscribe(nil, 1, "a/#", 1), []byte{
			0x82, 8, 0, 1, 0, 3, 'a', '/', '#', 1}},
		{"PUBACK", appendPuback(nil, 0xabcd), []byte{0x40, 2, 0xab, 0xcd}},
		{"PINGREQ", appendPingreq(nil), []byte{0xc0, 0}},
		{"DISCONNECT", appendDisconnect(nil), []byte{0xe0, 0}},
	}
	for _, tt := range tests {
		if !bytes.Equal(tt.got, tt.want) {
			t.Errorf("%s = % x, want % x", tt.name, tt.got, tt.want)
		}
	}
}

func TestPublishRoundTrip(t *testing.T) {
	payload := bytes.Repeat([]byte{0x5a}, 200) // remaining length over 127
	var stream []byte
	stream = appendPublish(stream, "bench/fanin/0", 0, 0, payload)
	stream = appendPublish(stream, "bench/fanin/1", 1, 65535, payload[:8])
	stream = append(stream, 0x90, 3, 0, 1, 0x80) // SUBACK, refused
	stream = append(stream, 0x20, 2, 0, 0)       // CONNACK, accepted

	pr := newPacketReader(bufio.NewReader(iotest.HalfReader(bytes.NewReader(stream))))
	header, body, err := pr.next()
	if err != nil {
		t.Fatal(err)
	}
	p, err := parsePublish(header, body)
	if err != nil || p.QoS != 0 || string(p.Topic) != "bench/fanin/0" || !bytes.Equal(p.Payload, payload) {
		t.Errorf("first PUBLISH = %+v, %v", p, err)
	}
	header, body, err = pr.next()
	if err != nil {
		t.Fatal(err)
	}
	p, err = parsePublish(header, body)
	if err != nil || p.QoS != 1 || p.PacketID != 65535 || string(p.Topic) != "bench/fanin/1" || !bytes.Equal(p.Payload, payload[:8]) {
		t.Errorf("second PUBLISH = %+v, %v", p, err)
	}
	header, body, err = pr.next()
	if err != nil || header>>4 != typeSuback {
		t.Fatalf("third packet: header %#x, %v; want SUBACK", header, err)
	}
	if id, codes, err := parseSuback(body); err != nil || id != 1 || !bytes.Equal(codes, []byte{0x80}) {
		t.Errorf("SUBACK = %d, % x, %v", id, codes, err)
	}
	header, body, err = pr.next()
	if err != nil || header>>4 != typeConnack {
		t.Fatalf("fourth packet: header %#x, %v; want CONNACK", header, err)
	}
	if code, err := parseConnack(body); err != nil || code != 0 {
		t.Errorf("CONNACK code = %d, %v", code, err)
	}
	if _, _, err := pr.next(); err != io.EOF {
		t.Errorf("after the last packet: err = %v, want io.EOF", err)
	}
}

func TestPacketReaderErrors(t *testing.T) {
	cut := appendPublish(nil, "t", 0, 0, []byte("payload"))
	cut = cut[:len(cut)-2]
	pr := newPacketReader(bufio.NewReader(bytes.NewReader(cut)))
	if _, _, err := pr.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut packet: err = %v, want io.ErrUnexpectedEOF", err)
	}

	bad := [][]byte{
		{},             // no topic length
		{0, 5, 'a'},    // topic longer than body
		{0, 1, 'a', 1}, // QoS 1 without a whole packet id
	}
	headers := []byte{0x30, 0x30, 0x32}
	for i, body := range bad {
		if _, err := parsePublish(headers[i], body); !errors.Is(err, errMalformed) {
			t.Errorf("parsePublish(%#x, % x): err = %v, want errMalformed", headers[i], body, err)
		}
	}
	if _, err := parsePublish(0x36, []byte{0, 1, 'a', 0, 1}); !errors.Is(err, errMalformed) {
		t.Errorf("QoS 3 PUBLISH: err = %v, want errMalformed", err)
	}
	if _, err := parseConnack([]byte{0}); !errors.Is(err, errMalformed) {
		t.Errorf("short CONNACK: err = %v, want errMalformed", err)
	}
	if _, err := parsePacketID([]byte{0}); !errors.Is(err, errMalformed) {
		t.Errorf("short PUBACK: err = %v, want errMalformed", err)
	}
}

func TestPacketReaderBeforeBlock(t *testing.T) {
	stream := appendPuback(nil, 1)
	stream = appendPuback(stream, 2)

	// Both packets arrive in one read: only the first next may block.
	calls := 0
	pr := newPacketReader(bufio.NewReader(bytes.NewReader(stream)))
	pr.beforeBlock = func() error { calls++; return nil }
	for range 2 {
		if _, _, err := pr.next(); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 1 {
		t.Errorf("whole stream buffered: beforeBlock called %d times, want 1", calls)
	}

	// One byte per read: every packet header and body may block.
	calls = 0
	pr = newPacketReader(bufio.NewReader(iotest.OneByteReader(bytes.NewReader(stream))))
	pr.beforeBlock = func() error { calls++; return nil }
	for range 2 {
		if _, _, err := pr.next(); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 4 {
		t.Errorf("one byte per read: beforeBlock called %d times, want 4", calls)
	}

	// An error from beforeBlock (a failed flush) ends the read.
	flushErr := errors.New("flush failed")
	pr = newPacketReader(bufio.NewReader(bytes.NewReader(stream)))
	pr.beforeBlock = func() error { return flushErr }
	if _, _, err := pr.next(); !errors.Is(err, flushErr) {
		t.Errorf("err = %v, want the beforeBlock error", err)
	}
}

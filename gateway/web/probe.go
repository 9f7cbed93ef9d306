package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/southbound/modbus"
)

// The device form's "read before save": the page sends the Modbus section
// as it would save it and names the device; the gateway checks it like a
// save, then reads that one device once with a poller of its own that
// publishes nothing, and answers like "read now". Nothing is saved.
//
// A Modbus RTU device is read on the serial port and with the serial
// settings of the form: the port is opened, the points read, the port
// closed. Unless a running device or serial sensor already uses that port:
// then the answer says so and nothing is opened. RS-485 has one master;
// a second poller on the same line would send while the running one waits
// for its reply, and both would read each other's garbled frames (Linux
// lets two programs open one tty). Reading through the running line's
// poller would be safe for the line, but that poller has the saved serial
// settings, not the form's, which are what is being tried: the technician
// saves, and "Read now" reads through the running poller between its polls.

// probeTimeout bounds a read before save, connection included.
const probeTimeout = 15 * time.Second

// probeRoutes are the read-before-save routes, added to the API's.
func (s *Server) probeRoutes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{"POST /api/v1/southbound/probe": s.probeDevice}
}

// probeRequest is the section as the page would save it and the device to read.
type probeRequest struct {
	Device string          `json:"device"`
	Modbus json.RawMessage `json:"modbus"`
}

func (s *Server) probeDevice(w http.ResponseWriter, r *http.Request) {
	var req probeRequest
	if !readJSON(w, r, &req) {
		return
	}
	var section any
	if err := json.Unmarshal(req.Modbus, &section); err != nil || section == nil {
		writeFields(w, "invalid read", FieldError{Field: "modbus", Error: "the Modbus section as JSON is required"})
		return
	}
	running := s.b.Config()
	c, err := withSection(running, "southbound.modbus", section)
	if err == nil {
		err = c.Validate()
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid config", Fields: sectionFieldErrors(running, "southbound.modbus", section, err)})
		return
	}
	i := modbusDevice(c, req.Device)
	if i < 0 {
		writeFields(w, "invalid read", FieldError{Field: "device", Error: "no such device in the section"})
		return
	}
	mc := c.Southbound.Modbus
	d := mc.Devices[i]
	path := fmt.Sprintf("southbound.modbus.devices[%d]", i)
	if d.RTU != nil {
		if _, err := os.Stat(d.RTU.Port); err != nil {
			msg := fmt.Sprintf("Serial port %s is not there — is the adapter plugged in, and is this its name?", d.RTU.Port)
			if !errors.Is(err, fs.ErrNotExist) {
				msg = fmt.Sprintf("Serial port %s cannot be looked at: %s", d.RTU.Port, plainOr(err.Error()))
			}
			writeJSON(w, http.StatusBadGateway, apiError{Error: msg, Fields: []FieldError{{Field: path + ".rtu.port", Error: msg, Words: msg}}})
			return
		}
		if user := portUser(running, d.RTU.Port); user != "" {
			msg := fmt.Sprintf("Serial port %s is in use by the running %s. Read before save does not open it: two pollers on one RS-485 line garble each other's frames. Save the device, then use Read now: it reads through the running poller.", d.RTU.Port, user)
			writeFields(w, msg, FieldError{Field: path + ".rtu.port", Error: msg, Words: msg})
			return
		}
	}
	mc.Devices = []modbus.Device{d}
	svc, err := modbus.New(mc, discardBus{}, modbus.Options{Logger: s.log.With("probe", d.Name)})
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid device", Fields: fieldErrors(err)})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = svc.Run(ctx)
	}()
	snap, err := svc.ReadNow(ctx, d.Name)
	cancel()
	<-done
	if err != nil {
		msg := plainOr(err.Error())
		if errors.Is(err, context.DeadlineExceeded) {
			msg = "The device did not answer within 15 s: check the address, the port and that it is switched on."
		}
		writeJSON(w, http.StatusBadGateway, apiError{Error: msg, Fields: []FieldError{{Field: path + "." + connField(d, ""), Error: msg, Words: msg}}})
		return
	}
	s.log.Info("web: device read before save", "device", d.Name, "address", clientAddr(r))
	out := Reading{Time: snap.Time}
	var shared, field string // one error of every point, and the input it concerns
	sameErr := len(snap.Readings) > 0
	for i, p := range snap.Readings {
		var v any
		if b, err := json.Marshal(p.Value); err == nil {
			_ = json.Unmarshal(b, &v)
		}
		words, f := plainError(p.Err)
		if words == "" {
			words = p.Err
		}
		if i == 0 {
			shared, field = words, f
		}
		sameErr = sameErr && p.Err != "" && words == shared
		out.Points = append(out.Points, PointReading{Name: p.Point, Value: v, Unit: p.Unit, Raw: p.Raw, Error: words})
	}
	// Every point failed the same way, for a reason of the connection (not
	// of a point: an exception names no field): say it once, at its input.
	if sameErr && field != "" && field != "value" {
		writeJSON(w, http.StatusBadGateway, apiError{Error: shared, Fields: []FieldError{{Field: path + "." + connField(d, field), Error: shared, Words: shared}}})
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// connField is the device form's input a connection error concerns: the
// TCP address, or for a serial device the one the error names (the port
// by default).
func connField(d modbus.Device, field string) string {
	switch {
	case d.RTU == nil:
		if field == "unit_id" {
			return field
		}
		return "tcp.address"
	case field == "" || strings.HasPrefix(field, "tcp."):
		return "rtu.port"
	}
	return field
}

// portUser names the running device or serial sensor that uses the serial
// port at path ("" when none does). Paths are compared after following
// links (/dev/serial/by-id/... names the same adapter as /dev/ttyUSB0).
func portUser(running config.Config, path string) string {
	same := func(p string) bool {
		if p == path {
			return true
		}
		a, err1 := filepath.EvalSymlinks(p)
		b, err2 := filepath.EvalSymlinks(path)
		return err1 == nil && err2 == nil && a == b
	}
	var users []string
	for _, d := range running.Southbound.Modbus.Devices {
		if d.RTU != nil && same(d.RTU.Port) {
			users = append(users, "Modbus device “"+d.Name+"”")
		}
	}
	for _, sn := range running.Southbound.Serial.Sensors {
		if same(sn.Port) {
			users = append(users, "serial sensor “"+sn.Name+"”")
		}
	}
	switch len(users) {
	case 0:
		return ""
	case 1:
		return users[0]
	}
	return users[0] + fmt.Sprintf(" (and %d more)", len(users)-1)
}

// discardBus is the bus of a read before save: nothing is published and
// no set command comes in.
type discardBus struct{}

func (discardBus) Publish(context.Context, bus.Message) error { return nil }

func (discardBus) Subscribe(string, bus.Handler) (func(), error) { return func() {}, nil }

func (discardBus) Tap(string, bus.TapFunc) (func(), error) { return func() {}, nil }

package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/southbound/modbus"
)

// The device form's "read before save": the page sends the Modbus section
// as it would save it and names the device; the gateway checks it like a
// save, then reads that one TCP device once with a poller of its own that
// publishes nothing, and answers like "read now". Nothing is saved.

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
	c, err := withSection(s.b.Config(), "southbound.modbus", section)
	if err == nil {
		err = c.Validate()
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid config", Fields: fieldErrors(err)})
		return
	}
	i := modbusDevice(c, req.Device)
	if i < 0 {
		writeFields(w, "invalid read", FieldError{Field: "device", Error: "no such device in the section"})
		return
	}
	mc := c.Southbound.Modbus
	d := mc.Devices[i]
	if d.TCP == nil {
		writeFields(w, "invalid read", FieldError{Field: "device", Error: "read before save works for Modbus TCP devices; save a serial device, then use Read now (the serial port is in use by the poller)"})
		return
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
		if errors.Is(err, context.DeadlineExceeded) {
			writeError(w, http.StatusBadGateway, "the device did not answer within 15 s: check the address, the port and that it is switched on")
			return
		}
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	s.log.Info("web: device read before save", "device", d.Name, "address", clientAddr(r))
	out := Reading{Time: snap.Time}
	for _, p := range snap.Readings {
		var v any
		if b, err := json.Marshal(p.Value); err == nil {
			_ = json.Unmarshal(b, &v)
		}
		out.Points = append(out.Points, PointReading{Name: p.Point, Value: v, Unit: p.Unit, Raw: p.Raw, Error: p.Err})
	}
	writeJSON(w, http.StatusOK, out)
}

// discardBus is the bus of a read before save: nothing is published and
// no set command comes in.
type discardBus struct{}

func (discardBus) Publish(context.Context, bus.Message) error { return nil }

func (discardBus) Subscribe(string, bus.Handler) (func(), error) { return func() {}, nil }

func (discardBus) Tap(string, bus.TapFunc) (func(), error) { return func() {}, nil }

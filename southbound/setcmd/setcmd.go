// Package setcmd reads the write command every southbound takes on
// southbound/<device>/<point>/set: a bare JSON value, or an object
// {"id": …, "v": …, "expires": ms since 1970} whose id is echoed on
// …/set/result. Modbus and OPC UA share it, so a client writes to either
// the same way (docs/southbound.md).
package setcmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Parse decodes a set payload. Numbers stay json.Number, so the point's
// codec decides what fits. id is set whenever the object carried one, also
// when err is not nil, so the refusal can name the command.
func Parse(payload []byte) (id json.RawMessage, v any, expires int64, err error) {
	trimmed := bytes.TrimSpace(payload)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var obj struct {
			ID      json.RawMessage `json:"id"`
			V       json.RawMessage `json:"v"`
			Expires json.Number     `json:"expires"`
		}
		if err := json.Unmarshal(trimmed, &obj); err != nil {
			return nil, nil, 0, fmt.Errorf("bad command object: %w", err)
		}
		id = obj.ID
		if obj.V == nil {
			return id, nil, 0, errors.New(`command object has no "v"`)
		}
		if obj.Expires != "" {
			expires, err = obj.Expires.Int64()
			if err != nil {
				return id, nil, 0, fmt.Errorf("expires %s is not milliseconds since 1970", obj.Expires)
			}
		}
		trimmed = obj.V
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return id, nil, 0, fmt.Errorf("payload is not a JSON value: %w", err)
	}
	if dec.More() {
		return id, nil, 0, errors.New("payload has data after the JSON value")
	}
	return id, v, expires, nil
}

// CheckExpiry refuses a command that is too old to carry out at now: past
// its own expires (ms since 1970, 0 for none), or past the MQTT 5 message
// expiry interval (expiry, 0 for none) counted from when it was received.
func CheckExpiry(now time.Time, expires int64, received time.Time, expiry time.Duration) error {
	if expires > 0 && now.UnixMilli() > expires {
		return fmt.Errorf("expired at %d, %d ms ago", expires, now.UnixMilli()-expires)
	}
	if expiry > 0 && !received.IsZero() && now.After(received.Add(expiry)) {
		return errors.New("expired (message expiry interval)")
	}
	return nil
}

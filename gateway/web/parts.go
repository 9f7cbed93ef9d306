package web

import (
	"net/http"
	"time"
)

// PartStatus is one supervised part of the gateway, for the page's "Parts"
// card.
type PartStatus struct {
	Name string `json:"name"`
	// State is running, backoff, done, stopped, stuck or abandoned.
	State   string `json:"state"`
	Healthy bool   `json:"healthy"`
	// Restarts counts restarts after an error, a panic or being stuck.
	Restarts int64 `json:"restarts"`
	// LastProgress is when the part last did useful work (zero for a part
	// that reports none).
	LastProgress time.Time `json:"last_progress,omitzero"`
	// ProgressAge is how long ago LastProgress was, in seconds, by the
	// gateway's clock (the browser's may differ).
	ProgressAge float64 `json:"last_progress_age,omitempty"`
	// Bound is how old LastProgress may get before the part counts as
	// stuck (0: not checked).
	Bound     Duration `json:"bound,omitempty"`
	LastError string   `json:"last_error,omitempty"`
}

// Duration is a time.Duration that is JSON "10s".
type Duration time.Duration

// MarshalText writes d as Go writes a duration ("1m30s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// RestartStatus says which saved settings wait for a restart: the running
// config differs from the saved one at Keys until the gateway restarts (or
// the setting is saved back to its running value).
type RestartStatus struct {
	// Needed is true while any setting waits.
	Needed bool `json:"needed"`
	// Parts are the parts that must restart, in config order ("gateway":
	// the whole process).
	Parts []string `json:"parts"`
	// Keys are the waiting settings by config path, each with its part.
	Keys []PendingSetting `json:"keys"`
}

// PendingSetting is one saved setting that waits for a restart.
type PendingSetting struct {
	Key  string `json:"key"`
	Part string `json:"part"`
}

// restart stops the gateway so that it starts again with the saved config
// (POST /api/v1/restart, admin). The answer is sent before the page stops.
func (s *Server) restart(w http.ResponseWriter, r *http.Request) {
	if err := s.b.Restart(); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	s.log.Info("web: restart requested", "address", clientAddr(r))
	writeJSON(w, http.StatusAccepted, map[string]bool{"restarting": true})
}

package web

// DeviceStats are a southbound device's poll counters, for the Southbound
// page's per-device line (the same numbers are on /metrics).
type DeviceStats struct {
	// Polls counts group polls; FailedPolls those the device did not
	// answer properly.
	Polls       uint64 `json:"polls"`
	FailedPolls uint64 `json:"failed_polls"`
	// Requests counts transactions, retries included.
	Requests uint64 `json:"requests"`
	// Errors counts failed transactions by kind ("timeout", "exception"…).
	Errors map[string]uint64 `json:"errors,omitempty"`
	// Writes and WriteErrors count set commands executed and failed.
	Writes      uint64 `json:"writes"`
	WriteErrors uint64 `json:"write_errors"`
	// RoundTripP50Ms and RoundTripP99Ms are the median and 99th percentile
	// of the request-to-answer time of the last answered transactions, in
	// milliseconds (0 before the first answer).
	RoundTripP50Ms float64 `json:"round_trip_p50_ms"`
	RoundTripP99Ms float64 `json:"round_trip_p99_ms"`
}

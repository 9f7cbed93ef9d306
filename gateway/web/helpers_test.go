package web

import "log/slog"

// slogTo returns a logger recording into ring (debug and above).
func slogTo(ring *LogRing) *slog.Logger {
	return slog.New(ring.Handler(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

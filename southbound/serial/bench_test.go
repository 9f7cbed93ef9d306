package serial

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/fieldgate/fieldgate/bus"
)

// benchLines feeds lines through the whole path after the port: splitter,
// garbage check, parser, JSON, publish on an in-memory bus.
func benchLines(b *testing.B, sc Sensor, text string) {
	cfg := testConfig(sc)
	svc, err := New(cfg, bus.NewMemory(nil), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	sn := svc.sensors[0]
	split := newLineSplitter(sn.term, sn.cfg.MaxLine)
	ctx := context.Background()
	data := []byte(text)
	onLine := func(l []byte) { sn.handleLine(ctx, l) }
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		split.feed(data, onLine, func() {})
	}
	if st := sn.snapshot(); st.Readings == 0 || len(st.Dropped) != 0 {
		b.Fatalf("stats %+v", st)
	}
}

func BenchmarkNMEALine(b *testing.B) {
	benchLines(b, Sensor{Name: "gps", Port: "/dev/null", Parser: "nmea"},
		"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n")
}

func BenchmarkRegexLine(b *testing.B) {
	benchLines(b, Sensor{
		Name: "weather", Port: "/dev/null", Parser: "regex",
		Regex:  `^T=(?P<temp>\S+) H=(?P<hum>\S+) P=(?P<press>\S+)$`,
		Fields: []Field{{Name: "temp"}, {Name: "hum", Scale: 0.1}, {Name: "press", Type: "int"}},
	}, "T=21.5 H=455 P=1013\n")
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machineInfo describes where the benchmark ran.
type machineInfo struct {
	Date     time.Time `json:"date"`
	CPU      string    `json:"cpu"`
	Cores    int       `json:"cores"`
	OSArch   string    `json:"os_arch"`
	Kernel   string    `json:"kernel"`
	Go       string    `json:"go"`
	Duration string    `json:"duration_per_scenario"`
}

// readMachineInfo gathers the CPU model from /proc/cpuinfo, the core count,
// the kernel release and the Go version.
func readMachineInfo(d time.Duration) machineInfo {
	m := machineInfo{
		Date:     time.Now().UTC().Truncate(time.Second),
		CPU:      "unknown CPU",
		Cores:    runtime.NumCPU(),
		OSArch:   runtime.GOOS + "/" + runtime.GOARCH,
		Go:       runtime.Version(),
		Duration: d.String(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			key, value, ok := strings.Cut(line, ":")
			if ok && strings.TrimSpace(key) == "model name" {
				m.CPU = strings.TrimSpace(value)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// cell is one scenario's outcome on one broker.
type cell struct {
	metrics []metric
	err     error
	skipped bool
	// othersCPU is the CPU other processes used during the run, in percent
	// of one core.
	othersCPU float64
	// sigterm is how the broker answered SIGTERM after the scenario.
	sigterm sigtermResult
}

// scenarioResult is one scenario's outcome on each compared broker, in the
// order of the report's brokers.
type scenarioResult struct {
	sc    scenario
	cells []cell
}

// report is everything the table and the JSON file show.
type report struct {
	machine machineInfo
	// brokers are the compared brokers: the candidate first (fieldgate, or
	// a stand-in), the reference (mosquitto) second, upstream mochi third.
	brokers  []brokerSpec
	versions []string
	results  []scenarioResult
}

// row is one line of the table: one metric of one scenario.
type row struct {
	scenario, title, metric string
	kind                    metricKind
	values                  []*float64 // nil: no value (skipped or failed)
	notes                   []string   // "skipped", "error"
}

// sigtermMetric names the row every scenario ends with.
const sigtermMetric = "exit on SIGTERM (s)"

// rows flattens the results into table rows; a scenario whose every cell
// failed gets one row, and every scenario ends with the time each broker
// took to exit after SIGTERM ("killed" past stopTimeout).
func (r report) rows() []row {
	var rows []row
	for _, sr := range r.results {
		var names []metric
		for _, c := range sr.cells {
			if len(c.metrics) > 0 {
				names = c.metrics
				break
			}
		}
		if len(names) == 0 {
			names = []metric{{name: "–"}}
		}
		for i, m := range names {
			rw := row{scenario: sr.sc.name, title: sr.sc.title, metric: m.name, kind: m.kind}
			for _, c := range sr.cells {
				var v *float64
				note := ""
				switch {
				case c.skipped:
					note = "skipped"
				case c.err != nil:
					note = "error"
				case i < len(c.metrics) && c.metrics[i].missing:
					note = "–"
				case i < len(c.metrics):
					v = &c.metrics[i].value
				}
				rw.values = append(rw.values, v)
				rw.notes = append(rw.notes, note)
			}
			rows = append(rows, rw)
		}
		rw := row{scenario: sr.sc.name, title: sr.sc.title, metric: sigtermMetric, kind: kindSeconds}
		for _, c := range sr.cells {
			var v *float64
			note := ""
			switch {
			case c.skipped:
				note = "skipped"
			case !c.sigterm.sent:
				note = "not running"
			case c.sigterm.err != nil && c.sigterm.took >= stopTimeout:
				note = "**killed**"
			case c.sigterm.err != nil:
				note = "**exit status**"
			default:
				took := c.sigterm.took.Seconds()
				v = &took
			}
			rw.values = append(rw.values, v)
			rw.notes = append(rw.notes, note)
		}
		rows = append(rows, rw)
	}
	return rows
}

// ratio returns values[i]/values[j], or nil when either is missing or the
// divisor is zero.
func ratio(values []*float64, i, j int) *float64 {
	if len(values) <= max(i, j) || values[i] == nil || values[j] == nil || *values[j] == 0 {
		return nil
	}
	q := *values[i] / *values[j]
	return &q
}

// writeMarkdown prints the header lines, the table and the errors.
func (r report) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	m := r.machine
	fmt.Fprintf(&b, "MQTT broker benchmark, %s · %s, %d cores · %s, Linux %s · %s · %s per scenario, %d-byte payloads, loopback\n\n",
		m.Date.Format("2006-01-02 15:04 MST"), m.CPU, m.Cores, m.OSArch, m.Kernel, m.Go, m.Duration, payloadSize)
	for i, bs := range r.brokers {
		fmt.Fprintf(&b, "- %s: %s\n", bs.label, r.versions[i])
	}
	if others := r.maxOthersCPU(); others > quietThreshold {
		fmt.Fprintf(&b, "- **noisy**: other processes used up to %.0f %% of a core during a run; rerun on a quiet machine\n", others)
	}
	b.WriteString("\nWhat the numbers mean (each broker freshly started per scenario, stopped with SIGTERM after it; ratios are the first broker's value over the other's, so for rates above 1 is better and for times, costs and memory below 1 is better):\n\n")
	for _, sr := range r.results {
		fmt.Fprintf(&b, "- %s: %s\n", sr.sc.title, sr.sc.about)
	}
	fmt.Fprintf(&b, "- %s: seconds from SIGTERM to exit; **killed**: still running %s after it.\n", sigtermMetric, stopTimeout)
	b.WriteString("\n")
	fmt.Fprintf(&b, "| scenario | metric | %s | %s | %s | %s/%s | %s/%s |\n", r.brokers[0].label, r.brokers[1].label, r.brokers[2].label,
		r.brokers[0].label, r.brokers[1].label, r.brokers[0].label, r.brokers[2].label)
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	last := ""
	for _, rw := range r.rows() {
		title := rw.title
		if title == last {
			title = ""
		}
		last = rw.title
		fmt.Fprintf(&b, "| %s | %s |", title, rw.metric)
		for i, v := range rw.values {
			if v == nil {
				fmt.Fprintf(&b, " %s |", rw.notes[i])
				continue
			}
			fmt.Fprintf(&b, " %s |", formatValue(rw.kind, *v))
		}
		for _, j := range []int{1, 2} {
			if q := ratio(rw.values, 0, j); q != nil {
				fmt.Fprintf(&b, " %.2f |", *q)
			} else {
				b.WriteString(" – |")
			}
		}
		b.WriteString("\n")
	}
	if targets := r.targets(); len(targets) > 0 {
		fmt.Fprintf(&b, "\nIssue 18 targets (%s):\n\n", r.brokers[0].label)
		for _, t := range targets {
			verdict := "PASS"
			switch {
			case t.na:
				verdict = "n/a"
			case !t.ok:
				verdict = "**FAIL**"
			}
			fmt.Fprintf(&b, "- %s %s: %s\n", verdict, t.name, t.detail)
		}
	}
	var errs []string
	for _, sr := range r.results {
		for i, c := range sr.cells {
			if c.err != nil {
				errs = append(errs, fmt.Sprintf("- %s on %s: %v", sr.sc.name, r.brokers[i].label, oneLine(c.err.Error())))
			}
		}
	}
	if len(errs) > 0 {
		b.WriteString("\nErrors:\n\n" + strings.Join(errs, "\n") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// maxOthersCPU is the most CPU other processes used during any one run,
// in percent of one core.
func (r report) maxOthersCPU() float64 {
	var m float64
	for _, sr := range r.results {
		for _, c := range sr.cells {
			m = max(m, c.othersCPU)
		}
	}
	return m
}

// formatValue prints v in the unit of its kind.
func formatValue(kind metricKind, v float64) string {
	switch kind {
	case kindRate:
		return groupThousands(int64(math.Round(v)))
	case kindPercent:
		return strconv.FormatFloat(v, 'f', 2, 64) + " %"
	case kindMillis:
		if v < 10 {
			return strconv.FormatFloat(v, 'f', 3, 64)
		}
		return strconv.FormatFloat(v, 'f', 1, 64)
	case kindCPU:
		return strconv.FormatFloat(v, 'f', 1, 64) + " %"
	case kindKiB:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case kindMicros, kindMiB:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case kindSeconds, kindRatio:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatInt(int64(math.Round(v)), 10)
	}
}

// groupThousands prints n with commas between groups of three digits.
func groupThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// oneLine keeps the first line of a (possibly multi-line) error message.
func oneLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// jsonReport is the -json file's shape.
type jsonReport struct {
	Machine machineInfo `json:"machine"`
	// MaxOthersCPU is the most CPU (percent of one core) other processes
	// used during any one run: well above 0, the numbers are noisy.
	MaxOthersCPU float64      `json:"max_others_cpu_percent"`
	Brokers      []jsonBroker `json:"brokers"`
	Results      []jsonRow    `json:"results"`
}

// jsonBroker names one compared broker.
type jsonBroker struct {
	Label   string `json:"label"`
	Kind    string `json:"kind"`
	Version string `json:"version"`
}

// jsonRow is one metric of one scenario; Values and Errors follow the
// order of Brokers.
type jsonRow struct {
	Scenario string     `json:"scenario"`
	Title    string     `json:"title"`
	Metric   string     `json:"metric"`
	Values   []*float64 `json:"values"`
	// Ratio is the first broker's value over mosquitto's, RatioUpstream
	// over upstream mochi's.
	Ratio         *float64 `json:"ratio"`
	RatioUpstream *float64 `json:"ratio_upstream"`
	Errors        []string `json:"errors,omitempty"`
}

// writeJSON writes the report as JSON to path.
func (r report) writeJSON(path string) error {
	out := jsonReport{Machine: r.machine, MaxOthersCPU: math.Round(r.maxOthersCPU())}
	for i, bs := range r.brokers {
		out.Brokers = append(out.Brokers, jsonBroker{Label: bs.label, Kind: bs.kind, Version: r.versions[i]})
	}
	errByScenario := map[string][]string{}
	for _, sr := range r.results {
		var errs []string
		for _, c := range sr.cells {
			switch {
			case c.err != nil:
				errs = append(errs, c.err.Error())
			case c.skipped:
				errs = append(errs, "skipped")
			default:
				errs = append(errs, "")
			}
		}
		errByScenario[sr.sc.name] = errs
	}
	for _, rw := range r.rows() {
		jr := jsonRow{Scenario: rw.scenario, Title: rw.title, Metric: rw.metric, Values: rw.values, Ratio: ratio(rw.values, 0, 1), RatioUpstream: ratio(rw.values, 0, 2)}
		for _, e := range errByScenario[rw.scenario] {
			if e != "" {
				jr.Errors = errByScenario[rw.scenario]
				break
			}
		}
		out.Results = append(out.Results, jr)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write JSON report: %w", err)
	}
	return nil
}

package web

import "github.com/prometheus/client_golang/prometheus"

// webMetrics are the web server's own metrics, served on /metrics beside
// the gateway's registry.
type webMetrics struct {
	reg            *prometheus.Registry
	requests       prometheus.Counter
	loginFailures  prometheus.Counter
	passwordChecks prometheus.Counter
	loginRefused   *prometheus.CounterVec
	liveStreams    prometheus.Gauge
	liveDropped    prometheus.Counter
	connections    prometheus.Gauge
	connLimit      prometheus.Gauge
	scopeDenied    prometheus.Counter
}

func newWebMetrics() *webMetrics {
	m := &webMetrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldgate_web_requests_total", Help: "HTTP requests served by the local page and API.",
		}),
		loginFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldgate_web_login_failures_total", Help: "Wrong admin passwords.",
		}),
		passwordChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldgate_web_password_checks_total", Help: "Admin password checks run (bcrypt), right or wrong.",
		}),
		loginRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldgate_web_login_refused_total",
			Help: "Logins refused before the password was checked: reason wait (the address must wait after wrong passwords) or busy (web.login_concurrency checks already running).",
		}, []string{"reason"}),
		liveStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fieldgate_web_live_streams", Help: "Open live message views.",
		}),
		liveDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldgate_web_live_dropped_total", Help: "Messages not shown in a live view because it was too slow or too busy.",
		}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fieldgate_web_connections", Help: "Open connections to the page and API.",
		}),
		connLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fieldgate_web_connections_max", Help: "Open connections allowed to the page and API (web.max_connections, at most a quarter of the open file limit).",
		}),
		scopeDenied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldgate_web_token_scope_denied_total", Help: "Requests refused (403) because the bearer token's scope does not allow them.",
		}),
	}
	m.loginRefused.WithLabelValues("wait")
	m.loginRefused.WithLabelValues("busy")
	m.reg.MustRegister(m.requests, m.loginFailures, m.passwordChecks, m.loginRefused, m.liveStreams, m.liveDropped,
		m.connections, m.connLimit, m.scopeDenied)
	return m
}

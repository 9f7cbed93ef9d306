package web

import "github.com/prometheus/client_golang/prometheus"

// webMetrics are the web server's own metrics, served on /metrics beside
// the gateway's registry.
type webMetrics struct {
	reg           *prometheus.Registry
	requests      prometheus.Counter
	loginFailures prometheus.Counter
	liveStreams   prometheus.Gauge
	liveDropped   prometheus.Counter
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
		liveStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fieldgate_web_live_streams", Help: "Open live message views.",
		}),
		liveDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldgate_web_live_dropped_total", Help: "Messages not shown in a live view because it was too slow or too busy.",
		}),
	}
	m.reg.MustRegister(m.requests, m.loginFailures, m.liveStreams, m.liveDropped)
	return m
}

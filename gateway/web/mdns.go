package web

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
)

// mDNS/DNS-SD advertisement of the page (web.mdns), so that a technician on
// the gateway's LAN finds it as fieldgate-<id>.local, or in any DNS-SD
// browser under _http._tcp (_https._tcp with TLS) and _fieldgate._tcp.
// The responder is hashicorp/mdns; the records are built per query from
// the current gateway id and interface addresses (cached briefly), so a
// renamed gateway or a new DHCP lease is advertised without a restart.

// mdnsRefresh is how long the advertised addresses and id are reused.
const mdnsRefresh = 10 * time.Second

// MDNSServices are the DNS-SD service types the page is advertised under
// (over HTTPS the first is _https._tcp).
var MDNSServices = []string{"_http._tcp", "_fieldgate._tcp"}

// mdnsLabel turns a gateway id into a DNS label: lower case letters,
// digits and '-', at most 63 bytes, prefixed with "fieldgate-".
func mdnsLabel(id string) string {
	var b strings.Builder
	b.WriteString("fieldgate-")
	for _, r := range strings.ToLower(id) {
		if b.Len() >= 63 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return strings.TrimRight(b.String(), "-")
}

// mdnsZone answers mDNS questions for the page's services (it implements
// mdns.Zone).
type mdnsZone struct {
	port    int
	tls     bool
	version string
	id      func() string    // the current gateway id
	ips     func() []net.IP  // the addresses to advertise
	now     func() time.Time // clock for the cache
	log     *slog.Logger
	mu      sync.Mutex
	built   time.Time
	records []*mdns.MDNSService // one per service type
}

// Records returns the answers to q from every advertised service, each
// record once (both services answer for the host's address).
func (z *mdnsZone) Records(q dns.Question) []dns.RR {
	var out []dns.RR
	seen := map[string]bool{}
	for _, s := range z.services() {
		for _, rr := range s.Records(q) {
			if k := rr.String(); !seen[k] {
				seen[k] = true
				out = append(out, rr)
			}
		}
	}
	return out
}

// services returns the advertised services, rebuilt when older than
// mdnsRefresh.
func (z *mdnsZone) services() []*mdns.MDNSService {
	z.mu.Lock()
	defer z.mu.Unlock()
	now := z.now()
	if !z.built.IsZero() && now.Sub(z.built) < mdnsRefresh {
		return z.records
	}
	id := z.id()
	label := mdnsLabel(id)
	ips := z.ips()
	txt := []string{"path=/", "api=/api/v1/", "id=" + id, "version=" + z.version}
	var out []*mdns.MDNSService
	for _, svc := range MDNSServices {
		if svc == "_http._tcp" && z.tls {
			svc = "_https._tcp"
		}
		s, err := mdns.NewMDNSService(label, svc, "local.", label+".local.", z.port, ips, txt)
		if err != nil {
			// Only an empty address list can fail here: nothing to answer.
			z.log.Debug("mdns: nothing to advertise", "service", svc, "error", err)
			continue
		}
		out = append(out, s)
	}
	z.records, z.built = out, now
	return out
}

// hostIPs lists the addresses of the interfaces that are up and can
// multicast, or only host when the page listens on one address.
func hostIPs(host string) func() []net.IP {
	return func() []net.IP {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			return []net.IP{ip}
		}
		ifaces, err := net.Interfaces()
		if err != nil {
			return nil
		}
		var out []net.IP
		for _, ifc := range ifaces {
			if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagMulticast == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			addrs, err := ifc.Addrs()
			if err != nil {
				continue
			}
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
					out = append(out, n.IP)
				}
			}
		}
		return out
	}
}

// advertise answers mDNS queries for the page until ctx is done. A host
// where no multicast socket can be opened logs a warning and advertises
// nothing: the page itself still serves.
func (s *Server) advertise(ctx context.Context) {
	host, portStr, _ := net.SplitHostPort(s.ln.Addr().String())
	port, _ := strconv.Atoi(portStr)
	id := s.opts.GatewayID
	if id == nil {
		id = func() string { return "fieldgate" }
	}
	zone := &mdnsZone{
		port: port, tls: s.cfg.TLS.Cert != "", version: s.opts.Version,
		id: id, ips: hostIPs(host), now: s.now, log: s.log,
	}
	srv, err := mdns.NewServer(&mdns.Config{
		Zone: zone,
		// The library logs malformed packets from the LAN: keep them at
		// debug level.
		Logger: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	})
	if err != nil {
		s.log.Warn("web: mDNS advertisement off: no multicast socket", "error", err)
		return
	}
	s.log.Info("web: advertised over mDNS", "host", mdnsLabel(id())+".local", "services", strings.Join(MDNSServices, ","), "port", port)
	<-ctx.Done()
	if err := srv.Shutdown(); err != nil {
		s.log.Warn("web: mDNS shutdown", "error", err)
	}
}

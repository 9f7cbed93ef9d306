package web

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
)

func TestMDNSLabel(t *testing.T) {
	for _, c := range []struct{ id, want string }{
		{"plant-7", "fieldgate-plant-7"},
		{"Plant_7.line2", "fieldgate-plant-7-line2"},
		{"fg-02fc00000001", "fieldgate-fg-02fc00000001"},
		{"", "fieldgate"},
		{"é", "fieldgate"},
		{strings.Repeat("a", 80), "fieldgate-" + strings.Repeat("a", 53)},
	} {
		if got := mdnsLabel(c.id); got != c.want {
			t.Errorf("mdnsLabel(%q) = %q, want %q", c.id, got, c.want)
		}
	}
}

// TestMDNSZoneRecords asks the zone what a DNS-SD browser asks: the
// service's instances (PTR with SRV, A and TXT), and the host's address.
func TestMDNSZoneRecords(t *testing.T) {
	id := "Plant_7"
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	z := &mdnsZone{port: 8080, version: "1.2.3", id: func() string { return id },
		ips: func() []net.IP { return []net.IP{net.IPv4(192, 0, 2, 10)} },
		now: func() time.Time { return now }, log: slog.New(slog.DiscardHandler)}

	for _, svc := range []string{"_http._tcp", "_fieldgate._tcp"} {
		rrs := z.Records(dns.Question{Name: svc + ".local.", Qtype: dns.TypePTR, Qclass: dns.ClassINET})
		var got []string
		for _, rr := range rrs {
			switch r := rr.(type) {
			case *dns.PTR:
				got = append(got, "PTR "+r.Ptr)
			case *dns.SRV:
				got = append(got, "SRV "+r.Target+" "+itoa(int(r.Port)))
			case *dns.A:
				got = append(got, "A "+r.A.String())
			case *dns.TXT:
				got = append(got, "TXT "+strings.Join(r.Txt, " "))
			}
		}
		want := []string{
			"PTR fieldgate-plant-7." + svc + ".local.",
			"SRV fieldgate-plant-7.local. 8080",
			"A 192.0.2.10",
			"TXT path=/ api=/api/v1/ id=Plant_7 version=1.2.3",
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s PTR: got\n%s\nwant\n%s", svc, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	a := z.Records(dns.Question{Name: "fieldgate-plant-7.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	if len(a) == 0 || a[0].(*dns.A).A.String() != "192.0.2.10" {
		t.Errorf("A fieldgate-plant-7.local.: %v", a)
	}
	if rrs := z.Records(dns.Question{Name: "other.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET}); len(rrs) != 0 {
		t.Errorf("answered for another host: %v", rrs)
	}

	// A renamed gateway is advertised under its new name once the cache
	// is older than mdnsRefresh.
	id = "plant-8"
	if rrs := z.Records(dns.Question{Name: "fieldgate-plant-8.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET}); len(rrs) != 0 {
		t.Errorf("renamed before the refresh: %v", rrs)
	}
	now = now.Add(mdnsRefresh)
	if rrs := z.Records(dns.Question{Name: "fieldgate-plant-8.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET}); len(rrs) != 1 {
		t.Errorf("not renamed after the refresh: %v", rrs)
	}

	// Over HTTPS the page is _https._tcp, not _http._tcp.
	z = &mdnsZone{port: 443, tls: true, id: func() string { return "x" },
		ips: func() []net.IP { return []net.IP{net.IPv4(192, 0, 2, 10)} }, now: time.Now, log: slog.New(slog.DiscardHandler)}
	if rrs := z.Records(dns.Question{Name: "_http._tcp.local.", Qtype: dns.TypePTR, Qclass: dns.ClassINET}); len(rrs) != 0 {
		t.Errorf("HTTPS page advertised as _http._tcp: %v", rrs)
	}
	if rrs := z.Records(dns.Question{Name: "_https._tcp.local.", Qtype: dns.TypePTR, Qclass: dns.ClassINET}); len(rrs) == 0 {
		t.Error("HTTPS page not advertised as _https._tcp")
	}
	// No address: nothing to answer, no panic.
	z = &mdnsZone{port: 80, id: func() string { return "x" }, ips: func() []net.IP { return nil }, now: time.Now, log: slog.New(slog.DiscardHandler)}
	if rrs := z.Records(dns.Question{Name: "_fieldgate._tcp.local.", Qtype: dns.TypePTR, Qclass: dns.ClassINET}); len(rrs) != 0 {
		t.Errorf("answered without an address: %v", rrs)
	}
}

// lookup queries service over mDNS, as a technician's laptop does, and
// returns what answered within timeout.
func lookup(ctx context.Context, service string, timeout time.Duration) ([]*mdns.ServiceEntry, error) {
	entries := make(chan *mdns.ServiceEntry, 32)
	params := mdns.DefaultParams(service)
	params.Entries = entries
	params.Timeout = timeout
	params.DisableIPv6 = true
	params.Logger = log.New(io.Discard, "", 0)
	errc := make(chan error, 1)
	go func() { errc <- mdns.QueryContext(ctx, params); close(entries) }()
	var out []*mdns.ServiceEntry
	for e := range entries {
		out = append(out, e)
	}
	return out, <-errc
}

// multicastWorks reports whether a datagram sent to the mDNS group comes
// back to a socket that joined it on this host (not in every sandbox).
func multicastWorks(t *testing.T) error {
	group := &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}
	l, err := net.ListenMulticastUDP("udp4", nil, group)
	if err != nil {
		return err
	}
	defer l.Close()
	c, err := net.DialUDP("udp4", nil, group)
	if err != nil {
		return err
	}
	defer c.Close()
	// Not a DNS message: responders ignore it.
	probe := []byte("fieldgate multicast probe " + t.Name())
	buf := make([]byte, 1500)
	for range 3 {
		if _, err := c.Write(probe); err != nil {
			return err
		}
		l.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, _, err := l.ReadFromUDP(buf)
			if err != nil {
				break
			}
			if string(buf[:n]) == string(probe) {
				return nil
			}
		}
	}
	return errors.New("a datagram sent to 224.0.0.251:5353 did not come back")
}

// TestMDNSAdvertise runs the page with web.mdns on and finds it with
// hashicorp/mdns's client, under both services. Skipped where multicast
// does not loop back on this host.
func TestMDNSAdvertise(t *testing.T) {
	if err := multicastWorks(t); err != nil {
		t.Skipf("multicast impossible here, mDNS not testable: %v", err)
	}
	cfg := testConfig()
	cfg.MDNS = true
	b := newFakeBackend()
	h := &harness{t: t, b: b, dataDir: t.TempDir()}
	id := "mdns-test-" + itoa(time.Now().Nanosecond())
	srv, err := New(cfg, b, Options{DataDir: h.dataDir, Version: "test", GatewayID: func() string { return id }, Logger: slogTo(b.ring)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	port := srv.Addr().(*net.TCPAddr).Port
	instance := mdnsLabel(id)
	for _, svc := range MDNSServices {
		var found *mdns.ServiceEntry
		// The responder starts with Run: ask until it answers.
		for attempt := 0; found == nil && attempt < 5; attempt++ {
			entries, err := lookup(context.Background(), svc, 500*time.Millisecond)
			if err != nil {
				t.Fatalf("query %s: %v", svc, err)
			}
			for _, e := range entries {
				if strings.HasPrefix(e.Name, instance+".") {
					found = e
				}
			}
		}
		if found == nil {
			t.Fatalf("%s: %s not found over mDNS", svc, instance)
		}
		if found.Port != port || found.Host != instance+".local." || !found.AddrV4.Equal(net.IPv4(127, 0, 0, 1)) {
			t.Errorf("%s: got host %s addr %v port %d, want %s.local. 127.0.0.1 %d", svc, found.Host, found.AddrV4, found.Port, instance, port)
		}
		if !slices.Contains(found.InfoFields, "id="+id) {
			t.Errorf("%s: TXT %v lacks id=%s", svc, found.InfoFields, id)
		}
	}
}

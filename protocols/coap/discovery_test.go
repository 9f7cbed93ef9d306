package coap

import (
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Issue 12, item 6: GET /.well-known/core answered 4.04 and logged a WARN.

// wantCore is the whole /.well-known/core of the gateway.
const wantCore = `</ps>;rt="core.ps";title="Topics: POST or PUT /ps/{topic} publishes; GET /ps/{filter} reads the retained message or with Observe subscribes",` +
	`</mqtt>;rt="core.ps";title="Topics (EMQX 4 paths): PUT or POST /mqtt/{topic} publishes; GET /mqtt/{filter} reads or with Observe subscribes",` +
	`</mqtt/connection>;rt="mqtt.connection";ct=0;title="Connection: POST opens (the answer is its token); PUT keeps it alive; DELETE closes it"`

// syncLog collects a logger's output.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startLoggedEnv is startEnv with the gateway's and broker's logs at WARN
// and above collected in logs.
func startLoggedEnv(t *testing.T, logs *syncLog) *env {
	t.Helper()
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return startEnvLog(t, log, nil, nil)
}

func TestWellKnownCore(t *testing.T) {
	var logs syncLog
	e := startLoggedEnv(t, &logs)

	t.Run("raw request", func(t *testing.T) {
		p := newRawPeer(t, e.addr)
		req := message.Message{Code: codes.GET, Token: []byte{0xC0, 0xDE}, Type: message.Confirmable, MessageID: 0x1234}
		req.Options = req.Options.Add(message.Option{ID: message.URIPath, Value: []byte(".well-known")})
		req.Options = req.Options.Add(message.Option{ID: message.URIPath, Value: []byte("core")})
		p.send(req)
		resp := p.read()
		if resp.Type != message.Acknowledgement || resp.MessageID != 0x1234 || string(resp.Token) != "\xC0\xDE" {
			t.Errorf("response type %v id %#x token % x, want a piggybacked ACK 0x1234 with token c0 de", resp.Type, resp.MessageID, resp.Token)
		}
		if resp.Code != codes.Content {
			t.Fatalf("code %v, want 2.05 Content; payload %q", resp.Code, resp.Payload)
		}
		if cf, err := resp.Options.ContentFormat(); err != nil || cf != message.AppLinkFormat {
			t.Errorf("content format %v (%v), want 40 application/link-format", cf, err)
		}
		if string(resp.Payload) != wantCore {
			t.Errorf("payload\n%s\nwant\n%s", resp.Payload, wantCore)
		}
	})

	t.Run("filters", func(t *testing.T) {
		cc := e.dial()
		for _, tc := range []struct {
			filter string
			want   []string // hrefs
		}{
			{"rt=core.ps", []string{"/ps", "/mqtt"}},
			{"rt=mqtt.*", []string{"/mqtt/connection"}},
			{"href=/mqtt*", []string{"/mqtt", "/mqtt/connection"}},
			{"href=/ps", []string{"/ps"}},
			{"ct=0", []string{"/mqtt/connection"}},
			{"title=Connection:", []string{"/mqtt/connection"}},
			{"rt=nomatch", nil},
			{"if=sensor", nil},
		} {
			code, body := do(t, cc, codes.GET, message.Confirmable, "/.well-known/core", nil, nil, query(tc.filter)...)
			if code != codes.Content {
				t.Errorf("?%s: %v %q, want 2.05", tc.filter, code, body)
				continue
			}
			var got []string
			for _, l := range strings.Split(string(body), ",") {
				if href, _, ok := strings.Cut(l, ">"); ok {
					got = append(got, strings.TrimPrefix(href, "<"))
				}
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("?%s: %q, want links %q", tc.filter, body, tc.want)
			}
		}
	})

	t.Run("only GET", func(t *testing.T) {
		cc := e.dial()
		if code, _ := do(t, cc, codes.POST, message.Confirmable, "/.well-known/core", nil, []byte("x")); code != codes.MethodNotAllowed {
			t.Errorf("POST /.well-known/core: %v, want 4.05", code)
		}
	})

	t.Run("coap-client", func(t *testing.T) {
		out := run(t, ctxT(t), coapClient(t), "-m", "get", "coap://"+e.addr+"/.well-known/core")
		if got := strings.TrimSpace(string(out)); got != wantCore {
			t.Errorf("coap-client printed\n%s\nwant\n%s", got, wantCore)
		}
	})

	// Only the POST above was refused (and logged); discovery never is.
	if errs := e.g.Stats().Errors; len(errs) != 1 || errs["4.05"] != 1 {
		t.Errorf("error responses %v, want only the POST's 4.05", errs)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") && !strings.Contains(line, "code=MethodNotAllowed") {
			t.Errorf("unexpected warning: %s", line)
		}
	}
}

func TestParseRequestDiscovery(t *testing.T) {
	for _, tc := range []struct {
		method codes.Code
		path   []string
		query  []string
		want   Request
		code   codes.Code
	}{
		{codes.GET, []string{".well-known", "core"}, nil, Request{Kind: KindDiscovery, QoS: -1}, 0},
		{codes.GET, []string{".well-known", "core"}, []string{"rt=core.ps", "ct=0"}, Request{Kind: KindDiscovery, QoS: -1, Filter: "rt=core.ps"}, 0},
		{codes.PUT, []string{".well-known", "core"}, nil, Request{}, codes.MethodNotAllowed},
		{codes.GET, []string{".well-known"}, nil, Request{}, codes.NotFound},
		{codes.GET, []string{".well-known", "core", "x"}, nil, Request{}, codes.NotFound},
	} {
		got, err := ParseRequest(tc.method, tc.path, tc.query)
		if tc.code != 0 {
			if re, ok := err.(*RequestError); !ok || re.Code != tc.code {
				t.Errorf("%v %v: %v, want code %v", tc.method, tc.path, err, tc.code)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v %v %v: %+v, %v; want %+v", tc.method, tc.path, tc.query, got, err, tc.want)
		}
	}
}

// FuzzDiscoveryFilter: any query of a discovery request parses, and the
// filter keeps a subset of the links, in order, without panicking.
func FuzzDiscoveryFilter(f *testing.F) {
	for _, s := range []string{"", "rt=core.ps", "href=/mqtt*", "obs", "ct=", "=*", "*", "title=Topics*", "rt=core.ps=x", "href"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, filter string) {
		r, err := ParseRequest(codes.GET, []string{".well-known", "core"}, []string{filter})
		if err != nil || r.Kind != KindDiscovery || r.Filter != filter {
			t.Fatalf("ParseRequest: %+v, %v", r, err)
		}
		n := 0
		for _, l := range links {
			if l.matches(filter) {
				n++
			}
		}
		if filter == "" && n != len(links) {
			t.Fatalf("empty filter kept %d of %d links", n, len(links))
		}
	})
}

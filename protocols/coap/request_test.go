package coap

import (
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		method codes.Code
		path   string
		query  string
		want   Request
		code   codes.Code // 0: no error
	}{
		{codes.POST, "ps/a/b", "", Request{Kind: KindPublish, Topic: "a/b", QoS: -1}, 0},
		{codes.PUT, "mqtt/a", "c=d1&u=bob&p=pw&t=tok&q=2&r=1&expiry=30", Request{Kind: KindPublish, Topic: "a", ClientID: "d1", Username: "bob", Password: "pw", Token: "tok", QoS: 2, Retain: true, HasRetain: true, Expiry: 30 * time.Second, HasExpiry: true}, 0},
		{codes.GET, "ps/a/+/%23", "", Request{Kind: KindGet, Topic: "a/+/#", QoS: -1}, 0},
		{codes.POST, "mqtt/connection", "clientid=x&password=a%26b", Request{Kind: KindConnect, ClientID: "x", Password: "a&b", QoS: -1}, 0},
		{codes.PUT, "mqtt/connection", "clientid=x&token=t", Request{Kind: KindHeartbeat, ClientID: "x", Token: "t", QoS: -1}, 0},
		{codes.DELETE, "mqtt/connection", "clientid=x", Request{}, codes.BadRequest},
		{codes.GET, "mqtt/connection", "", Request{}, codes.MethodNotAllowed},
		{codes.POST, "ps", "", Request{}, codes.BadRequest},
		{codes.POST, "", "", Request{}, codes.NotFound},
		{codes.POST, "other/x", "", Request{}, codes.NotFound},
		{codes.POST, "ps/a/%zz", "", Request{}, codes.BadRequest},
		{codes.POST, "ps/a", "q=0&qos=1", Request{}, codes.BadRequest},
		{codes.POST, "ps/a", "expiry=-1", Request{}, codes.BadRequest},
		{codes.POST, "ps/a/#", "", Request{}, codes.BadRequest},
		{codes.GET, "ps/#/a", "", Request{}, codes.BadRequest},
		{codes.POST, "ps/a%00", "", Request{}, codes.BadRequest},
		// $SYS is the broker's: publishing there is refused at once (issue 17).
		{codes.POST, "ps/$SYS/x", "", Request{}, codes.Forbidden},
		{codes.PUT, "mqtt/%24sys/broker/x", "q=1", Request{}, codes.Forbidden},
		{codes.POST, "ps/$SYSTEM", "", Request{}, codes.Forbidden},
		{codes.GET, "ps/$SYS/#", "", Request{Kind: KindGet, Topic: "$SYS/#", QoS: -1}, 0},
		{codes.POST, "ps/$delayed/5/a", "", Request{Kind: KindPublish, Topic: "$delayed/5/a", QoS: -1}, 0},
	}
	for _, tc := range tests {
		var path, query []string
		if tc.path != "" {
			path = strings.Split(tc.path, "/")
		}
		if tc.query != "" {
			query = strings.Split(tc.query, "&")
		}
		got, err := ParseRequest(tc.method, path, query)
		if tc.code != 0 {
			re, ok := err.(*RequestError)
			if !ok || re.Code != tc.code {
				t.Errorf("%v %s?%s: error %v, want code %v", tc.method, tc.path, tc.query, err, tc.code)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v %s?%s:\n got %+v, %v\nwant %+v", tc.method, tc.path, tc.query, got, err, tc.want)
		}
	}
}

// FuzzParseRequest feeds arbitrary paths and queries (segments separated by
// '/', query options by '&') to the parser: it must never panic, and what
// it accepts must be a valid topic.
func FuzzParseRequest(f *testing.F) {
	f.Add(uint8(2), "ps/a/b", "qos=1&retain=true")
	f.Add(uint8(1), "ps/a/+/#", "c=dev&u=alice&p=x")
	f.Add(uint8(3), "mqtt/connection", "clientid=a&token=b")
	f.Add(uint8(4), "mqtt/connection", "clientid=a&token=b")
	f.Add(uint8(3), "mqtt/t%2Fx", "expiry=4294967295")
	f.Add(uint8(2), "ps/%ff%fe", "q=%32")
	f.Add(uint8(2), "ps/$SYS/x", "q=1")
	f.Add(uint8(3), "mqtt/%24sYs/x", "")
	f.Fuzz(func(t *testing.T, method uint8, path, query string) {
		var segs, qs []string
		if path != "" {
			segs = strings.Split(path, "/")
		}
		if query != "" {
			qs = strings.Split(query, "&")
		}
		r, err := ParseRequest(codes.Code(method), segs, qs)
		if err != nil {
			if _, ok := err.(*RequestError); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		switch r.Kind {
		case KindPublish:
			if checkTopic(r.Topic, false) != nil {
				t.Fatalf("accepted bad topic %q", r.Topic)
			}
		case KindGet:
			if checkTopic(r.Topic, true) != nil {
				t.Fatalf("accepted bad filter %q", r.Topic)
			}
		}
		if r.QoS < -1 || r.QoS > 2 {
			t.Fatalf("qos %d", r.QoS)
		}
	})
}

package coap

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// link is one resource in the gateway's /.well-known/core: its path and
// its target attributes (RFC 6690 §3), in the order they are written. A
// value of "" writes a flag attribute (obs); others are written quoted.
type link struct {
	href  string
	attrs [][2]string
}

// links are the resources the gateway serves. rt="core.ps" is the resource
// type of a publish-subscribe broker's topic collection in the CoAP
// pub/sub drafts (draft-ietf-core-coap-pubsub) that EMQX's /ps follows.
// The topic resources have no ct: a GET answers the retained message in
// the content format it was published with. /mqtt/connection answers in
// text/plain (ct=0: the token, or a diagnostic).
var links = []link{
	{href: "/ps", attrs: [][2]string{
		{"rt", "core.ps"},
		{"title", "Topics: POST or PUT /ps/{topic} publishes; GET /ps/{filter} reads the retained message or with Observe subscribes"},
	}},
	{href: "/mqtt", attrs: [][2]string{
		{"rt", "core.ps"},
		{"title", "Topics (EMQX 4 paths): PUT or POST /mqtt/{topic} publishes; GET /mqtt/{filter} reads or with Observe subscribes"},
	}},
	{href: "/mqtt/connection", attrs: [][2]string{
		{"rt", "mqtt.connection"},
		{"ct", "0"},
		{"title", "Connection: POST opens (the answer is its token); PUT keeps it alive; DELETE closes it"},
	}},
}

// discover answers GET /.well-known/core with the gateway's resources in
// CoRE Link Format (content format 40), keeping those that match the
// request's filter. When none matches the payload is empty, as libcoap
// answers.
func (x *exchange) discover() error {
	var b bytes.Buffer
	for _, l := range links {
		if !l.matches(x.req.Filter) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		l.writeTo(&b)
	}
	if err := x.w.SetResponse(codes.Content, message.AppLinkFormat, bytes.NewReader(b.Bytes())); err != nil {
		return fmt.Errorf("coap: set response: %w", err)
	}
	return nil
}

// writeTo appends the link in link-format: </href>;name="value";flag.
func (l link) writeTo(b *bytes.Buffer) {
	b.WriteString("<" + l.href + ">")
	for _, a := range l.attrs {
		b.WriteString(";" + a[0])
		if a[1] == "" {
			continue
		}
		if a[0] == "ct" {
			b.WriteString("=" + a[1]) // a number, unquoted as libcoap writes it
			continue
		}
		b.WriteString(`="` + a[1] + `"`)
	}
}

// matches applies an RFC 6690 §4.1 query filter, name=pattern: the link
// matches when its href (name "href") or one of the space-separated values
// of its attribute name equals pattern, or starts with it when pattern ends
// in "*". A bare name matches links that have that attribute. An empty
// filter matches every link.
func (l link) matches(filter string) bool {
	if filter == "" {
		return true
	}
	name, pattern, hasValue := strings.Cut(filter, "=")
	prefix, wildcard := strings.CutSuffix(pattern, "*")
	match := func(v string) bool {
		if wildcard {
			return strings.HasPrefix(v, prefix)
		}
		return v == pattern
	}
	if name == "href" {
		return hasValue && match(l.href)
	}
	for _, a := range l.attrs {
		if a[0] != name {
			continue
		}
		if !hasValue {
			return true
		}
		for _, v := range strings.Fields(a[1]) {
			if match(v) {
				return true
			}
		}
		if a[1] == "" && match("") {
			return true
		}
	}
	return false
}

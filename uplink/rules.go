package uplink

import (
	"strings"
)

// expand fills a topic template: {gateway_id}, {topic} (the whole source
// topic) and {suffix} (the part of the topic matched by the filter's
// wildcards, i.e. after the filter's literal prefix). An empty level that
// results (a template "a/{suffix}" with an empty suffix) is trimmed.
func expand(tmpl, gatewayID, filter, topic string) string {
	if !strings.Contains(tmpl, "{") {
		return tmpl
	}
	r := strings.NewReplacer("{gateway_id}", gatewayID, "{topic}", topic, "{suffix}", suffix(filter, topic))
	out := r.Replace(tmpl)
	for strings.Contains(out, "//") {
		out = strings.ReplaceAll(out, "//", "/")
	}
	return strings.TrimSuffix(out, "/")
}

// suffix returns what of topic lies past the literal levels of filter
// ("sensors/+/temp" and "sensors/a/temp" give "a/temp"; "sensors/#" and
// "sensors/a/b" give "a/b"). A filter without wildcards gives the last level.
func suffix(filter, topic string) string {
	fl := strings.Split(filter, "/")
	tl := strings.Split(topic, "/")
	i := 0
	for i < len(fl) && i < len(tl) && fl[i] != "+" && fl[i] != "#" {
		i++
	}
	if i == len(fl) { // no wildcard
		return tl[len(tl)-1]
	}
	return strings.Join(tl[i:], "/")
}

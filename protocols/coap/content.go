package coap

import (
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
)

// contentTypes maps CoAP Content-Formats (RFC 7252 §12.3 registry) to the
// MQTT 5 content type strings they stand for.
var contentTypes = map[message.MediaType]string{
	message.TextPlain:         "text/plain;charset=utf-8",
	message.AppLinkFormat:     "application/link-format",
	message.AppXML:            "application/xml",
	message.AppOctets:         "application/octet-stream",
	message.AppExi:            "application/exi",
	message.AppJSON:           "application/json",
	message.AppJSONPatch:      "application/json-patch+json",
	message.AppJSONMergePatch: "application/merge-patch+json",
	message.AppCBOR:           "application/cbor",
	message.AppCWT:            "application/cwt",
	message.AppSenmlJSON:      "application/senml+json",
	message.AppSenmlCbor:      "application/senml+cbor",
	message.AppLwm2mTLV:       "application/vnd.oma.lwm2m+tlv",
	message.AppLwm2mJSON:      "application/vnd.oma.lwm2m+json",
	message.AppLwm2mCbor:      "application/vnd.oma.lwm2m+cbor",
}

// contentTypeOf returns the MQTT content type of a CoAP Content-Format, or
// "" for one without a registered name here.
func contentTypeOf(cf message.MediaType) string {
	return contentTypes[cf]
}

// contentFormatOf returns the CoAP Content-Format of an MQTT content type.
// Parameters other than charset=utf-8 and letter case are ignored.
func contentFormatOf(ct string) (message.MediaType, bool) {
	if ct == "" {
		return 0, false
	}
	norm := strings.ToLower(strings.ReplaceAll(ct, " ", ""))
	if norm == "text/plain" {
		return message.TextPlain, true
	}
	for cf, name := range contentTypes {
		if name == norm {
			return cf, true
		}
	}
	return 0, false
}

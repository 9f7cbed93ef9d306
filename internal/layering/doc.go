// Package layering holds no code: its test encodes the drawing of the house
// (DESIGN.md) and fails when a package imports across it.
//
//	cmd → gateway → {protocols/*, southbound/*, uplink, rules, store, board} → bus, internal/*
//
// The rules, each checked on the module's real import graph (go list):
//   - a leaf (protocols/*, southbound/*, uplink, rules, store, board) never
//     imports gateway/... (the composition root) nor cmd/...;
//   - leaves do not import each other, with one written-down exception:
//     protocols/mqttsn and protocols/coap use the broker's sessions API
//     (protocols/mqtt) directly, because each of their devices is a broker
//     session and an interface in between would only mirror that API.
//     protocols/mqtt persists through mqtt.Store, a small interface it
//     defines; the composition root passes fieldgate's store through an
//     adapter (gateway/brokerstore.go), so protocols/mqtt never imports
//     store;
//   - bus and internal/* import no leaf and not gateway;
//   - store imports no network package (no net, net/http, crypto/tls).
package layering

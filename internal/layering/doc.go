// Package layering holds no code: its test encodes the drawing of the house
// (DESIGN.md) and fails when a package imports across it.
//
//	cmd → gateway → {protocols/*, southbound/*, uplink, store, board} → bus, internal/*
//
// The rules, each checked on the module's real import graph (go list):
//   - a leaf (protocols/*, southbound/*, uplink, store, board) never
//     imports gateway/... (the composition root) nor cmd/...;
//   - leaves do not import each other, with two written-down exceptions:
//     protocols/mqttsn and protocols/coap use the broker's sessions API
//     (protocols/mqtt) directly, because each of their devices is a broker
//     session and an interface in between would only mirror that API; and
//     protocols/mqtt persists through store (the next step is a store
//     interface in protocols/mqtt that the root satisfies; until then this
//     exception is named here so it cannot grow);
//   - bus and internal/* import no leaf and not gateway;
//   - store imports no network package (no net, net/http, crypto/tls).
package layering

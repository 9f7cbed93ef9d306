// SPDX-License-Identifier: MIT

package packets

import "log/slog"

// LogValue makes a packet safe to log with log/slog: only its type, packet
// id, QoS and sizes, never its payload, credentials, topic or property
// values. fieldgate patch (no secrets in logs): upstream logged whole
// packets ("pk", pk), which printed a second CONNECT's password and every
// publish's payload as decimal bytes.
func (pk Packet) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("type", PacketNames[pk.FixedHeader.Type]),
		slog.Int("packet_id", int(pk.PacketID)),
		slog.Int("qos", int(pk.FixedHeader.Qos)),
		slog.Int("remaining_length", pk.FixedHeader.Remaining),
		slog.Int("payload_length", len(pk.Payload)),
	)
}

// LogValue makes the CONNECT parameters safe to log: the keep alive and
// whether credentials and a will are present, never the username, password
// or will payload. fieldgate patch (no secrets in logs).
func (c ConnectParams) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("keepalive", int(c.Keepalive)),
		slog.Bool("username", c.UsernameFlag),
		slog.Bool("password", c.PasswordFlag),
		slog.Bool("will", c.WillFlag),
		slog.Int("will_payload_length", len(c.WillPayload)),
	)
}

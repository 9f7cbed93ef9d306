//go:build !linux

package mqtt

import (
	"errors"
	"net"
	"syscall"
)

// unreadBytes is not known on this system: clientConn.Close lingers.
func unreadBytes(syscall.Conn) (int, error) { return 0, errors.ErrUnsupported }

// listenConfig is how the broker's TCP listeners open their socket: TCP
// keep-alive is set on each accepted connection.
func listenConfig() net.ListenConfig {
	return net.ListenConfig{KeepAliveConfig: tcpKeepAlive}
}

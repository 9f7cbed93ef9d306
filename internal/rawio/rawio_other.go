//go:build !linux

package rawio

import "net"

func wrapTCP(tc *net.TCPConn) net.Conn { return tc }

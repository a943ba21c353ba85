package bench

import (
	"net"
	"sync/atomic"
)

// countingConn counts the bytes read from and written to a connection, as
// they cross the socket: WebSocket framing and compressed payloads included.
type countingConn struct {
	net.Conn
	read, written *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

package bench

import (
	"net"
	"sync/atomic"
	"time"
)

// countingConn counts the bytes read from and written to a connection, as
// they cross the socket: WebSocket framing and compressed payloads included.
// It also stamps each read with the time the bytes reached user space, in
// Unix µs, into *lastRead: the receive time of the frames parsed from them
// (one clock read per syscall instead of one per frame). Reads happen on
// the connection's read loop only, which also reads lastRead.
type countingConn struct {
	net.Conn
	read, written *atomic.Int64
	lastRead      *int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		*c.lastRead = time.Now().UnixMicro()
	}
	c.read.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

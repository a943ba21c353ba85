package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Ceiling defaults.
const (
	maxCeilingBatchBytes = 1 << 20
	ceilingReadBuf       = 64 << 10
	ceilingWarmup        = 500 * time.Millisecond
)

// CeilingServer is the physical ceiling's server side: for each connection
// it writes, as fast as one core lets it, a batch of fixed-size messages per
// write call, where the client's first line ("<size> <batch>\n") sets the
// message size and the number of messages per write. It does nothing else:
// no encoding, no framing, no queue, so what it reaches is what the kernel's
// loopback allows from one core for that write size.
type CeilingServer struct {
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// ServeCeiling starts serving on ln until Close.
func ServeCeiling(ln net.Listener) *CeilingServer {
	s := &CeilingServer{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Go(s.accept)
	return s
}

func (s *CeilingServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Go(func() {
			s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		})
		s.mu.Unlock()
	}
}

func (s *CeilingServer) serve(c net.Conn) {
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	size, batch, err := parseCeilingHeader(line)
	if err != nil {
		fmt.Fprintf(c, "error: %v\n", err)
		return
	}
	buf := ceilingPayload(size, batch)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

func parseCeilingHeader(line string) (size, batch int, err error) {
	f := strings.Fields(line)
	if len(f) == 2 {
		size, err = strconv.Atoi(f[0])
		if err == nil {
			batch, err = strconv.Atoi(f[1])
		}
	}
	if len(f) != 2 || err != nil || size < 2 || batch < 1 || size*batch > maxCeilingBatchBytes {
		return 0, 0, fmt.Errorf("bad header %q: want \"<size> <batch>\" within %d bytes", strings.TrimSpace(line), maxCeilingBatchBytes)
	}
	return size, batch, nil
}

// ceilingPayload returns batch messages of size bytes, each ending in '\n'.
func ceilingPayload(size, batch int) []byte {
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = 'a' + byte(i%26)
	}
	msg[size-1] = '\n'
	buf := make([]byte, 0, size*batch)
	for range batch {
		buf = append(buf, msg...)
	}
	return buf
}

// Close stops the server, closes its connections and waits.
func (s *CeilingServer) Close() {
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// CeilingConfig configures MeasureCeiling. Zero values mean the defaults.
type CeilingConfig struct {
	// Addr is the CeilingServer's address. Required.
	Addr string
	// Conns is the number of connections. Default 100.
	Conns int
	// Size is the message size in bytes. Default 128.
	Size int
	// Batch is the number of messages per write call. Default 1.
	Batch int
	// Duration is the measurement window. Default 5 s.
	Duration time.Duration
	// ServerPID, when set, reads the server's CPU and write syscalls.
	ServerPID int
}

// CeilingResult is what MeasureCeiling measured over its window.
type CeilingResult struct {
	Conns  int     `json:"conns"`
	Size   int     `json:"size"`
	Batch  int     `json:"batch"`
	Window float64 `json:"window_s"`
	// MsgsPerSec and BytesPerSec are what the server wrote (wchar of its
	// /proc/<pid>/io) with ServerPID, else what the client read. The
	// server side is the right one: with many connections the kernel
	// buffers megabytes, which a client-side window may drain on top.
	MsgsPerSec     float64 `json:"msgs_per_s"`
	BytesPerSec    float64 `json:"bytes_per_s"`
	ReadPerSec     float64 `json:"client_read_bytes_per_s"`
	WritesPerSec   float64 `json:"writes_per_s"` // from the server's syscw; 0 without ServerPID
	ServerCPUShare float64 `json:"server_cpu_share"`
	ClientCPUShare float64 `json:"client_cpu_share"`
}

// MeasureCeiling connects to a CeilingServer and measures the messages and
// bytes per second it delivers to Conns readers.
func MeasureCeiling(ctx context.Context, cfg CeilingConfig) (*CeilingResult, error) {
	if cfg.Conns <= 0 {
		cfg.Conns = 100
	}
	if cfg.Size <= 0 {
		cfg.Size = 128
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 1
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 5 * time.Second
	}
	if _, _, err := parseCeilingHeader(fmt.Sprintf("%d %d", cfg.Size, cfg.Batch)); err != nil {
		return nil, fmt.Errorf("ceiling: %w", err)
	}
	var total atomic.Int64
	conns := make([]net.Conn, 0, cfg.Conns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var d net.Dialer
	for i := range cfg.Conns {
		c, err := d.DialContext(ctx, "tcp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("ceiling: dial connection %d: %w", i, err)
		}
		conns = append(conns, c)
		if _, err := fmt.Fprintf(c, "%d %d\n", cfg.Size, cfg.Batch); err != nil {
			return nil, fmt.Errorf("ceiling: send header: %w", err)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, c := range conns {
		wg.Go(func() {
			buf := make([]byte, ceilingReadBuf)
			for {
				n, err := c.Read(buf)
				total.Add(int64(n))
				if err != nil {
					return
				}
			}
		})
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	sleep := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := sleep(ceilingWarmup); err != nil {
		return nil, err
	}
	if total.Load() == 0 {
		return nil, errors.New("ceiling: the server sent nothing (is it a ceiling server?)")
	}
	read := func(pid int) (ProcSample, error) {
		if pid == 0 {
			return ProcSample{}, nil
		}
		return ReadProc(pid)
	}
	s0, err := read(cfg.ServerPID)
	if err != nil {
		return nil, fmt.Errorf("ceiling: %w", err)
	}
	self0, err := ReadProc(0)
	if err != nil {
		return nil, fmt.Errorf("ceiling: %w", err)
	}
	b0 := total.Load()
	if err := sleep(cfg.Duration); err != nil {
		return nil, err
	}
	b1 := total.Load()
	self1, err := ReadProc(0)
	if err != nil {
		return nil, fmt.Errorf("ceiling: %w", err)
	}
	s1, err := read(cfg.ServerPID)
	if err != nil {
		return nil, fmt.Errorf("ceiling: %w", err)
	}
	sd := self1.Sub(self0)
	win := sd.Elapsed.Seconds()
	r := &CeilingResult{
		Conns: cfg.Conns, Size: cfg.Size, Batch: cfg.Batch, Window: win,
		BytesPerSec:    float64(b1-b0) / win,
		ReadPerSec:     float64(b1-b0) / win,
		ClientCPUShare: sd.CPUShare(),
	}
	if cfg.ServerPID != 0 {
		srv := s1.Sub(s0)
		r.BytesPerSec = float64(srv.WChar) / win
		r.WritesPerSec = float64(srv.SyscW) / win
		r.ServerCPUShare = srv.CPU.Seconds() / win
	}
	r.MsgsPerSec = r.BytesPerSec / float64(cfg.Size)
	return r, nil
}

// WriteTable writes r as one line of text.
func (r *CeilingResult) WriteTable(w io.Writer) error {
	_, err := fmt.Fprintf(w, "ceiling: %d conns, %d B x %d per write: %.0f msgs/s, %.1f MB/s, %.0f writes/s (server cpu %.0f%%, client cpu %.0f%%)\n",
		r.Conns, r.Size, r.Batch, r.MsgsPerSec, r.BytesPerSec/1e6, r.WritesPerSec, 100*r.ServerCPUShare, 100*r.ClientCPUShare)
	return err
}

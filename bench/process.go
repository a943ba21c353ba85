package bench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Process is a process that a bench command started (a server under
// test, a broker), its output written to a log file.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited
	err    error         // cmd.Wait's result, set before exited is closed
}

// StartProcess starts cmd with its standard output and error written to
// logPath.
func StartProcess(cmd *exec.Cmd, logPath string) (*Process, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.exited)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited returns a channel that is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err returns how the process ended (cmd.Wait's error), once Exited is
// closed.
func (p *Process) Err() error {
	<-p.exited
	return p.err
}

// WaitListening waits up to timeout until every address accepts TCP
// connections, then checks that the process still runs a moment later (so
// that the listener is its).
func (p *Process) WaitListening(timeout time.Duration, addrs ...string) error {
	deadline := time.Now().Add(timeout)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.exited:
				return fmt.Errorf("exited before listening on %s: %v", a, p.err)
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("not listening on %s after %v: %w", a, timeout, err)
			}
		}
	}
	select {
	case <-p.exited:
		return fmt.Errorf("exited: %v", p.err)
	case <-time.After(200 * time.Millisecond):
		return nil
	}
}

// Stop sends SIGTERM and waits for the process, killing it after timeout.
func (p *Process) Stop(timeout time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// RaiseFileLimit lifts the soft limit on open files to the hard limit:
// each client is a socket, and 10,000 clients need 10,000 descriptors in
// the load generator and in the server. Children inherit the limit.
func RaiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

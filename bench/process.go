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
	cmd  *exec.Cmd
	done chan error // cmd.Wait's result; whoever takes it puts it back
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
	p := &Process{cmd: cmd, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		lf.Close()
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited returns a channel that receives the process's exit error once
// it has exited; a receiver must call Requeue with it, so that the next
// receiver sees it too.
func (p *Process) Exited() <-chan error { return p.done }

// Requeue puts back the exit error taken from Exited.
func (p *Process) Requeue(err error) { p.done <- err }

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
			case werr := <-p.done:
				p.done <- werr
				return fmt.Errorf("exited before listening on %s: %v", a, werr)
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("not listening on %s after %v: %w", a, timeout, err)
			}
		}
	}
	select {
	case err := <-p.done:
		p.done <- err
		return fmt.Errorf("exited: %v", err)
	case <-time.After(200 * time.Millisecond):
		return nil
	}
}

// Stop sends SIGTERM and waits for the process, killing it after timeout.
func (p *Process) Stop(timeout time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		p.done <- <-p.done
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

package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTicks is the unit of utime and stime in /proc/<pid>/stat. It is
// USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcSample is one reading of a process's counters from /proc.
type ProcSample struct {
	// At is when the sample was read.
	At time.Time
	// CPU is user plus system CPU time consumed so far.
	CPU time.Duration
	// RSS is the resident set size in bytes (VmRSS).
	RSS int64
	// SyscW is the number of write-like system calls made so far
	// (write, writev, sendto, sendmsg...; /proc/<pid>/io syscw).
	SyscW int64
	// SyscR is the number of read-like system calls made so far.
	SyscR int64
	// WChar is the number of bytes passed to write-like system calls so far.
	WChar int64
	// HasIO is false when /proc/<pid>/io could not be read (another
	// user's process without ptrace rights); SyscW and SyscR are then 0.
	HasIO bool
}

// ReadProc reads the counters of process pid; pid 0 means this process.
func ReadProc(pid int) (ProcSample, error) {
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	s := ProcSample{At: time.Now()}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return s, fmt.Errorf("read process stat: %w", err)
	}
	if s.CPU, err = parseStatCPU(stat); err != nil {
		return s, fmt.Errorf("parse %s/stat: %w", dir, err)
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return s, fmt.Errorf("read process status: %w", err)
	}
	if s.RSS, err = parseStatusRSS(status); err != nil {
		return s, fmt.Errorf("parse %s/status: %w", dir, err)
	}
	if io, err := os.ReadFile(dir + "/io"); err == nil {
		s.SyscW, s.SyscR, s.WChar, err = parseIO(io)
		if err != nil {
			return s, fmt.Errorf("parse %s/io: %w", dir, err)
		}
		s.HasIO = true
	}
	return s, nil
}

// parseStatCPU returns utime+stime from the text of /proc/<pid>/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no ')' in %q", stat)
	}
	f := bytes.Fields(stat[i+1:])
	// After the name: state(3) ppid(4) ... utime(14) stime(15), so utime is
	// the 12th field after ')' (index 11).
	if len(f) < 13 {
		return 0, fmt.Errorf("only %d fields after the command name", len(f))
	}
	ut, err := strconv.ParseInt(string(f[11]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	st, err := strconv.ParseInt(string(f[12]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// parseStatusRSS returns VmRSS in bytes from the text of /proc/<pid>/status.
func parseStatusRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS: %w", err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no VmRSS line")
}

// parseIO returns syscw, syscr and wchar from the text of /proc/<pid>/io.
func parseIO(io []byte) (syscw, syscr, wchar int64, err error) {
	found := 0
	for line := range bytes.Lines(io) {
		name, val, ok := bytes.Cut(bytes.TrimSpace(line), []byte(": "))
		if !ok {
			continue
		}
		var dst *int64
		switch string(name) {
		case "syscw":
			dst = &syscw
		case "syscr":
			dst = &syscr
		case "wchar":
			dst = &wchar
		default:
			continue
		}
		if *dst, err = strconv.ParseInt(string(val), 10, 64); err != nil {
			return 0, 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		found++
	}
	if found != 3 {
		return 0, 0, 0, fmt.Errorf("syscw, syscr or wchar missing")
	}
	return syscw, syscr, wchar, nil
}

// Sub returns the counters consumed between earlier and s.
func (s ProcSample) Sub(earlier ProcSample) ProcDelta {
	return ProcDelta{
		Elapsed: s.At.Sub(earlier.At),
		CPU:     s.CPU - earlier.CPU,
		SyscW:   s.SyscW - earlier.SyscW,
		SyscR:   s.SyscR - earlier.SyscR,
		WChar:   s.WChar - earlier.WChar,
	}
}

// ProcDelta is what a process consumed over an interval.
type ProcDelta struct {
	Elapsed time.Duration
	CPU     time.Duration
	SyscW   int64
	SyscR   int64
	WChar   int64
}

// CPUShare returns the CPU consumed per second of the interval: 1.0 is one
// core busy all the time.
func (d ProcDelta) CPUShare() float64 {
	if d.Elapsed <= 0 {
		return 0
	}
	return d.CPU.Seconds() / d.Elapsed.Seconds()
}

// ReadCPUBusy returns the time CPU cpu has spent busy (user, nice, system,
// irq, softirq, steal) since boot, from /proc/stat.
func ReadCPUBusy(cpu int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	return parseCPUBusy(b, cpu)
}

func parseCPUBusy(stat []byte, cpu int) (time.Duration, error) {
	prefix := []byte("cpu" + strconv.Itoa(cpu) + " ")
	for line := range bytes.Lines(stat) {
		rest, ok := bytes.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) < 8 {
			return 0, fmt.Errorf("cpu%d line %q: too few fields", cpu, line)
		}
		var busy int64
		for _, i := range []int{0, 1, 2, 5, 6, 7} { // user nice system irq softirq steal
			v, err := strconv.ParseInt(string(f[i]), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cpu%d field %d: %w", cpu, i, err)
			}
			busy += v
		}
		return time.Duration(busy) * time.Second / clockTicks, nil
	}
	return 0, fmt.Errorf("no cpu%d in /proc/stat", cpu)
}

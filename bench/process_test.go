package bench

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProcess starts real processes: one that exits before listening,
// whose exit WaitListening reports and Err keeps for every caller, and one
// that runs until Stop ends it.
func TestProcess(t *testing.T) {
	dir := t.TempDir()
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p, err := StartProcess(exec.Command("sh", "-c", "echo bye; exit 3"), filepath.Join(dir, "exit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitListening(5*time.Second, addr); err == nil || !strings.Contains(err.Error(), "exited before listening") {
		t.Errorf("WaitListening = %v, want the exit", err)
	}
	var ee *exec.ExitError
	for range 2 { // every caller sees how it ended
		if err := p.Err(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Errorf("Err = %v, want exit status 3", err)
		}
	}
	p.Stop(time.Second) // already gone: returns at once

	p, err = StartProcess(exec.Command("sleep", "30"), filepath.Join(dir, "sleep.log"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
		t.Fatal("sleep exited at once")
	default:
	}
	p.Stop(5 * time.Second)
	select {
	case <-p.Exited():
	default:
		t.Fatal("Stop returned before the process exited")
	}
}

package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// depsPolicy is a statement of policy: which of this module's packages each
// package may import. Nothing imports bench; book imports nothing of ours;
// feed and stream import book but never each other; only cmd sees all.
var depsPolicy = map[string][]string{
	"book":   {},
	"feed":   {"book"},
	"stream": {"book"},
}

// TestDependencyPolicy fails on any unexpected dependency between the
// module's packages, so the data flow feed → book → stream stays one way.
func TestDependencyPolicy(t *testing.T) {
	const module = "github.com/marketd/marketd"
	for pkg, allowed := range depsPolicy {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+"/"+pkg+"/...").Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			rel, ok := strings.CutPrefix(dep, module+"/")
			if !ok {
				continue
			}
			top, _, _ := strings.Cut(rel, "/")
			if top == pkg {
				continue
			}
			if !slices.Contains(allowed, top) {
				t.Errorf("unexpected dependency: %s imports %s (policy allows %v)", pkg, dep, allowed)
			}
		}
	}
	// book is the core: the standard library and exact decimals only.
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", module+"/book").Output()
	if err != nil {
		t.Fatalf("go list -deps book: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep != module+"/book" && !strings.HasPrefix(dep, "github.com/shopspring/decimal") {
			t.Errorf("unexpected dependency: book imports %s", dep)
		}
	}
	// Nothing but bench itself may import bench.
	out, err = exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+"/book/...", module+"/feed/...", module+"/stream/...", module+"/cmd/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, module+"/bench") {
			t.Errorf("unexpected dependency on %s outside bench", dep)
		}
	}
}

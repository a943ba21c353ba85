//go:build !race

package book

// raceEnabled reports whether the race detector is on: the slowest tests
// then do less work.
const raceEnabled = false

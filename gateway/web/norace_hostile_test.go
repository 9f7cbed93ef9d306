//go:build !race

package web

// raceEnabled: see race_hostile_test.go.
const raceEnabled = false

//go:build race

package web

// raceEnabled: bcrypt is ~15x slower under the race detector, so the login
// burst tests use a lower cost there and skip their comparison run.
const raceEnabled = true

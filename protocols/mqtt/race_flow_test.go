//go:build race

package mqtt

// raceBuild: the race detector makes the broker ~10 times slower, so the
// issue 18 load tests (retained_flow_test.go) use fewer messages under it;
// the full 100,000 run without it.
const raceBuild = true

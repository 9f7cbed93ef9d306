//go:build !race

package mqtt

// raceBuild: see race_flow_test.go.
const raceBuild = false

//go:build race

package coap

// raceBuild: the race detector inflates heap and stacks, so memory bounds
// measured by tests get room under it.
const raceBuild = true

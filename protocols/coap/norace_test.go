//go:build !race

package coap

const raceBuild = false

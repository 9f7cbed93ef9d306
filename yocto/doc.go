// Package yocto holds no Go code of the gateway: its test is the offline
// check of the meta-fieldgate layer and the kas files (make check-yocto),
// for machines that cannot run bitbake. See README.md for what it covers.
package yocto

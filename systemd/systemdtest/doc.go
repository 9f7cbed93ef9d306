// Package systemdtest runs fieldgate's systemd unit under a real systemd
// (the machine's, 252 on Debian 12) as PID 1 of fresh mount, pid, net,
// uts, ipc and cgroup namespaces, chrooted into an overlay of the host
// root, with the unit, sysusers, tmpfiles and factory config installed as
// the Yocto recipe installs them. Its only content is the test: see
// TestUnitUnderSystemd.
package systemdtest

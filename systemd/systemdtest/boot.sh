#!/bin/sh
# PID 1 of the new namespaces (unshare --fork): build the container's file
# systems, then become systemd. $1 is the test's work directory, holding
# stage/ (the files the recipe installs, and the masks) and console.log.
set -e
T=$1
R=$T/root
mount --make-rprivate /
mkdir -p "$T/layers" "$R"
# The overlay's upper and work directories may not lie on the lower file
# system: they go on a tmpfs of this mount namespace.
mount -t tmpfs -o mode=755 tmpfs "$T/layers"
mkdir -p "$T/layers/upper" "$T/layers/work"
cp -a "$T/stage/." "$T/layers/upper/"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/layers/upper,workdir=$T/layers/work" "$R"
mount -t proc proc "$R/proc"
mount -t sysfs -o ro sysfs "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount -t tmpfs -o mode=755 tmpfs "$R/dev"
for n in null zero full random urandom tty; do
	touch "$R/dev/$n"
	mount --bind "/dev/$n" "$R/dev/$n"
done
# The serial console is a file the test reads.
touch "$R/dev/console"
mount --bind "$T/console.log" "$R/dev/console"
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs tmpfs "$R/dev/shm"
ip link set lo up
cd "$R"
exec chroot . /lib/systemd/systemd --system --unit=fieldgate-test.target

#!/bin/sh
# Checks the unit files offline (no running systemd needed): `make check-units`.
#   systemd-analyze verify          the unit parses, its binary is executable
#   systemd-analyze security        exposure at or below 2.5 (the "OK" band is < 5)
#   systemd-sysusers / -tmpfiles    the sysusers.d and tmpfiles.d files apply to an empty root
#   sysctl.d                        sets the UDP buffer sizes quic-go wants
# Usage: systemd/check-units.sh BINARY (the fieldgate binary to put in ExecStart)
set -eu
bin=$(realpath "${1:?usage: check-units.sh BINARY}")
here=$(dirname "$0")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# verify wants ExecStart's binary to exist: point it at the one just built.
sed "s#/usr/bin/fieldgate#$bin#" "$here/fieldgate.service" > "$tmp/fieldgate.service"
systemd-analyze verify "$tmp/fieldgate.service"
systemd-analyze security --offline=yes --threshold=25 "$tmp/fieldgate.service" > "$tmp/security.txt" || {
	cat "$tmp/security.txt"; echo "check-units: exposure above 2.5" >&2; exit 1; }
grep 'Overall exposure level' "$tmp/security.txt"

mkdir -p "$tmp/root/etc" "$tmp/root/usr/lib/sysusers.d" "$tmp/root/usr/lib/tmpfiles.d"
cp "$here/sysusers.d/fieldgate.conf" "$tmp/root/usr/lib/sysusers.d/"
cp "$here/tmpfiles.d/fieldgate.conf" "$tmp/root/usr/lib/tmpfiles.d/"
systemd-sysusers --root="$tmp/root"
grep -q '^fieldgate:' "$tmp/root/etc/passwd" || { echo "check-units: sysusers made no fieldgate user" >&2; exit 1; }
grep -q '^dialout:.*fieldgate' "$tmp/root/etc/group" || { echo "check-units: fieldgate not in dialout" >&2; exit 1; }
systemd-tmpfiles --root="$tmp/root" --create
[ -d "$tmp/root/var/lib/fieldgate" ] || { echo "check-units: tmpfiles made no /var/lib/fieldgate" >&2; exit 1; }

for key in net.core.rmem_max net.core.wmem_max; do
	grep -Eq "^$key *= *7500000$" "$here/sysctl.d/60-fieldgate-quic.conf" || {
		echo "check-units: sysctl.d lacks $key = 7500000" >&2; exit 1; }
done
echo "check-units: ok"

#!/bin/sh
# armbench.sh: the broker benchmark (cmd/mqttbench) against the linux/arm64
# build of fieldgate under qemu-aarch64-static, with raw socket I/O
# (broker.listeners.raw_io, ADR 0002) and adaptive GOMAXPROCS (board.cpus,
# ADR 0003) each on and off. Variants are interleaved round by round so that
# a change in the machine's load hits all of them alike.
#
# qemu-user translates arm64 code and emulates system calls in user space:
# the numbers are only comparable with each other, never with a board.
#
# Usage: internal/rawio/armbench.sh [ROUNDS] [DURATION] [SCENARIOS]
# (run from the repository root; `make bench-qemu` does). FIELDGATE_ARM64
# and MQTTBENCH may name prebuilt binaries.
set -eu
rounds=${1:-2}
duration=${2:-5s}
scenarios=${3:-latency-qos0,latency-qos1,fanin-qos0}
qemu=$(command -v qemu-aarch64-static) || { echo "armbench: qemu-aarch64-static missing (apt-get install qemu-user-static)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# FIELDGATE_ARM64 and MQTTBENCH name prebuilt binaries; else they are built.
if [ -n "${FIELDGATE_ARM64:-}" ]; then cp "$FIELDGATE_ARM64" "$work/fieldgate-arm64"; else
	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -trimpath -o "$work/fieldgate-arm64" ./cmd/fieldgate
fi
if [ -n "${MQTTBENCH:-}" ]; then cp "$MQTTBENCH" "$work/mqttbench"; else
	go build -o "$work/mqttbench" ./cmd/mqttbench
fi

# One wrapper per variant: mqttbench starts it as `WRAPPER run -config FILE`;
# it edits the config it was given, then becomes the emulated gateway (exec
# keeps the pid, so mqttbench measures the gateway's CPU).
for raw in true false; do
	for cpus in adaptive all; do
		w="$work/fg-raw_$raw-cpus_$cpus"
		cat >"$w" <<WRAP
#!/bin/sh
cfg=\$3
sed -i 's/^  listeners:\$/  listeners:\n    raw_io: $raw/' "\$cfg"
grep -q '^    raw_io: $raw\$' "\$cfg" || { echo "armbench: no broker.listeners in \$cfg" >&2; exit 1; }
printf 'board: {cpus: $cpus}\n' >>"\$cfg"
exec $qemu $work/fieldgate-arm64 "\$@"
WRAP
		chmod +x "$w"
	done
done

r=1
while [ "$r" -le "$rounds" ]; do
	for w in "$work"/fg-raw_*; do
		echo "== round $r: $(basename "$w" | sed 's/^fg-//')"
		# A scenario that fails under emulation (a timeout) is reported in
		# its table as "error"; the other rounds go on.
		"$work/mqttbench" -only fieldgate -fieldgate "$w" -duration "$duration" -scenarios "$scenarios" || true
	done
	r=$((r + 1))
done | tee "$work/out.txt"

# Summary: per scenario, metric and variant, the median of the rounds and
# every round's value.
echo
echo "== summary: median [rounds 1..$rounds]"
awk -F' *[|] *' '
	function median(s,   a, m, i, j, t) {
		m = split(s, a, " ")
		for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
		if (m == 0) return "-"
		return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
	}
	/^== round/ { v = $0; sub(/^== round [0-9]+: /, "", v); next }
	/^[|]/ && $4 != "" && $2 != "scenario" && $2 !~ /^-/ {
		if ($2 != "") sc = $2
		if ($3 == "–") next # a failed scenario: its row says error
		k = sc " | " $3 " | " v
		if (!(k in raw)) order[++n] = k
		raw[k] = raw[k] " " $4
		x = $4; gsub(/[,% ]/, "", x)
		if (x ~ /^[0-9.]+$/) num[k] = num[k] " " x
	}
	END { for (i = 1; i <= n; i++) { k = order[i]; printf "%s: %s  [%s ]\n", k, median(num[k]), raw[k] } }
' "$work/out.txt" | sort

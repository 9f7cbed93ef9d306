#!/bin/sh
# apply.sh: fieldgate's patch series on the MQTT engine (ADR 0001).
#
# third_party/mochi-mqtt-server is the pristine upstream release named in
# patches/UPSTREAM, minus the paths listed in patches/remove.txt, plus the
# patches/NNNN-*.patch files applied in order. This script rebuilds that
# from the Go module proxy and compares it with the tree.
#
#   apply.sh check            rebuild in a temp dir and diff against the tree;
#                             exits 1 on any difference (make engine-patches)
#   apply.sh new NAME         record what the tree has beyond the series as the
#                             next patch, NNNN-NAME.patch (make engine-patch NAME=…)
#   apply.sh build DIR        write pristine upstream + the series into DIR
#                             (UPSTREAM=vX.Y.Z tries the series on another release)
#   apply.sh pristine DIR     write the trimmed pristine upstream into DIR
#   apply.sh rebase vX.Y.Z DIR
#                             move the series to another upstream release: a
#                             git repository in DIR with one commit per patch,
#                             rebased onto vX.Y.Z (resolve conflicts there with
#                             git rebase --continue / --skip)
#   apply.sh export DIR       write DIR's rebased commits back as the series,
#                             set UPSTREAM and replace the tree, then check
#
# PATCHES.md and patches/ are fieldgate's own and are not part of the series.
# Needs go (the module proxy, or a module cache that has the release), git
# (git apply, git diff, git rebase) and diff. Temp dirs must not be inside a
# git work tree (git apply would apply relative to its root): TMPDIR is used.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
tree=$(dirname "$here")
# UPSTREAM: line 1 the release, line 2 the module (default the MQTT engine;
# third_party/gopcua-opcua/patches links to this script).
version=${UPSTREAM:-$(sed -n '1p' "$here/UPSTREAM")}
module=$(sed -n '2p' "$here/UPSTREAM")
module=${module:-github.com/mochi-mqtt/server/v2}

die() { echo "engine-patches: $*" >&2; exit 1; }

# pristine DIR: the upstream release, writable, trimmed by remove.txt.
pristine() {
	src=$(cd /tmp && go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$src" ] && [ -d "$src" ] || die "go mod download $module@$version gave no source directory"
	mkdir -p "$1"
	cp -R "$src/." "$1/"
	chmod -R u+w "$1"
	grep -v '^[[:space:]]*\(#\|$\)' "$here/remove.txt" | while IFS= read -r p; do
		[ -e "$1/$p" ] || die "remove.txt: $p is not in $module@$version (drop the line)"
		rm -rf "${1:?}/$p"
	done
}

# series DIR: apply every patch in order, strictly (no fuzz, no offsets
# beyond what git apply allows).
series() {
	for p in "$here"/[0-9][0-9][0-9][0-9]-*.patch; do
		[ -e "$p" ] || continue
		(cd "$1" && git apply --whitespace=nowarn "$p") || die "$(basename "$p") does not apply on $version + the patches before it"
	done
}

# compare A B: recursive diff of the two trees, fieldgate's own files left out.
compare() {
	diff -r -x patches -x PATCHES.md "$1" "$2"
}

cmd=${1:-check}
case $cmd in
check)
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	pristine "$work/engine"
	series "$work/engine"
	if ! compare "$work/engine" "$tree" >"$work/diff" 2>&1; then
		cat "$work/diff" >&2
		die "the tree differs from $module@$version + patches/ (record a change with: make engine-patch NAME=short-name)"
	fi
	n=$(find "$here" -name '[0-9][0-9][0-9][0-9]-*.patch' | wc -l)
	echo "engine-patches: $module@$version + $n patches = third_party/$(basename "$tree")"
	;;
new)
	name=${2:-}
	echo "$name" | grep -Eq '^[a-z0-9][a-z0-9-]*$' || die "usage: apply.sh new NAME (lower-case words joined by -)"
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	# A scratch repository holding upstream + the series; the tree is then
	# copied over it and the difference is the new patch (same format as
	# export: git diff with a/ and b/ prefixes, no rename detection).
	r="$work/r"
	pristine "$r"
	series "$r"
	git -C "$r" init -q
	git -C "$r" add -A -f
	git -C "$r" -c user.name=engine-patches -c user.email=engine-patches@localhost commit -qm series
	find "$r" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
	(cd "$tree" && tar --exclude=./patches --exclude=./PATCHES.md -cf - .) | (cd "$r" && tar -xf -)
	git -C "$r" add -A -f
	last=$(find "$here" -name '[0-9][0-9][0-9][0-9]-*.patch' | sed 's|.*/\([0-9]*\)-.*|\1|' | sort -n | tail -1)
	last=$(echo "${last:-0}" | sed 's/^0*//; s/^$/0/')
	next=$(printf '%04d' $((last + 1)))
	out="$here/$next-$name.patch"
	git -C "$r" diff --cached --no-renames --no-color --no-ext-diff --src-prefix=a/ --dst-prefix=b/ >"$out"
	if [ ! -s "$out" ]; then
		rm -f "$out"
		die "the tree has no change beyond the series: nothing to record"
	fi
	echo "engine-patches: wrote $(basename "$out") ($(grep -c '^diff --git' "$out") files); describe it in PATCHES.md"
	;;
build | pristine)
	[ -n "${2:-}" ] || die "usage: apply.sh $cmd DIR"
	[ ! -e "$2" ] || die "$2 exists"
	pristine "$2"
	[ "$cmd" = pristine ] || series "$2"
	echo "engine-patches: $2 is $module@$version$([ "$cmd" = pristine ] || echo ' + patches/')"
	;;
rebase)
	target=${2:-}
	repo=${3:-}
	[ -n "$target" ] && [ -n "$repo" ] || die "usage: apply.sh rebase vX.Y.Z DIR"
	[ ! -e "$repo" ] || die "$repo exists"
	mkdir -p "$repo"
	repo=$(cd "$repo" && pwd)
	git -C "$repo" init -q
	git -C "$repo" config user.name engine-patches
	git -C "$repo" config user.email engine-patches@localhost
	# base: the release the series is made for; then one commit per patch.
	pristine "$repo"
	git -C "$repo" add -A -f
	git -C "$repo" commit -qm "upstream $version"
	git -C "$repo" tag base
	for p in "$here"/[0-9][0-9][0-9][0-9]-*.patch; do
		[ -e "$p" ] || continue
		(cd "$repo" && git apply --whitespace=nowarn "$p") || die "$(basename "$p") does not apply on $version"
		git -C "$repo" add -A -f
		git -C "$repo" commit -qm "$(basename "$p" .patch)"
	done
	git -C "$repo" branch -q series
	# upstream: the target release, trimmed the same way, beside base.
	git -C "$repo" checkout -q -b upstream base
	git -C "$repo" rm -rqf .
	version=$target
	pristine "$repo"
	git -C "$repo" add -A -f
	git -C "$repo" commit -q --allow-empty -m "upstream $version"
	git -C "$repo" checkout -q series
	if git -C "$repo" rebase -q --onto upstream base; then
		echo "engine-patches: the series applies on $version; next: apply.sh export $repo"
	else
		echo "engine-patches: a patch conflicts with $version. In $repo: fix the files, git add, git rebase --continue" >&2
		echo "  (git rebase --skip drops a patch upstream made unnecessary); then: apply.sh export $repo" >&2
		exit 1
	fi
	;;
export)
	repo=${2:-}
	[ -n "$repo" ] && [ -d "$repo/.git" ] || die "usage: apply.sh export DIR (a repository made by apply.sh rebase)"
	[ ! -d "$repo/.git/rebase-merge" ] && [ ! -d "$repo/.git/rebase-apply" ] || die "$repo: the rebase is not finished"
	target=$(git -C "$repo" log -1 --format=%s upstream | sed -n 's/^upstream //p')
	[ -n "$target" ] || die "$repo: no upstream branch"
	rm -f "$here"/[0-9][0-9][0-9][0-9]-*.patch
	# Each commit's subject is its file name (NNNN-name, the number of its
	# PATCHES.md entry); a commit added during the rebase without one gets
	# the next number.
	n=0
	for c in $(git -C "$repo" rev-list --reverse upstream..HEAD); do
		name=$(git -C "$repo" log -1 --format=%s "$c")
		if echo "$name" | grep -Eq '^[0-9]{4}-[a-z0-9-]+$'; then
			n=$(echo "$name" | sed 's/-.*//; s/^0*//; s/^$/0/')
		else
			n=$((n + 1))
			name=$(printf '%04d' "$n")-$(echo "$name" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//')
		fi
		git -C "$repo" diff --no-renames --no-color --no-ext-diff --src-prefix=a/ --dst-prefix=b/ "$c^" "$c" \
			>"$here/$name.patch"
	done
	printf '%s\n%s\n' "$target" "$module" >"$here/UPSTREAM"
	# The tree becomes the rebased result; PATCHES.md and patches/ stay.
	find "$tree" -mindepth 1 -maxdepth 1 ! -name patches ! -name PATCHES.md -exec rm -rf {} +
	git -C "$repo" archive HEAD | tar -x -C "$tree"
	"$0" check
	echo "engine-patches: now set $module $target in go.mod, update PATCHES.md, and test (ADR 0001)"
	;;
*)
	die "unknown command $cmd (check, new NAME, build DIR, pristine DIR, rebase vX.Y.Z DIR, export DIR)"
	;;
esac

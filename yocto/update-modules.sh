#!/bin/sh
# Regenerates meta-fieldgate/recipes-fieldgate/fieldgate/fieldgate-{go-mods,licenses}.inc
# the way OE-core's go-mod-update-modules.bbclass does (`bitbake -c
# update_modules fieldgate`), but from this checkout and the local Go module
# cache, without network: a fresh GOMODCACHE is filled by `go list -deps`
# from the local cache used as a GOPROXY, and every .zip/.mod it needed
# becomes a gomod:// SRC_URI line with its sha256.
# Run it after every go.mod change; make check-yocto fails when it is stale.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=${1:-$here/meta-fieldgate/recipes-fieldgate/fieldgate}
cache=$(go env GOMODCACHE)
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
cd "$repo"
# Work on copies of go.mod and go.sum (-modfile): the checkout is never written.
cp go.mod "$tmp/go.mod"; cp go.sum "$tmp/go.sum"
GOMODCACHE="$tmp/mod" GOPROXY="file://$cache/cache/download" GOSUMDB=off GOFLAGS=-mod=mod \
	go list -modfile="$tmp/go.mod" -json=Dir,Module -deps ./... > "$tmp/list.json"
python3 "$here/gomods.py" "$tmp/mod" "$tmp/list.json" "$repo" "$out"

#!/bin/sh
# yocto/release.sh vX.Y.Z — points the Yocto recipe at a release.
#
# Release tags are named vMAJOR.MINOR.PATCH (semantic versioning, with an
# optional -rcN), on a commit of main; the recipe's PV is the tag without
# its "v". This writes PV and SRCREV (the tag's commit) into
# meta-fieldgate/recipes-fieldgate/fieldgate/fieldgate-release.inc after
# checking that the tagged tree has what the recipe installs and licenses
# (LICENSE with the checksum the recipe names, the systemd files, go.mod
# and the .inc files generated for it). Commit the result after the
# release commit; `make check-yocto` then checks the pin against the tag.
set -eu
tag=${1:?usage: yocto/release.sh vX.Y.Z}
echo "$tag" | grep -Eq '^v[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?$' || {
	echo "release.sh: $tag is not a release tag name (vMAJOR.MINOR.PATCH[-rcN])" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cd "$repo"
commit=$(git rev-parse --verify --quiet "refs/tags/$tag^{commit}") || {
	echo "release.sh: no tag $tag in this clone (git fetch --tags)" >&2; exit 1; }
git merge-base --is-ancestor "$commit" origin/main 2>/dev/null || git merge-base --is-ancestor "$commit" main || {
	echo "release.sh: $tag ($commit) is not on main" >&2; exit 1; }
recipe=yocto/meta-fieldgate/recipes-fieldgate/fieldgate/fieldgate.bb
for f in LICENSE NOTICE go.mod cmd/fieldgate/main.go $(sed -n 's/.*${FIELDGATE_SRC}\/\([^ ]*\).*/\1/p' "$recipe"); do
	git cat-file -e "$commit:$f" 2>/dev/null || { echo "release.sh: $tag lacks $f, which the recipe needs" >&2; exit 1; }
done
want=$(sed -n 's/.*file:\/\/src\/${GO_IMPORT}\/LICENSE;md5=\([0-9a-f]*\).*/\1/p' "$recipe")
have=$(git show "$commit:LICENSE" | md5sum | cut -d' ' -f1)
[ "$want" = "$have" ] || { echo "release.sh: LICENSE at $tag has md5 $have, the recipe says $want" >&2; exit 1; }
# The module list must be the one generated for the tagged go.mod.
git diff --quiet "$commit" -- go.mod go.sum yocto/meta-fieldgate/recipes-fieldgate/fieldgate/fieldgate-go-mods.inc || {
	echo "release.sh: go.mod, go.sum or fieldgate-go-mods.inc differ from $tag: build the recipe from the tag's files" >&2; exit 1; }
cat > yocto/meta-fieldgate/recipes-fieldgate/fieldgate/fieldgate-release.inc <<INC
# The fieldgate release this recipe builds: written by yocto/release.sh
# from a release tag (tag name v\${PV}, see docs/flashing.md "Releases").
# The fetch checks that the tag v\${PV} is this commit.
PV = "${tag#v}"
SRCREV = "$commit"
INC
echo "release.sh: fieldgate-release.inc now builds $tag ($commit)"

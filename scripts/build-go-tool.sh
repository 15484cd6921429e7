#!/usr/bin/env bash
# Build a Go command from the Go module proxy into tuneform's per-user cache, once; print the binary's path.
#
#   scripts/build-go-tool.sh NAME PACKAGE VERSION
#   scripts/build-go-tool.sh actionlint github.com/rhysd/actionlint/cmd/actionlint v1.7.12
#
# The binary goes to ${TUNEFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneform}/NAME/VERSION/NAME, never into the
# repository; a second call is a no-op. Used by scripts/build_fake_gcs.sh and scripts/build_actionlint.sh.
set -euo pipefail

name=${1:?usage: $0 NAME PACKAGE VERSION}
package=${2:?usage: $0 NAME PACKAGE VERSION}
version=${3:?usage: $0 NAME PACKAGE VERSION}
cache="${TUNEFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneform}"
dest_dir="$cache/$name/$version"
dest="$dest_dir/$name"

if [[ -x "$dest" ]]; then
    echo "$dest"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "$name: go is not on PATH; install Go >= 1.24 (https://go.dev/dl/) and rerun" >&2
    exit 1
fi

mkdir -p "$dest_dir"
# Build into a scratch GOBIN and move into place at the end, so an interrupted build never leaves a half binary
# that the next run would take for a finished one.
scratch="$(mktemp -d "$dest_dir/.build.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
echo "$name: building $package@$version (first time only)" >&2
start=$SECONDS
GOBIN="$scratch" GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0 go install "$package@$version"
mv "$scratch/$(basename "$package")" "$dest"
echo "$name: built in $((SECONDS - start)) s" >&2
echo "$dest"

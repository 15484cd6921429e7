#!/usr/bin/env bash
# Build fake-gcs-server (the GCS emulator the Vertex tests upload datasets to) from the Go module proxy.
#
#   scripts/build_fake_gcs.sh            # prints the binary's path; a no-op when it is already built
#
# The version is pinned (checked with `go list -m -versions github.com/fsouza/fake-gcs-server`); the binary goes to
# ${TUNEFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneform}/fake-gcs-server/<version>/fake-gcs-server,
# never into the repository. Override the version with FAKE_GCS_VERSION=vX.Y.Z.
set -euo pipefail

version="${FAKE_GCS_VERSION:-v1.56.1}"
cache="${TUNEFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneform}"
dest_dir="$cache/fake-gcs-server/$version"
dest="$dest_dir/fake-gcs-server"

if [[ -x "$dest" ]]; then
    echo "$dest"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "build_fake_gcs.sh: go is not on PATH; install Go >= 1.24 (https://go.dev/dl/) and rerun" >&2
    exit 1
fi

mkdir -p "$dest_dir"
# Build into a scratch GOBIN and move into place at the end, so an interrupted build never leaves a half binary
# that the next run would take for a finished one.
scratch="$(mktemp -d "$dest_dir/.build.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
echo "build_fake_gcs.sh: building github.com/fsouza/fake-gcs-server@$version (first time only, a few minutes)" >&2
start=$SECONDS
GOBIN="$scratch" GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0 go install "github.com/fsouza/fake-gcs-server@$version"
mv "$scratch/fake-gcs-server" "$dest"
echo "build_fake_gcs.sh: built in $((SECONDS - start)) s" >&2
echo "$dest"

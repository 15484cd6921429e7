#!/usr/bin/env bash
# Build fake-gcs-server (the GCS emulator the Vertex tests upload datasets to) from the Go module proxy.
#
#   scripts/build_fake_gcs.sh            # prints the binary's path; a no-op when it is already built
#
# The version is pinned (checked with `go list -m -versions github.com/fsouza/fake-gcs-server`); the binary goes to
# ${TUNEFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneform}/fake-gcs-server/<version>/fake-gcs-server (see
# scripts/build-go-tool.sh), never into the repository. Override the version with FAKE_GCS_VERSION=vX.Y.Z.
set -euo pipefail

exec "$(dirname "${BASH_SOURCE[0]}")/build-go-tool.sh" fake-gcs-server github.com/fsouza/fake-gcs-server \
    "${FAKE_GCS_VERSION:-v1.56.1}"

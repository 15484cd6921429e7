#!/usr/bin/env bash
# Build actionlint (the GitHub Actions workflow linter that tests/test_workflow.py runs) from the Go module proxy.
#
#   scripts/build_actionlint.sh            # prints the binary's path; a no-op when it is already built
#
# The version is pinned (checked with `go list -m -versions github.com/rhysd/actionlint`); the binary is cached per
# user (scripts/build-go-tool.sh). Override the version with ACTIONLINT_VERSION=vX.Y.Z.
set -euo pipefail

exec "$(dirname "${BASH_SOURCE[0]}")/build-go-tool.sh" actionlint github.com/rhysd/actionlint/cmd/actionlint \
    "${ACTIONLINT_VERSION:-v1.7.12}"

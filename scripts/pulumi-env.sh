#!/usr/bin/env bash
# Where tuneform's Pulumi engine lives, and the environment that keeps it off Pulumi Cloud.
#
#   eval "$(scripts/pulumi-env.sh)"     # in your shell: PATH, file backend, passphrase default, no update checks
#   scripts/pulumi-env.sh --bin-dir     # just the directory to put first on PATH (the Makefile uses this)
#   scripts/pulumi-env.sh --status      # "ready" when everything the engine needs is in that directory, else what is missing
#
# A `pulumi` already on PATH that reports the pinned version is used as it is; then the bin dir only has to hold
# what such an install may lack (the Python language host and its two shims). Otherwise the bin dir is the per-user
# cache that scripts/build-pulumi.sh fills, keyed by the version and a hash of tools/pulumi, so a changed go.sum or
# language host source gets a fresh directory instead of a stale binary.
set -euo pipefail

PULUMI_VERSION=3.260.0
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_root=${TUNEFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneform}

tools_hash() {
    # Sorted so the hash does not depend on directory order; path names are part of the hash.
    (cd "$repo/tools/pulumi" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -not -path './bin/*' \
        | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-12
}

cache_bin="$cache_root/pulumi/v$PULUMI_VERSION-$(tools_hash)/bin"

# Components the engine needs next to (or on the PATH beside) `pulumi` to run a Python program with dynamic providers.
HOST_FILES=(pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python)

# A pulumi on PATH outside our cache that reports exactly the pinned version.
external_pulumi() {
    local p
    p=$(PATH=$(echo "$PATH" | tr ':' '\n' | grep -vxF "$cache_bin" | paste -sd: -) command -v pulumi 2>/dev/null) || return 1
    [[ "$("$p" version 2>/dev/null)" == "v$PULUMI_VERSION" ]] || return 1
    echo "$p"
}

status() {
    local missing=() f ext ext_dir=""
    if ext=$(external_pulumi); then
        ext_dir=$(dirname "$ext")
    elif [[ ! -x "$cache_bin/pulumi" ]]; then
        missing+=(pulumi)
    fi
    for f in "${HOST_FILES[@]}"; do
        [[ -x "$cache_bin/$f" ]] && continue
        # A real Pulumi install ships its own host and shims beside the binary; those serve as well.
        [[ -n "$ext_dir" && -x "$ext_dir/$f" ]] && continue
        missing+=("$f")
    done
    if ((${#missing[@]})); then
        echo "missing in $cache_bin: ${missing[*]}"
        return 1
    fi
    echo ready
}

case "${1:-}" in
--bin-dir) echo "$cache_bin" ;;
--status) status ;;
--external) external_pulumi ;;
"")
    cat <<EOF
export PATH="$cache_bin:\$PATH"
export PULUMI_BACKEND_URL="\${PULUMI_BACKEND_URL:-file://$repo/.pulumi}"
export PULUMI_CONFIG_PASSPHRASE="\${PULUMI_CONFIG_PASSPHRASE-tuneform-local}"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
EOF
    ;;
*)
    echo "usage: $0 [--bin-dir|--status|--external]" >&2
    exit 2
    ;;
esac

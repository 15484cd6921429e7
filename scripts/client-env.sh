#!/usr/bin/env bash
# A Python environment with the newest OpenAI and Google Gen AI clients (tools/clients/requirements.txt, every
# dependency pinned with hashes), kept apart from .venv, whose own pins (pyproject.toml) the rest of the project uses.
# The endpoint is tested against both (tests/test_serving_clients.py).
#
#   scripts/client-env.sh           # build it once per user and requirement set; print its python
#   scripts/client-env.sh --lock    # re-pin tools/clients/requirements.txt from requirements.in
#
# Cached in ~/.cache/tuneform/clients/<hash of requirements.txt>; it needs PyPI the first time only.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_root=${TUNEFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneform}
uv=$(command -v uv || echo "$cache_root/uv-0.13.8/bin/uv")
requirements="$repo/tools/clients/requirements.txt"

if [[ ${1:-} == --lock ]]; then
    cd "$repo/tools/clients"
    exec "$uv" pip compile --python-version 3.11 --generate-hashes -q requirements.in -o requirements.txt
fi

env="$cache_root/clients/$(sha256sum "$requirements" | cut -c1-12)"
if [[ ! -x $env/bin/python ]]; then
    mkdir -p "$cache_root/clients"
    # Built beside its final place and renamed into it: a killed build never leaves a half environment there.
    staging=$(mktemp -d "$cache_root/clients/.build-XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    "$uv" venv -q --python 3.11 "$staging/env" >&2
    "$uv" pip install -q --python "$staging/env/bin/python" --require-hashes -r "$requirements" >&2
    mv -T "$staging/env" "$env" 2>/dev/null || true  # another build won the race: use its environment
fi
echo "$env/bin/python"

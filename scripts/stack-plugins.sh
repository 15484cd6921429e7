#!/usr/bin/env bash
# The Pulumi resource plugins a stack needs beyond tuneform's own dynamic providers, at the versions the lock pins.
#
#   scripts/stack-plugins.sh vertex prod         # prints one `resource <name> <version>` line per plugin needed
#   scripts/stack-plugins.sh --install vertex    # installs them (`pulumi plugin install`; needs the internet)
#
# Automatic plugin downloads are off (scripts/pulumi-env.sh), so CI installs what its stacks need explicitly. Today
# that is pulumi-gcp, for a vertex stack that lets tuneform create its dataset bucket (no `tuneform:bucket`; see
# tuneform.resources.storage); its version is the pulumi-gcp Python SDK's in requirements-core.lock, which is the
# version of the plugin that SDK asks for.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
install=false
if [[ "${1:-}" == "--install" ]]; then
    install=true
    shift
fi

config_value() { # FILE KEY: a top-level `config:` value of a stack file, unquoted
    sed -nE "s/^[[:space:]]+$2:[[:space:]]*\"?([^\"#]*[^\"#[:space:]])\"?.*/\\1/p" "$1" | head -n 1
}

gcp_version=$(sed -nE 's/^pulumi-gcp==([0-9.]+).*/\1/p' "$repo/requirements-core.lock" | head -n 1)
needed=()
for stack in "$@"; do
    file="stacks/Pulumi.$stack.yaml"
    [[ -f "$file" ]] || continue
    target=$(config_value "$file" tuneform:target)
    if [[ "${target:-local}" == vertex && -z "$(config_value "$file" tuneform:bucket)" ]]; then
        needed+=("resource gcp v$gcp_version")
    fi
done
((${#needed[@]})) || exit 0
printf '%s\n' "${needed[@]}" | sort -u | while read -r kind name version; do
    if $install; then
        echo "stack-plugins: pulumi plugin install $kind $name $version" >&2
        pulumi plugin install "$kind" "$name" "$version"
    else
        echo "$kind $name $version"
    fi
done

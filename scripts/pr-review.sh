#!/usr/bin/env bash
# The pull-request review of tuning changes: what .github/workflows/tuneform.yml runs, and what you can run locally.
#
#   scripts/pr-review.sh --base origin/main                  # write the comment to stdout, post nothing
#   scripts/pr-review.sh --base origin/main --out c.md       # write it to a file
#   scripts/pr-review.sh --base origin/main --post           # also post it on the pull request
#   scripts/pr-review.sh --base origin/main --skip-preview   # validate and plan only
#
# Steps, in the working directory (the repository under review):
#   1. `tuneform validate`: every spec and dataset problem, all at once.
#   2. `tuneform plan --base <ref> --format json`: per model created / re-tuned / updated / removed, why, tokens,
#      cost, and the current versions read from the state of the stacks under review.
#   3. `pulumi preview --policy-pack policy` on each stack under review whose target the plan changes, with
#      policy/config.<stack>.json as the pack's config when it exists. The stacks are explicit configuration:
#      --stacks "a b", else $TUNEFORM_STACKS; none means no previews (the comment says so). A stack that cannot
#      be previewed here (no engine, no stack file, no state backend or passphrase in CI, a plugin not installed) is
#      skipped with a note, not failed.
#   4. One comment (`python -m tuneform.review.comment`): failures first, then the plan, then the previews; under
#      GitHub's 65,536 characters. --post hands it to scripts/post-comment.sh (GH_TOKEN, PR_NUMBER,
#      GITHUB_REPOSITORY), which edits the earlier review comment instead of adding one more.
# Exit status: 0 when validation, the plan and every preview that ran passed; 1 otherwise (after the comment is
# written and posted).
set -euo pipefail

tools=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tuneform=${TUNEFORM_BIN:-$tools/.venv/bin/tuneform}
python=$(dirname "$tuneform")/python

base=origin/main
out=""
post=false
skip_preview=false
stacks_given=${TUNEFORM_STACKS:-}
while (($#)); do
    case "$1" in
    --base) base=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --post) post=true; shift ;;
    --skip-preview) skip_preview=true; shift ;;
    --stacks) stacks_given=$2; shift 2 ;;
    *) echo "usage: $0 [--base REF] [--out FILE] [--post] [--skip-preview] [--stacks 'NAME ...']" >&2; exit 2 ;;
    esac
done

log() { echo "pr-review: $*" >&2; }
stack_target() { # the stack file's tuneform:target (local when unset)
    local target
    target=$(sed -nE 's/^[[:space:]]*tuneform:target:[[:space:]]*"?([a-z]+)"?.*/\1/p' "stacks/Pulumi.$1.yaml" \
        2>/dev/null | head -n 1)
    echo "${target:-local}"
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/previews"
note() { echo "$*" >>"$work/notes"; }

read -r -a stacks <<<"$stacks_given"
if [[ "${PR_FROM_FORK:-}" == true ]]; then
    # GitHub passes neither secrets nor variables to a fork's pull request: no stacks, no backend, no passphrase.
    note "This pull request comes from a fork, and GitHub gives such runs no secrets or variables: it is validated and planned, but no stack was previewed and current versions are unknown."
elif ((${#stacks[@]} == 0)); then
    note "No stacks are configured for review (the TUNEFORM_STACKS variable), so nothing was previewed with the policy pack and current versions come from no stack's state."
fi

# What decides whether the previews can run, settled before the engine's environment fills in local defaults.
preview_blocker=""
if $skip_preview; then
    preview_blocker="previews skipped (--skip-preview)"
elif [[ -n "${GITHUB_ACTIONS:-}" && -z "${PULUMI_BACKEND_URL:-}" ]]; then
    preview_blocker="no state backend configured (PULUMI_BACKEND_URL): against an empty state every resource would show as created"
elif [[ -n "${GITHUB_ACTIONS:-}" && -z "${PULUMI_CONFIG_PASSPHRASE:-}" ]]; then
    preview_blocker="no PULUMI_CONFIG_PASSPHRASE (GitHub gives no secrets to pull requests from forks)"
fi
# PATH with the engine; the checkout's file backend and the local passphrase unless the caller set their own.
eval "$("$tools/scripts/pulumi-env.sh")"
if [[ -z "$preview_blocker" ]] && ! command -v pulumi >/dev/null 2>&1; then
    preview_blocker="no Pulumi engine here (\`make bootstrap\` builds it)"
fi

log "validating specs and datasets"
status=0
"$tuneform" validate >"$work/validate.out" 2>"$work/validate.err" || status=$?
echo "$status" >"$work/validate.status"

log "planning against $base"
stack_args=()
targets=""
for stack in "${stacks[@]}"; do
    stack_args+=(--stack "$stack")
    [[ -f "stacks/Pulumi.$stack.yaml" ]] && targets+="$(stack_target "$stack")"$'\n'
done
# Stacks of one target only: the plan is about that target (a Vertex-only team sees no local rows).
distinct=$(printf '%s' "$targets" | sort -u)
[[ -n "$distinct" && "$distinct" != *$'\n'* ]] && stack_args+=(--target "$distinct")
if ! "$tuneform" plan --base "$base" --format json "${stack_args[@]}" >"$work/plan.json" 2>"$work/plan.err"; then
    rm -f "$work/plan.json"
fi
# Targets with something to apply: only their stacks are previewed.
changed=""
if [[ -f "$work/plan.json" ]]; then
    changed=$("$python" -c '
import json, sys
plan = json.load(open(sys.argv[1]))
print(" ".join(sorted({c["target"] for c in plan["changes"] if c["status"] != "unchanged"})))
' "$work/plan.json")
fi

for stack in "${stacks[@]}"; do
    result="$work/previews/$stack"
    file="stacks/Pulumi.$stack.yaml"
    target=$(stack_target "$stack")
    echo "$target" >"$result.target"
    skip=""
    if [[ -n "$preview_blocker" ]]; then
        skip=$preview_blocker
    elif [[ ! -f "$file" ]]; then
        skip="no stack file $file"
    elif [[ ! -f "$work/plan.json" ]]; then
        skip="no plan to preview (it failed)"
    elif [[ " $changed " != *" $target "* ]]; then
        skip="no tuning changes on the $target target"
    fi
    if [[ -n "$skip" ]]; then
        log "stack $stack: $skip"
        echo skipped >"$result.status"
        echo "$skip" >"$result.note"
        continue
    fi
    [[ "$PULUMI_BACKEND_URL" == file://* ]] && mkdir -p "${PULUMI_BACKEND_URL#file://}"
    args=(--policy-pack "$tools/policy")
    [[ -f "policy/config.$stack.json" ]] && args+=(--policy-pack-config "policy/config.$stack.json")
    log "pulumi preview --stack $stack ${args[*]}"
    pulumi stack select --create "$stack" --non-interactive >/dev/null 2>&1 || true
    # Streaming JSON: one engine event a line, so the policy violations come as data (the summary JSON has none).
    if PULUMI_ENABLE_STREAMING_JSON_PREVIEW=1 pulumi preview --stack "$stack" --non-interactive --json "${args[@]}" \
        >"$result.json" 2>"$result.err"; then
        echo passed >"$result.status"
    elif plugin=$(grep -ohE "no resource plugin 'pulumi-resource-[^']+'[^\"]*v[0-9][0-9.]*" "$result.json" "$result.err" |
        sed -E "s/.*'pulumi-resource-([^']+)'.* (v[0-9][0-9.]*)$/\1 \2/" | head -n 1) && [[ -n "$plugin" ]]; then
        echo skipped >"$result.status"
        echo "needs the Pulumi plugin $plugin, not installed here (\`scripts/stack-plugins.sh --install $stack\`)" \
            >"$result.note"
    else
        echo failed >"$result.status"
    fi
    log "stack $stack: $(cat "$result.status")"
done

log "writing the comment"
comment="$work/comment.md"
"$python" -m tuneform.review.comment "$work" --repo "$PWD" --out "$comment" || status=1

if [[ -n "$out" ]]; then
    cp "$comment" "$out"
else
    cat "$comment"
fi
if $post; then
    "$tools/scripts/post-comment.sh" "$comment"
fi
exit "$status"

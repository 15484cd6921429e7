#!/usr/bin/env bash
# The pull-request review of tuning changes: what .github/workflows/tuneform.yml runs, and what you can run locally.
#
#   scripts/pr-review.sh --base origin/main                  # write the comment to stdout, post nothing
#   scripts/pr-review.sh --base origin/main --out c.md       # write it to a file
#   scripts/pr-review.sh --base origin/main --post           # also post it on the pull request (CI)
#
# Steps, in the working directory (the repository under review):
#   1. `tuneform validate`: every spec and dataset problem, all at once.
#   2. `tuneform plan --base <ref> --format markdown`: per model created / re-tuned / updated / removed, why, tokens,
#      cost, versions.
#   3. `pulumi preview --policy-pack policy` on each affected stack (a stack whose target the plan changes),
#      with policy/config.<stack>.json as the pack's config when it exists. Stacks: $TUNEFORM_STACKS (space
#      separated), else every stacks/Pulumi.<stack>.yaml. --skip-preview (or no pulumi engine) skips this step.
#   4. One comment, at most 64,000 characters (pulumi/actions' trim of GitHub's 65,535 limit), that starts with a
#      hidden marker; --post edits the previous comment carrying the marker instead of adding one more
#      (`gh api`, GH_TOKEN, PR_NUMBER and GITHUB_REPOSITORY from the workflow).
# Exit status: 0 when validation and every preview passed, 1 otherwise (after the comment is written and posted).
set -euo pipefail

MARKER="<!-- tuneform-review -->"
LIMIT=64000
tools=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tuneform=${TUNEFORM_BIN:-$tools/.venv/bin/tuneform}

base=origin/main
out=""
post=false
skip_preview=false
while (($#)); do
    case "$1" in
    --base) base=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --post) post=true; shift ;;
    --skip-preview) skip_preview=true; shift ;;
    *) echo "usage: $0 [--base REF] [--out FILE] [--post] [--skip-preview]" >&2; exit 2 ;;
    esac
done

log() { echo "pr-review: $*" >&2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

# Pulumi's and git's colour codes have no place in a comment.
strip_ansi() { sed -E 's/\x1b\[[0-9;]*[A-Za-z]//g'; }

# A preview log fit for a comment: the resource steps, the policy results and the summary. The program's own lines
# (echoed on the stack's row) are left out; its Diagnostics are kept unless a mandatory policy failed: the engine then
# stops the program, and under Pulumi's own language host (a pulumi install on PATH may bring one) the exec shim
# prints the interruption's KeyboardInterrupt traceback, noise next to the violation itself. (tuneform's host stops
# the program with SIGTERM, which prints nothing.)
preview_log() {
    strip_ansi | awk '
        /^@ / || /^[ +~-]*pulumi:pulumi:Stack / { next }
        /^Diagnostics:/ { diag = 1; dbuf = $0 "\n"; next }
        /^[A-Z][A-Za-z ]*:$/ { diag = 0 }
        diag { dbuf = dbuf $0 "\n"; next }
        /\[mandatory\]/ { refused = 1 }
        { out = out $0 "\n" }
        END {
            printf "%s", out
            if (dbuf != "" && !refused) printf "%s", dbuf
        }'
}

log "validating specs and datasets"
if "$tuneform" validate >"$work/validate.out" 2>"$work/validate.err"; then
    validation="Validation passed: $(tail -n 1 "$work/validate.out")"
else
    status=1
    validation=$(
        echo "**Validation failed.** Fix these before the plan can be trusted:"
        echo
        echo '```'
        grep -v '^tuneform: ' "$work/validate.err" | head -n 200 | strip_ansi
        echo '```'
    )
fi

log "planning against $base"
if ! "$tuneform" plan --base "$base" --format markdown >"$work/plan.md" 2>"$work/plan.err"; then
    status=1
    {
        echo "**tuneform plan --base $base failed:**"
        echo
        echo '```'
        tail -n 20 "$work/plan.err" | strip_ansi
        echo '```'
    } >"$work/plan.md"
fi

# The stacks to preview: each configured stack whose target has changes in the plan.
stacks=()
if [[ -n "${TUNEFORM_STACKS:-}" ]]; then
    read -r -a stacks <<<"$TUNEFORM_STACKS"
else
    for file in stacks/Pulumi.*.yaml; do
        [[ -e "$file" ]] || continue
        name=${file#stacks/Pulumi.}
        stacks+=("${name%.yaml}")
    done
fi

previews=""
engine=$("$tools/scripts/pulumi-env.sh" --bin-dir)
if $skip_preview || [[ ! -x "$engine/pulumi" ]] && ! command -v pulumi >/dev/null 2>&1; then
    log "previews skipped"
else
    # PATH, and the file backend in the checkout and the local passphrase unless the workflow set its own.
    eval "$("$tools/scripts/pulumi-env.sh")"
    [[ "$PULUMI_BACKEND_URL" == file://* ]] && mkdir -p "${PULUMI_BACKEND_URL#file://}"
    for stack in "${stacks[@]}"; do
        target=$(sed -nE 's/^[[:space:]]*tuneform:target:[[:space:]]*"?([a-z]+)"?.*/\1/p' "stacks/Pulumi.$stack.yaml" 2>/dev/null | head -n 1)
        target=${target:-local}
        if grep -qE "^- \*\*$target\*\*: 0 re-tuned, 0 created, 0 updated in place, 0 removed," "$work/plan.md"; then
            log "stack $stack ($target): no tuning changes, no preview"
            continue
        fi
        args=(--policy-pack "$tools/policy")
        [[ -f "policy/config.$stack.json" ]] && args+=(--policy-pack-config "policy/config.$stack.json")
        log "pulumi preview --stack $stack ${args[*]}"
        pulumi stack select --create "$stack" --non-interactive >/dev/null 2>&1 || true
        if pulumi preview --stack "$stack" --non-interactive --color=never "${args[@]}" >"$work/preview.$stack" 2>&1; then
            verdict="passed"
        else
            verdict="**failed**"
            status=1
        fi
        previews+=$'\n'"<details><summary>pulumi preview, stack <code>$stack</code>: $verdict</summary>"$'\n\n```\n'
        previews+="$(preview_log <"$work/preview.$stack" | tail -c 12000)"
        previews+=$'\n```\n</details>\n'
    done
fi

{
    echo "$MARKER"
    echo "$validation"
    echo
    cat "$work/plan.md"
    printf '%s' "$previews"
} >"$work/comment.md"
if (($(wc -c <"$work/comment.md") > LIMIT)); then
    # The plan keeps itself under 60,000; what overflows is preview output, so cut from the end.
    head -c $((LIMIT - 200)) "$work/comment.md" >"$work/cut.md"
    printf '\n```\n\n_Comment truncated to %s characters; see the workflow log for the full preview._\n' "$LIMIT" >>"$work/cut.md"
    mv "$work/cut.md" "$work/comment.md"
fi

if [[ -n "$out" ]]; then
    cp "$work/comment.md" "$out"
else
    cat "$work/comment.md"
fi

if $post; then
    : "${PR_NUMBER:?--post needs PR_NUMBER (the pull request number)}" "${GITHUB_REPOSITORY:?--post needs GITHUB_REPOSITORY (owner/name)}"
    body=$("$tools/.venv/bin/python" -c 'import json, sys; print(json.dumps({"body": sys.stdin.read()}))' <"$work/comment.md")
    existing=$(gh api "repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments" --paginate \
        --jq ".[] | select(.body | startswith(\"$MARKER\")) | .id" | tail -n 1)
    if [[ -n "$existing" ]]; then
        log "editing comment $existing"
        gh api --method PATCH "repos/$GITHUB_REPOSITORY/issues/comments/$existing" --input - <<<"$body" >/dev/null
    else
        log "adding a comment to pull request #$PR_NUMBER"
        gh api --method POST "repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments" --input - <<<"$body" >/dev/null
    fi
fi
exit "$status"

#!/usr/bin/env bash
# Post (or edit) the tuneform review comment on a pull request: the one step that needs a token that can write.
#
#   PR_NUMBER=42 GITHUB_REPOSITORY=acme/models GH_TOKEN=... scripts/post-comment.sh comment.md
#
# The comment is found by its first line, the hidden marker `<!-- tuneform-review -->`: an earlier comment of the
# review (posted by a bot) is edited instead of adding one more. Used by `scripts/pr-review.sh --post` and by the
# workflow_run job of .github/workflows/tuneform-comment.yml, which posts the comment a fork's pull request job left
# as an artifact: the file and the number are data from an untrusted run, so the number must be digits and the
# body is only ever sent as a JSON string. Needs `gh` and python3.
set -euo pipefail

MARKER="<!-- tuneform-review -->"
# GitHub refuses bodies over 65,536 characters; the review keeps under 65,000 already.
LIMIT=65536

file=${1:?usage: $0 COMMENT_FILE}
: "${PR_NUMBER:?needs PR_NUMBER (the pull request number)}" "${GITHUB_REPOSITORY:?needs GITHUB_REPOSITORY (owner/name)}"
if [[ ! "$PR_NUMBER" =~ ^[0-9]+$ ]]; then
    echo "post-comment: PR_NUMBER: expected digits, got '$PR_NUMBER'" >&2
    exit 2
fi
if [[ "$(head -n 1 "$file")" != "$MARKER" ]]; then
    echo "post-comment: $file: expected a tuneform review comment (first line $MARKER), got something else" >&2
    exit 2
fi
body=$(python3 -c '
import json, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
print(json.dumps({"body": text[: int(sys.argv[2])]}))
' "$file" "$LIMIT")
existing=$(gh api "repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments" --paginate \
    --jq ".[] | select(.user.type == \"Bot\" and (.body | startswith(\"$MARKER\"))) | .id" | tail -n 1)
if [[ -n "$existing" ]]; then
    echo "post-comment: editing comment $existing on #$PR_NUMBER" >&2
    gh api --method PATCH "repos/$GITHUB_REPOSITORY/issues/comments/$existing" --input - <<<"$body" >/dev/null
else
    echo "post-comment: adding a comment to #$PR_NUMBER" >&2
    gh api --method POST "repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments" --input - <<<"$body" >/dev/null
fi

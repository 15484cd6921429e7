"""OpenAI chat rows (``{"messages": [{"role": "system" | "user" | "assistant", "content": ...}]}``), checked and
converted to the canonical Gemini form, so that an OpenAI file and its Gemini twin are the same dataset."""

from __future__ import annotations

from typing import Any

from tuneform.datasets._locate import PathKey
from tuneform.datasets.rules import (
    MISSING,
    TOOLS_FIX,
    Context,
    Finding,
    absent,
    check_keys,
    check_roles,
    describe,
    non_empty_text,
    unknown_key,
    valid_unicode,
)
from tuneform.datasets.tokens import framing

__all__ = ["check_openai"]


def _openai_texts(content: Any, path: tuple[PathKey, ...], errs: list[Finding], ctx: Context) -> list[str]:
    if isinstance(content, str):
        if non_empty_text(content):
            return [content] if valid_unicode(content, path, errs, ctx) else []
    elif isinstance(content, list) and content:
        texts: list[str] = []
        for index, part in enumerate(content):
            at = (*path, index)
            if not isinstance(part, dict):
                shape = '{"type": "text", "text": "..."}'
                errs.append(Finding(at, f"expected a text part {shape}, got {describe(part)}.", False))
                continue
            kind = part.get("type", MISSING)
            if kind != "text":
                fix = ' Only text converts to Gemini tuning data; for files use format "gemini" with fileData parts.'
                errs.append(
                    Finding((*at, "type"), f'expected "text", got {describe(kind)}.{fix if kind else ""}', False)
                )
                continue
            meant = check_keys(part, at, ("type", "text"), errs)
            text = part.get("text", MISSING)
            if not non_empty_text(text):
                if not absent(part, "text", meant):
                    errs.append(Finding((*at, "text"), f"expected a non-empty string, got {describe(text)}.", False))
            elif valid_unicode(text, (*at, "text"), errs, ctx):
                texts.append(text)
        return texts
    errs.append(Finding(path, f"expected a non-empty string or a list of text parts, got {describe(content)}.", False))
    return []


_OPENAI_REFUSED = {
    "tool_calls": f"expected no tool calls, got {{got}}. {TOOLS_FIX}",
    "function_call": f"expected no function call, got {{got}}. {TOOLS_FIX}",
    "name": "expected no name, got {got}. Gemini turns carry no speaker name; fold it into the content or remove "
    '"name".',
    "weight": "expected no weight (or weight 1), got {got}. Gemini tuning learns every model turn and has no "
    'per-turn weight: remove "weight" to learn this reply, or remove this reply with the user message before it.',
}
_OPENAI_ROLE_FIXES = {
    "tool": f" {TOOLS_FIX}",
    "function": f" {TOOLS_FIX}",
    "developer": ' Write "system" instead.',
    "model": ' OpenAI chat calls the model "assistant" (or set "format: gemini" under spec.dataset).',
}


def check_openai(obj: dict[str, Any], errs: list[Finding], ctx: Context) -> tuple[dict[str, Any], int]:
    """Check one OpenAI chat example; returns it converted to canonical Gemini form, and its token count."""
    meant: set[str] = set()
    for key, value in obj.items():
        if key == "messages":
            continue
        if key in ("tools", "functions", "parallel_tool_calls"):
            errs.append(Finding((key,), f"expected no {key}, got {describe(value)}. {TOOLS_FIX}", True))
        elif key == "contents" and "messages" not in obj:
            head = 'expected the OpenAI chat key "messages", got "contents".'
            fix = 'Gemini format: set "format: gemini" under spec.dataset.'
            more = f"{head} This line and {{more}} more are {fix}"
            errs.append(Finding(("contents",), f"{head} This line is {fix}", True, repeated=more))
            meant.add("messages")
        elif key in ("prompt", "completion") and "messages" not in obj:
            if "messages" not in meant:
                shape = '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}'
                message = f'expected "messages", got a prompt/completion pair. Write it as {shape}.'
                more = message.replace(
                    "a prompt/completion pair", "prompt/completion pairs on this line and {more} more"
                )
                errs.append(Finding((key,), message, True, repeated=more.replace("Write it", "Write each")))
            meant.add("messages")
        else:
            meant.add(unknown_key(errs, (key,), ("messages",)) or "")
    messages = obj.get("messages", MISSING)
    if not isinstance(messages, list) or not messages:
        if not absent(obj, "messages", meant):
            fix = 'Write "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}].'
            got = describe(messages)
            errs.append(Finding(("messages",), f"expected a non-empty list of messages, got {got}. {fix}", False))
        return {}, 0
    tokens = 0
    system: list[str] | None = None
    contents: list[dict[str, Any]] = []
    roles: list[tuple[int, str | None]] = []
    for index, message in enumerate(messages):
        at: tuple[PathKey, ...] = ("messages", index)
        if not isinstance(message, dict):
            shape = '{"role": "user", "content": "..."}'
            errs.append(Finding(at, f"expected an object {shape}, got {describe(message)}.", False))
            roles.append((index, None))
            continue
        role = message.get("role", MISSING)
        message_meant: set[str] = set()
        for key, value in message.items():
            if key == "weight" and value == 1 and not isinstance(value, bool) and role == "assistant":
                continue  # OpenAI's default for an assistant message: learned, as every model turn is
            if key in _OPENAI_REFUSED:
                errs.append(Finding((*at, key), _OPENAI_REFUSED[key].format(got=describe(value)), True))
            elif key == "tool_call_id" and role == "tool":
                continue  # the role's own message says it all
            elif key not in ("role", "content"):
                message_meant.add(unknown_key(errs, (*at, key), ("role", "content")) or "")
        content = message.get("content", MISSING)
        calls_tools = "tool_calls" in message or "function_call" in message
        if role in ("system", "user", "assistant"):
            texts: list[str] = []
            if not (calls_tools or absent(message, "content", message_meant)):
                texts = _openai_texts(content, (*at, "content"), errs, ctx)
            if role == "system" and index == 0:
                system = texts
            elif role == "system":
                fix = "Merge it into the system message at the start."
                got = 'expected "user" or "assistant" (system comes first only), got "system"'
                errs.append(Finding((*at, "role"), f"{got}. {fix}", False))
                continue
            else:
                roles.append((index, role))
                contents.append({"role": "user" if role == "user" else "model", "parts": [{"text": t} for t in texts]})
            tokens += ctx.turn_tokens(texts)
            continue
        roles.append((index, None))
        if not absent(message, "role", message_meant):
            fix = _OPENAI_ROLE_FIXES.get(role, "") if isinstance(role, str) else ""
            if isinstance(role, str) and role.lower() in ("system", "user", "assistant"):
                fix = f' Roles are lower-case: write "{role.lower()}".'

            errs.append(
                Finding((*at, "role"), f'expected "system", "user" or "assistant", got {describe(role)}.{fix}', False)
            )
    check_roles(roles, ("user", "assistant"), "messages", errs)
    if not roles and system is not None:
        errs.append(
            Finding(("messages",), "expected user and assistant messages after the system message, got none.", False)
        )
    if contents:
        ctx.seen.add("text")
    converted: dict[str, Any] = {"contents": contents}
    if system:
        converted["systemInstruction"] = {"parts": [{"text": t} for t in system]}
    if not errs:
        ctx.frame_other, ctx.frame_cheap, ctx.turns = framing(converted)
    return converted, tokens

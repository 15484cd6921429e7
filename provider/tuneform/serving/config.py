"""The endpoint server's configuration: a JSON file the caller (the local backend) writes, checked in one pass.

Example::

    {"name": "ticket-router", "host": "127.0.0.1", "port": 8585, "api_key": "...",
     "base_model_dir": ".tuneform/base/smollm2-135m-instruct",
     "versions": {"1": {"artifact_dir": ".tuneform/objects/<sha>", "kind": "adapter"}},
     "traffic": {"1": 100}, "log_path": ".tuneform/endpoints/ticket-router.log"}

A version may name its own ``base_model_dir`` (versions tuned from different bases); the top-level one is the
default. A version's ``generation`` holds its decoding defaults (``spec.endpoint.generation``, saved with the version:
``temperature``, ``topP``, ``topK``, ``maxOutputTokens``, ``stop``), used wherever a request sets none.

Optional keys: ``inference`` (the module providing ``load_for_inference``, default ``tuneform.training``),
``pid_path`` (default: ``log_path`` with ``.pid``), ``max_new_tokens`` (default for requests and versions that set
none, 256), ``max_new_tokens_limit`` (1024), ``load_timeout_s`` (unused by the server; ``service.start`` waits this
long, 300), and the request limits: ``max_body_bytes`` (1 MiB), ``max_messages`` (256 turns),
``max_prompt_tokens`` (default: the model's context less the answer's budget), ``max_batch`` (rows decoded together,
8) and ``max_waiting`` (requests waiting to join the batch before new ones get a 503, 64).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8765
"""Port of a stack's first local endpoint (``tuneform:endpointPort``); further models take the next ports."""

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
KINDS = ("adapter", "full")
GENERATION_KEYS = ("temperature", "topP", "topK", "maxOutputTokens", "stop")
"""A version's decoding defaults, as ``spec.endpoint.generation`` names them."""


class ConfigError(ValueError):
    """The server configuration is invalid; the message lists every problem, one per line."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        header = f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {path}:"
        super().__init__("\n".join([header, *(f"{path}: {p}" for p in problems)]))


@dataclass(frozen=True)
class VersionConfig:
    """One servable model version: weights to put over the base model."""

    artifact_dir: str
    kind: str
    """``adapter`` (a PEFT adapter directory over ``base_model_dir``) or ``full`` (a complete model directory)."""
    base_model_dir: str
    """The base this version was tuned from (the file's per-version ``base_model_dir``, else the top-level one)."""
    generation: dict[str, Any] = field(default_factory=dict)
    """Decoding defaults saved with the version (keys of ``GENERATION_KEYS``); empty: the server's."""


@dataclass(frozen=True)
class ServerConfig:
    """A validated endpoint server configuration (see the module docstring for the file format)."""

    name: str
    host: str
    port: int
    api_key: str
    base_model_dir: str
    versions: dict[int, VersionConfig]
    traffic: dict[int, int]
    """Version -> percent of requests; sums to 100. Versions at 0 are still reachable as ``<name>@<version>``."""
    log_path: str
    pid_path: str
    inference: str = "tuneform.training"
    max_new_tokens: int = 256
    max_new_tokens_limit: int = 1024
    load_timeout_s: float = 300.0
    max_body_bytes: int = 1 << 20
    max_messages: int = 256
    max_prompt_tokens: int | None = None
    """``None``: the model's context less the answer's budget."""
    max_batch: int = 8
    max_waiting: int = 64

    def to_json(self) -> dict[str, Any]:
        """Renders the configuration in its file format.

        Returns:
            A JSON-ready dict that ``parse_config`` accepts.
        """
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "api_key": self.api_key,
            "base_model_dir": self.base_model_dir,
            "versions": {
                str(n): {
                    "artifact_dir": v.artifact_dir,
                    "kind": v.kind,
                    "base_model_dir": v.base_model_dir,
                    **({"generation": v.generation} if v.generation else {}),
                }
                for n, v in self.versions.items()
            },
            "traffic": {str(n): p for n, p in self.traffic.items()},
            "log_path": self.log_path,
            "pid_path": self.pid_path,
            "inference": self.inference,
            "max_new_tokens": self.max_new_tokens,
            "max_new_tokens_limit": self.max_new_tokens_limit,
            "load_timeout_s": self.load_timeout_s,
            "max_body_bytes": self.max_body_bytes,
            "max_messages": self.max_messages,
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_batch": self.max_batch,
            "max_waiting": self.max_waiting,
        }


def revision(config: ServerConfig) -> str:
    """A short fingerprint of what a configuration serves (the key left out: ``/health`` shows it to anyone), so
    whoever rewrote the file can tell when the server serves it."""
    shown = {key: value for key, value in config.to_json().items() if key != "api_key"}
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:16]


def generate_api_key() -> str:
    """Makes a new endpoint key.

    Returns:
        A URL-safe random key with 256 bits of entropy.
    """
    return secrets.token_urlsafe(32)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _version_number(key: Any) -> int | None:
    text = str(key)
    return int(text) if text.isdigit() and int(text) >= 1 else None


def parse_config(data: Any, source: str = "<config>") -> ServerConfig:
    """Checks a configuration dict and builds a ``ServerConfig``.

    Args:
        data: The decoded JSON.
        source: Where it came from, for messages.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: With every problem found.
    """
    if not isinstance(data, dict):
        raise ConfigError(source, [f"expected a JSON object, got {type(data).__name__}"])
    problems: list[str] = []
    known = set(ServerConfig.__dataclass_fields__)
    for key in sorted(set(data) - known):
        problems.append(f"{key}: unknown key. Remove it; known keys are {', '.join(sorted(known))}.")
    for key in ("name", "api_key", "base_model_dir", "log_path"):
        if not isinstance(data.get(key), str) or not data.get(key):
            problems.append(f"{key}: expected a non-empty string, got {data.get(key)!r}.")
    host = data.get("host", "127.0.0.1")
    if not _is_loopback(host):
        problems.append(
            f"host: expected a loopback address ({', '.join(LOOPBACK_HOSTS)}), got {host!r}. "
            'The local endpoint never listens beyond this machine; set "host": "127.0.0.1".'
        )
    port: Any = data.get("port")
    if not _is_int(port) or not 1 <= port <= 65535:
        problems.append(f"port: expected an integer from 1 to 65535, got {port!r}.")

    versions: dict[int, VersionConfig] = {}
    raw_versions = data.get("versions")
    if not isinstance(raw_versions, dict) or not raw_versions:
        problems.append(f'versions: expected a non-empty object like {{"1": {{...}}}}, got {raw_versions!r}.')
        raw_versions = {}
    for key, entry in raw_versions.items():
        number = _version_number(key)
        if number is None:
            problems.append(f"versions.{key}: expected a version number >= 1 as the key.")
            continue
        if not isinstance(entry, dict):
            problems.append(f"versions.{key}: expected an object with artifact_dir and kind, got {entry!r}.")
            continue
        artifact_dir, kind = entry.get("artifact_dir"), entry.get("kind")
        base_dir = entry.get("base_model_dir", data.get("base_model_dir"))
        if "base_model_dir" in entry and (not isinstance(base_dir, str) or not base_dir):
            problems.append(f"versions.{key}.base_model_dir: expected a directory path, got {base_dir!r}.")
        if not isinstance(artifact_dir, str) or not artifact_dir:
            problems.append(f"versions.{key}.artifact_dir: expected a directory path, got {artifact_dir!r}.")
        if kind not in KINDS:
            problems.append(f"versions.{key}.kind: expected one of {', '.join(KINDS)}, got {kind!r}.")
        for extra in sorted(set(entry) - {"artifact_dir", "kind", "base_model_dir", "generation"}):
            problems.append(f"versions.{key}.{extra}: unknown key. Remove it.")
        generation = entry.get("generation") or {}
        problems.extend(
            f"versions.{key}.generation{p if p.startswith(':') else '.' + p}" for p in generation_problems(generation)
        )
        versions[number] = VersionConfig(
            artifact_dir=str(artifact_dir),
            kind=str(kind),
            base_model_dir=str(base_dir),
            generation=dict(generation) if isinstance(generation, dict) else {},
        )

    traffic: dict[int, int] = {}
    raw_traffic = data.get("traffic")
    if not isinstance(raw_traffic, dict) or not raw_traffic:
        problems.append(f'traffic: expected an object of version -> percent like {{"1": 100}}, got {raw_traffic!r}.')
        raw_traffic = {}
    for key, percent in raw_traffic.items():
        number = _version_number(key)
        if number is None or (raw_versions and number not in versions):
            problems.append(f"traffic.{key}: expected one of the configured versions ({_names(versions)}).")
        elif not _is_int(percent) or not 0 <= percent <= 100:
            problems.append(f"traffic.{key}: expected an integer percent from 0 to 100, got {percent!r}.")
        else:
            traffic[number] = percent
    if traffic and len(traffic) == len(raw_traffic) and sum(traffic.values()) != 100:
        problems.append(f"traffic: expected percents that sum to 100, got {sum(traffic.values())}.")

    inference = data.get("inference", "tuneform.training")
    if not isinstance(inference, str) or not inference:
        problems.append(f"inference: expected a module name, got {inference!r}.")
    limits = {
        k: data.get(k, ServerConfig.__dataclass_fields__[k].default)
        for k in (
            "max_new_tokens",
            "max_new_tokens_limit",
            "max_body_bytes",
            "max_messages",
            "max_batch",
            "max_waiting",
        )
    }
    max_prompt_tokens = data.get("max_prompt_tokens")
    if max_prompt_tokens is not None and (not _is_int(max_prompt_tokens) or max_prompt_tokens < 1):
        problems.append(f"max_prompt_tokens: expected an integer >= 1 or null, got {max_prompt_tokens!r}.")
    for key, value in limits.items():
        if not _is_int(value) or value < 1:
            problems.append(f"{key}: expected an integer >= 1, got {value!r}.")
    load_timeout_s = data.get("load_timeout_s", 300.0)
    if not isinstance(load_timeout_s, int | float) or isinstance(load_timeout_s, bool) or load_timeout_s <= 0:
        problems.append(f"load_timeout_s: expected a number of seconds > 0, got {load_timeout_s!r}.")
    pid_path = data.get("pid_path")
    if pid_path is not None and (not isinstance(pid_path, str) or not pid_path):
        problems.append(f"pid_path: expected a file path, got {pid_path!r}.")
    if problems:
        raise ConfigError(source, problems)
    return ServerConfig(
        name=data["name"],
        host=host,
        port=port,
        api_key=data["api_key"],
        base_model_dir=data["base_model_dir"],
        versions=dict(sorted(versions.items())),
        traffic=dict(sorted(traffic.items())),
        log_path=data["log_path"],
        pid_path=pid_path or str(Path(data["log_path"]).with_suffix(".pid")),
        inference=inference,
        max_new_tokens=limits["max_new_tokens"],
        max_new_tokens_limit=limits["max_new_tokens_limit"],
        load_timeout_s=float(load_timeout_s),
        max_body_bytes=limits["max_body_bytes"],
        max_messages=limits["max_messages"],
        max_prompt_tokens=max_prompt_tokens,
        max_batch=limits["max_batch"],
        max_waiting=limits["max_waiting"],
    )


def generation_problems(generation: Any) -> list[str]:
    """What is wrong with a version's decoding defaults (``GENERATION_KEYS``), one line each, without the key path.

    The spec's schema checks the same bounds before anything is tuned; this guards a hand-edited configuration.
    """
    if not isinstance(generation, dict):
        return [f": expected an object of {', '.join(GENERATION_KEYS)}, got {generation!r}."]
    problems = [f"{key}: unknown key. Remove it." for key in sorted(set(generation) - set(GENERATION_KEYS))]
    bounds = {"temperature": (0.0, 2.0), "topP": (0.0, 1.0)}
    for key, (low, high) in bounds.items():
        value = generation.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high
        ):
            problems.append(f"{key}: expected a number from {low:g} to {high:g}, got {value!r}.")
    for key in ("topK", "maxOutputTokens"):
        value = generation.get(key)
        if value is not None and (not _is_int(value) or value < 1):
            problems.append(f"{key}: expected an integer >= 1, got {value!r}.")
    stop = generation.get("stop")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop)):
        problems.append(f"stop: expected a list of non-empty strings, got {stop!r}.")
    return problems


def _names(versions: dict[int, VersionConfig]) -> str:
    return ", ".join(str(n) for n in sorted(versions)) or "none"


def _is_loopback(host: Any) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except (TypeError, ValueError):
        return False


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Reads and checks a configuration file.

    Args:
        path: The JSON file.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The file is missing, is not JSON, or has invalid values (all listed).
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror}."]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}:{exc.lineno}:{exc.colno}", [f"expected JSON: {exc.msg}."]) from None
    return parse_config(data, source)


def write_config(path: str | os.PathLike[str], config: ServerConfig) -> None:
    """Writes a configuration file atomically, readable by its owner only (it holds the API key).

    Args:
        path: Destination.
        config: The configuration.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fout:
        json.dump(config.to_json(), fout, indent=2)
        fout.write("\n")
    os.replace(tmp, target)

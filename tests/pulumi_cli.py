"""Drives the real Pulumi CLI that `make bootstrap` built, against a throwaway file backend.

Every command runs as a subprocess of the cached `pulumi` binary with an isolated environment: its own PULUMI_HOME
and file backend (so tests never see the developer's stacks or credentials, and never contact Pulumi Cloud), a fixed
passphrase for secrets, and the engine's bin dir first on PATH so the language host and dynamic-provider shims are
the ones tuneform ships.

Typical use (see the ``pulumi_cli`` fixture in ``conftest.py``)::

    cli = pulumi_cli(project_dir)
    cli.stack_init("test", {"tuneform:target": "local"})
    cli.up()
    assert cli.outputs()["endpoint"].startswith("http://127.0.0.1:")
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
"""Root of the tuneform checkout (holds Pulumi.yaml, scripts/ and .venv)."""

DEFAULT_TIMEOUT = 300.0
"""Seconds a single CLI command may take before the test fails: generous for 2 shared CPU cores."""


class PulumiCommandError(AssertionError):
    """PulumiCommandError is raised when a CLI command that had to succeed did not; it carries the full output."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        """The finished command, with ``stdout`` and ``stderr``."""
        super().__init__(
            f"`{' '.join(result.args)}` exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )


def engine_bin_dir() -> Path:
    """Returns the directory that holds the engine for this checkout (it may not exist yet).

    Returns:
        The bin dir chosen by ``scripts/pulumi-env.sh`` (the per-user cache, keyed by version and tools/pulumi).
    """
    out = subprocess.run(
        [str(REPO_ROOT / "scripts" / "pulumi-env.sh"), "--bin-dir"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def engine_status() -> tuple[bool, str]:
    """Reports whether the engine is bootstrapped.

    Returns:
        ``(True, "ready")`` when `pulumi` and the Python host are in place, else ``(False, <what is missing>)``.
    """
    out = subprocess.run(
        [str(REPO_ROOT / "scripts" / "pulumi-env.sh"), "--status"], capture_output=True, text=True, check=False
    )
    return out.returncode == 0, (out.stdout + out.stderr).strip()


def copy_project(
    dest: Path,
    src: Path = REPO_ROOT,
    include: Iterable[str] = ("Pulumi.yaml", "__main__.py", "stacks", "tuning_specs"),
) -> Path:
    """Copies a Pulumi project into ``dest`` so a test can create stacks without touching tracked files.

    Pulumi writes into the stack config files (e.g. the passphrase salt on ``stack init``), so tests run a copy.
    The virtualenv is linked, not copied.

    Args:
        dest: Directory to create the copy in (created if missing).
        src: Project to copy; the tuneform checkout by default.
        include: Top-level files and directories to copy; those missing in ``src`` are skipped.

    Returns:
        ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in include:
        path = src / name
        if path.is_dir():
            shutil.copytree(path, dest / name, symlinks=True)
        elif path.exists():
            shutil.copy2(path, dest / name)
    if (src / ".venv").exists() and not (dest / ".venv").exists():
        (dest / ".venv").symlink_to((src / ".venv").resolve(), target_is_directory=True)
    return dest


def write_program(root: Path, name: str, program: str, modules: Mapping[str, str]) -> Path:
    """Writes a one-file Python Pulumi project that runs in this checkout's virtualenv.

    Args:
        root: Directory to create (it must not exist yet; missing parents are created).
        name: The project name in ``Pulumi.yaml`` (and the prefix of its config keys).
        program: The text of ``__main__.py``.
        modules: More modules beside it, e.g. ``{"noopprovider.py": PROVIDER}``: a dynamic provider must live in a
            module of its own, importable by the provider process, not in ``__main__``.

    Returns:
        ``root``.
    """
    root.mkdir(parents=True)
    (root / "Pulumi.yaml").write_text(
        f"name: {name}\nruntime:\n  name: python\n  options:\n    virtualenv: {REPO_ROOT / '.venv'}\n"
    )
    (root / "__main__.py").write_text(program)
    for filename, text in modules.items():
        (root / filename).write_text(text)
    return root


class PulumiCLI:
    """PulumiCLI runs the real `pulumi` binary on one project with an isolated home, backend and passphrase.

    Args:
        project_dir: Directory holding ``Pulumi.yaml`` (commands run with it as the working directory).
        backend_dir: Directory for the file backend's state; ``PULUMI_HOME`` goes in ``backend_dir/.home``.
        passphrase: Passphrase for the passphrase secrets provider.
        bin_dir: Engine directory put first on PATH; defaults to :func:`engine_bin_dir`.
    """

    def __init__(
        self, project_dir: Path, backend_dir: Path, passphrase: str = "test", bin_dir: Path | None = None
    ) -> None:
        self.project_dir = Path(project_dir)
        """Directory holding ``Pulumi.yaml``."""
        self.backend_dir = Path(backend_dir)
        """Directory of the file backend (``PULUMI_BACKEND_URL=file://...``)."""
        self.passphrase = passphrase
        """Passphrase for stack secrets."""
        self.bin_dir = bin_dir or engine_bin_dir()
        """Directory of ``pulumi`` and its Python host, first on PATH."""
        self.stack: str | None = None
        """Stack that commands act on; set by :meth:`stack_init`."""
        self.backend_dir.mkdir(parents=True, exist_ok=True)
        (self.backend_dir / ".home").mkdir(exist_ok=True)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Builds the environment for a command.

        Args:
            extra: Variables to add or override (e.g. a test's own knobs read by a provider).

        Returns:
            The caller's environment without any ``PULUMI_*`` variables, plus the isolated Pulumi settings.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
        env.pop("VIRTUAL_ENV", None)  # the project's Pulumi.yaml names the virtualenv to use
        env.update(
            PATH=f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
            PULUMI_HOME=str(self.backend_dir / ".home"),
            PULUMI_BACKEND_URL=f"file://{self.backend_dir}",
            PULUMI_CONFIG_PASSPHRASE=self.passphrase,
            PULUMI_SKIP_UPDATE_CHECK="true",
            PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
            # Machine-readable output: no colour codes, no progress animation.
            NO_COLOR="1",
        )
        env.update(extra or {})
        return env

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``pulumi <args>`` in the project directory.

        Args:
            *args: Arguments after ``pulumi``.
            env: Extra environment variables, see :meth:`env`.
            timeout: Seconds before the command is killed and ``subprocess.TimeoutExpired`` raised.
            check: Raise :class:`PulumiCommandError` (with the whole output) on a non-zero exit.

        Returns:
            The finished process with text ``stdout`` and ``stderr``.
        """
        cmd = [str(self.bin_dir / "pulumi") if (self.bin_dir / "pulumi").exists() else "pulumi", *args]
        cmd += ["--color=never"]
        result = subprocess.run(
            cmd,
            cwd=self.project_dir,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise PulumiCommandError(result)
        return result

    def _stack_args(self) -> list[str]:
        if self.stack is None:
            raise RuntimeError("no stack yet: call stack_init(name, config) first")
        return ["--stack", self.stack]

    def stack_init(
        self, name: str, config: Mapping[str, Any] | None = None, secrets: Mapping[str, str] | None = None
    ) -> None:
        """Creates a stack with the passphrase secrets provider and sets its config; later commands act on it.

        Args:
            name: Stack name.
            config: Plain config, namespaced keys (``"tuneform:target"``); booleans become ``true``/``false``.
            secrets: Config values stored encrypted (``pulumi config set --secret``).
        """
        self.run("stack", "init", name, "--secrets-provider", "passphrase", "--non-interactive", check=True)
        self.stack = name
        pairs: list[str] = []
        for key, value in (config or {}).items():
            text = json.dumps(value) if isinstance(value, bool) else str(value)
            pairs += ["--plaintext", f"{key}={text}"]
        for key, value in (secrets or {}).items():
            pairs += ["--secret", f"{key}={value}"]
        if pairs:
            self.run("config", "set-all", *self._stack_args(), *pairs, check=True)

    def up(
        self, *extra: str, env: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``pulumi up --yes`` on the current stack.

        Args:
            *extra: More flags, e.g. ``"--expect-no-changes"``.
            env: Extra environment variables.
            timeout: Seconds before the command is killed.
            check: Raise :class:`PulumiCommandError` on failure.

        Returns:
            The finished process.
        """
        return self.run(
            "up", *self._stack_args(), "--yes", "--non-interactive", *extra, env=env, timeout=timeout, check=check
        )

    def spawn_up(
        self, project: Path, stack: str, *, env: Mapping[str, str] | None = None, output: Any = subprocess.DEVNULL
    ) -> subprocess.Popen[bytes]:
        """Starts ``pulumi up --yes`` on ``stack`` in its own process group, for a test that kills it midway.

        Args:
            project: The project directory.
            stack: The stack to update.
            env: Extra environment variables.
            output: Where stdout and stderr go (``DEVNULL`` unless the test reads them).

        Returns:
            The running ``pulumi``; ``os.killpg(proc.pid, ...)`` reaches the engine and its children.
        """
        command = [str(self.bin_dir / "pulumi"), "up", "--yes", "--stack", stack, "--non-interactive", "--color=never"]
        return subprocess.Popen(
            command,
            cwd=project,
            env=self.env(env),
            stdout=output,
            stderr=subprocess.STDOUT if output is not subprocess.DEVNULL else subprocess.DEVNULL,
            start_new_session=True,
        )

    def preview(
        self, *extra: str, env: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``pulumi preview`` on the current stack; arguments as for :meth:`up`."""
        return self.run(
            "preview", *self._stack_args(), "--non-interactive", *extra, env=env, timeout=timeout, check=check
        )

    def refresh(
        self, *extra: str, env: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``pulumi refresh --yes`` on the current stack; arguments as for :meth:`up`."""
        return self.run(
            "refresh", *self._stack_args(), "--yes", "--non-interactive", *extra, env=env, timeout=timeout, check=check
        )

    def destroy(
        self, *extra: str, env: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``pulumi destroy --yes`` on the current stack; arguments as for :meth:`up`."""
        return self.run(
            "destroy", *self._stack_args(), "--yes", "--non-interactive", *extra, env=env, timeout=timeout, check=check
        )

    def outputs(self) -> dict[str, Any]:
        """Returns the stack outputs, secrets in clear text (``pulumi stack output --json --show-secrets``)."""
        result = self.run("stack", "output", *self._stack_args(), "--json", "--show-secrets", check=True)
        return json.loads(result.stdout)

    def resources(self) -> list[dict[str, Any]]:
        """Returns the resources recorded in the stack's state (``pulumi stack export``), provider entries included."""
        result = self.run("stack", "export", *self._stack_args(), check=True)
        return json.loads(result.stdout)["deployment"].get("resources") or []

"""Reading a commit's files straight from git's object store: no checkout, no temporary worktree.

Small files (specs) come through one ``git cat-file --batch`` process; a dataset blob is streamed line by line from
``git cat-file blob``, so a 200 MB file never sits in memory.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GitError", "GitTree", "TreeEntry", "blob_id_of_file"]

_READ_BUFFER = 1 << 20


class GitError(Exception):
    """A git command failed; the message names the command and what git said, plus how to fix it."""


@dataclass(frozen=True)
class TreeEntry:
    """One file of a commit."""

    path: str
    """Repository-relative, ``/``-separated."""
    blob: str
    """The blob's object id."""


def _git(repo: Path, *args: str, input_: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], input=input_, capture_output=True, check=False)
    except FileNotFoundError:
        raise GitError("git: expected the git command on PATH, got none. Install git.") from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {' '.join(args)}: {said[-1] if said else f'exit status {done.returncode}'}")
    return done.stdout


def blob_id_of_file(repo: Path, path: Path) -> str:
    """The object id git would give ``path``'s content (``git hash-object``), to skip unchanged files cheaply.

    Args:
        repo: The repository.
        path: A file in the working tree.

    Returns:
        The blob id (hex).
    """
    return _git(repo, "hash-object", "--no-filters", "--", str(path)).decode().strip()


class GitTree:
    """The files of one commit of a repository.

    Args:
        repo: The repository's working tree root.
        ref: Any commit-ish git understands (``origin/main``, ``HEAD~1``, a sha).

    Raises:
        GitError: If ``repo`` is not a git repository or ``ref`` names no commit.
    """

    def __init__(self, repo: Path, ref: str) -> None:
        self.repo = Path(repo)
        self.ref = ref
        try:
            self.commit = _git(self.repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()
        except GitError:
            raise GitError(
                f"--base: expected a commit, got {ref!r}, which git does not know in {self.repo}. Fetch it first "
                f"(`git fetch origin main`) or name another ref (`--base HEAD~1`)."
            ) from None
        listing = _git(self.repo, "ls-tree", "-r", "-z", "--full-tree", self.commit)
        self.files: dict[str, TreeEntry] = {}
        """Every file of the commit by repository-relative path (links and submodules left out)."""
        for record in listing.split(b"\0"):
            if not record:
                continue
            meta, _, name = record.partition(b"\t")
            mode, kind, blob = meta.split(b" ")
            if kind == b"blob" and mode != b"120000":
                path = name.decode("utf-8", "surrogateescape")
                self.files[path] = TreeEntry(path, blob.decode())

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        """The contents of several (small) files through one ``git cat-file --batch``.

        Args:
            paths: Paths present in :attr:`files`.

        Returns:
            Path -> content.
        """
        if not paths:
            return {}
        request = "".join(f"{self.files[path].blob}\n" for path in paths).encode()
        out = _git(self.repo, "cat-file", "--batch", input_=request)
        contents: dict[str, bytes] = {}
        offset = 0
        for path in paths:
            end = out.index(b"\n", offset)
            _blob, _kind, size = out[offset:end].split(b" ")
            start = end + 1
            contents[path] = out[start : start + int(size)]
            offset = start + int(size) + 1
        return contents

    def stream_lines(self, path: str) -> Iterator[bytes]:
        """Stream one file's lines (with their line ends) without holding the file in memory.

        Args:
            path: A path present in :attr:`files`.

        Yields:
            Each line as bytes.

        Raises:
            GitError: If git fails while streaming.
        """
        blob = self.files[path].blob
        process = subprocess.Popen(
            ["git", "-C", str(self.repo), "cat-file", "blob", blob],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=_READ_BUFFER,
        )
        assert process.stdout is not None
        try:
            yield from process.stdout
        finally:
            process.stdout.close()
            stderr = process.stderr.read() if process.stderr is not None else b""
            if process.stderr is not None:
                process.stderr.close()
            status = process.wait()
        if status != 0:
            raise GitError(f"git cat-file blob {blob} ({path}): {stderr.decode('utf-8', 'replace').strip()}")

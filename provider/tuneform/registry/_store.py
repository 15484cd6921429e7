"""Content-addressed object store: files and directory trees kept under their SHA-256.

Objects are immutable once written. A file object is ``objects/<sha>`` (a plain file), a directory object is
``objects/<sha>/`` (a tree). Writes go to ``tmp/`` on the same filesystem first and are renamed into place, so a
reader never sees a half-written object and two writers of the same content simply dedupe.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

_CHUNK = 1 << 20
_TREE_HEADER = b"tuneform-tree-v1\n"
"""Prefix of a tree manifest, so a tree hash can never equal the hash of a single file with that text."""


class ObjectNotFoundError(KeyError):
    """No object with this hash is in the store."""


def _copy_hashing(src: Path, dst: Path) -> str:
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def _tree_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Yields ``(posix relative path, path)`` for every regular file under ``root``, in sorted order."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            yield path.relative_to(root).as_posix(), path


def _tree_digest(entries: list[tuple[str, str]]) -> str:
    manifest = hashlib.sha256(_TREE_HEADER)
    for rel, sha in sorted(entries):
        manifest.update(f"{sha} {rel}\n".encode())
    return manifest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hashes one file the way ``ObjectStore.put_file`` does.

    Args:
        path: The file.

    Returns:
        The hex SHA-256 of the file's bytes.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fin:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(path: str | os.PathLike[str]) -> str:
    """Hashes a directory the way ``ObjectStore.put_dir`` does.

    The tree hash covers each regular file's relative path and content (not timestamps, permissions or empty
    directories), so the same files give the same hash on any machine.

    Args:
        path: The directory.

    Returns:
        The hex SHA-256 of the directory's manifest.
    """
    return _tree_digest([(rel, file_sha256(p)) for rel, p in _tree_files(Path(path))])


def _make_read_only(path: Path) -> None:
    # Objects are shared by every version that references them; a stray write would silently change them all.
    if path.is_dir():
        for _, file_path in _tree_files(path):
            file_path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    else:
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


class ObjectStore:
    """A content-addressed store of files and directory trees under ``<root>/objects``.

    Args:
        root: The registry directory; ``objects/`` and ``tmp/`` are created inside it.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def _put(self, is_dir: bool, fill: Callable[[Path], str]) -> str:
        """Stages a file or directory, lets ``fill`` write it and return its hash, publishes it under that hash.

        The staged copy is removed whatever happens (publishing moves it away first when it succeeds).
        """
        staged = self._staging(is_dir=is_dir)
        try:
            sha = fill(staged)
            self._publish(staged, sha)
        finally:
            _remove(staged)
        return sha

    def _staging(self, is_dir: bool) -> Path:
        if is_dir:
            return Path(tempfile.mkdtemp(prefix="put-", dir=self.tmp))
        fd, name = tempfile.mkstemp(prefix="put-", dir=self.tmp)
        os.close(fd)
        return Path(name)

    def _publish(self, staged: Path, sha: str) -> Path:
        target = self.objects / sha
        if target.exists():
            _remove(staged)
            os.utime(target)  # a fresh reference: keeps a concurrent gc's grace period from reaping it
            return target
        _make_read_only(staged)
        try:
            # rename(2) is atomic; for a directory it fails if another writer published the same tree first.
            os.rename(staged, target)
        except OSError:
            if not target.exists():
                raise
            _remove(staged)
        return target

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Stores a copy of one file.

        Args:
            path: The file to store.

        Returns:
            The file's SHA-256, its address in the store.
        """
        return self._put(False, lambda staged: _copy_hashing(Path(path), staged))

    def put_dir(self, path: str | os.PathLike[str]) -> str:
        """Stores a copy of a directory tree (regular files only; symlinks are followed).

        Args:
            path: The directory to store.

        Returns:
            The tree's hash (see ``tree_sha256``), its address in the store.

        Raises:
            NotADirectoryError: ``path`` is not a directory.
        """
        source = Path(path)
        if not source.is_dir():
            raise NotADirectoryError(f"{source}: expected a directory to store")

        def copy_tree(staged: Path) -> str:
            entries = []
            for rel, file_path in _tree_files(source):
                dst = staged / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                entries.append((rel, _copy_hashing(file_path, dst)))
            return _tree_digest(entries)

        return self._put(True, copy_tree)

    def has(self, sha: str) -> bool:
        """Tells whether an object is stored.

        Args:
            sha: The object's hash.

        Returns:
            True when ``objects/<sha>`` exists.
        """
        return _valid_sha(sha) and (self.objects / sha).exists()

    def get(self, sha: str) -> Path:
        """Finds a stored object.

        Args:
            sha: The object's hash.

        Returns:
            The object's path: a file, or a directory for trees. Treat it as read-only.

        Raises:
            ObjectNotFoundError: No such object.
        """
        if not self.has(sha):
            raise ObjectNotFoundError(f"no object {sha!r} in {self.objects}")
        return self.objects / sha

    def shas(self) -> list[str]:
        """Lists every stored object's hash.

        Returns:
            The hashes, sorted.
        """
        return sorted(p.name for p in self.objects.iterdir() if _valid_sha(p.name))

    def size(self, sha: str) -> int:
        """Measures an object.

        Args:
            sha: The object's hash.

        Returns:
            Its size in bytes (the sum of its files for a tree).
        """
        path = self.get(sha)
        if path.is_dir():
            return sum(p.stat().st_size for _, p in _tree_files(path))
        return path.stat().st_size

    def delete(self, sha: str) -> None:
        """Removes an object; a missing one is fine.

        Args:
            sha: The object's hash.
        """
        if _valid_sha(sha):
            _remove(self.objects / sha)

    def collect(self, keep: set[str], grace_s: float) -> list[str]:
        """Deletes every object not in ``keep`` and older than ``grace_s`` seconds.

        The grace period protects objects that a concurrent process has just stored but not yet recorded in a
        version (put and record are two steps). Stale ``tmp/`` entries of killed writers go too.

        Args:
            keep: Hashes still referenced.
            grace_s: Minimum age (by modification time) of an object that may be deleted.

        Returns:
            The deleted hashes.
        """
        cutoff = time.time() - grace_s
        deleted = []
        for sha in self.shas():
            path = self.objects / sha
            if sha not in keep and path.lstat().st_mtime <= cutoff:
                _remove(path)
                deleted.append(sha)
        for leftover in self.tmp.iterdir():
            if leftover.lstat().st_mtime <= cutoff:
                _remove(leftover)
        return deleted


def _valid_sha(sha: str) -> bool:
    return len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

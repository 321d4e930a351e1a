"""Local files that hold secrets or state: owner-only from the first byte (0600 files, 0700 dirs)."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents as 0700. Directories that already exist are left as
    they are (they may be shared ones such as /tmp)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue
        os.chmod(directory, PRIVATE_DIR)  # mkdir's mode is filtered by the umask only downwards; be exact


def write_private_temporary(temporary: Path, data: bytes) -> Path:
    """Create ``temporary`` (which must not exist) as a 0600 file holding ``data``, fsynced: the first
    half of an atomic write; the caller renames or links it into place."""
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    return temporary


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically as a 0600 file: a temporary file created 0600 in the same
    directory (never readable by others, not even for a moment), then renamed over ``path``."""
    path = Path(path)
    make_private_dirs(path.parent)
    temporary = write_private_temporary(path.with_name(f".{path.name}.{os.getpid()}.tmp"), text.encode())
    os.replace(temporary, path)


def create_private_file(path: Path) -> None:
    """Create an empty 0600 file unless ``path`` exists (e.g. a SQLite database before SQLite opens it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return
    os.fchmod(fd, PRIVATE_FILE)
    os.close(fd)

"""Crash-safe file writing: nothing written is ever half-written.

Every file is written to a temporary name in the same folder, flushed to disk and
renamed over the target (``os.replace`` is atomic on POSIX), so a reader sees the
old file or the new one, never a truncated one. JSON-lines logs are the one
exception: they are appended to, and :func:`read_jsonl` ignores a torn last line.

Permissions follow the process's umask, as ``open()`` and ``mkdir`` do: a file is
created with mode ``0o666 & ~umask`` (0644 under umask 022, 0600 under 077) and a
folder with ``0o777 & ~umask``, so collaborators can read what a study writes when the
umask lets them. (``tempfile.mkstemp``/``mkdtemp`` would make every file 0600 and every
folder 0700 whatever the umask; the temporary names are therefore made here.)
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_NAME_ATTEMPTS = 100


def _unique_name(folder: Path, prefix: str, suffix: str, create: Callable[[Path], None]) -> Path:
    """``create(folder / name)`` for a fresh random name (``FileExistsError``: try another)."""
    for _ in range(_NAME_ATTEMPTS):
        candidate = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{folder}: no free temporary name {prefix}*{suffix}")


def _create_file(path: Path) -> None:
    # O_EXCL: never open someone else's file; 0o666 is narrowed by the umask (kernel).
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _create_folder(path: Path) -> None:
    os.mkdir(path, 0o777)  # narrowed by the umask


def make_folder(path: str | os.PathLike) -> Path:
    """Create ``path`` and its missing parents (mode ``0o777 & ~umask``); existing is fine."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def make_temp_folder(parent: str | os.PathLike, prefix: str) -> Path:
    """A new, empty folder ``parent/<prefix><random>`` with mode ``0o777 & ~umask``.

    For staging a folder that is renamed into place when complete (the umask-respecting
    counterpart of ``tempfile.mkdtemp``, whose folders are always 0700).
    """
    return _unique_name(make_folder(parent), prefix, "", _create_folder)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto it.

    The temporary file exists (empty, mode ``0o666 & ~umask``) when yielded. A writer
    that replaces it rather than writing into it (safetensors does: its files are 0600)
    gets that mode back before the rename.
    """
    target = Path(path)
    make_folder(target.parent)
    tmp = _unique_name(target.parent, f".{target.name}.", ".tmp", _create_file)
    mode = stat.S_IMODE(tmp.stat().st_mode)
    try:
        yield tmp
        if stat.S_IMODE(tmp.stat().st_mode) != mode:
            tmp.chmod(mode)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_save_safetensors(
    tensors: Mapping[str, Any], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """Save a flat name -> tensor mapping as safetensors, atomically.

    Tensors are made contiguous and moved to the CPU first; shared storage is
    cloned (safetensors refuses aliased tensors).
    """
    from safetensors.torch import save_file

    flat = {
        name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()
    }
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=dict(metadata) if metadata else None)


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON record as a line and fsync (a crash can tear only this last line)."""
    target = Path(path)
    make_folder(target.parent)
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read JSON lines, skipping a torn (unparseable, unterminated) last line."""
    target = Path(path)
    if not target.exists():
        return []
    records = []
    lines = target.read_text(encoding="utf-8").split("\n")
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if index == len(lines) - 1:  # torn write at the very end: ignore it
                break
            raise
    return records

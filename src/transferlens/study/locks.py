"""One lock per run, held by whichever process trains it.

The locks are ``flock`` locks (via :mod:`filelock`) on ``<study>/locks/<run_id>.lock``:
the kernel drops them when their process ends, however it ends (SIGKILL included),
so a crashed runner never leaves a run locked. The lock file itself is kept on
release: unlinking it would let a waiter lock a deleted file while a newcomer locks a
new one under the same name.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from filelock import FileLock, Timeout


def _native_only_options() -> dict[str, bool]:
    """filelock >= 4 can unlink lock files and fall back to soft locks (which a SIGKILL
    leaves behind): turn both off. Older versions do neither and lack the options."""
    parameters = inspect.signature(FileLock.__init__).parameters
    wanted = {"preserve_lock_file": True, "fallback_to_soft": False}
    return {key: value for key, value in wanted.items() if key in parameters}


_NATIVE_ONLY = _native_only_options()


class RunLock:
    """A non-blocking, inter-process lock on one run (not re-entrant across instances)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path), thread_local=False, **_NATIVE_ONLY)

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits."""
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)

    @property
    def held(self) -> bool:
        """Whether *this* instance holds the lock."""
        return self._lock.is_locked

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def is_locked(path: str | os.PathLike) -> bool:
    """Whether some process holds the lock at ``path`` (probes by taking it for an instant)."""
    if not Path(path).exists():
        return False
    probe = RunLock(path)
    if probe.try_acquire():
        probe.release()
        return False
    return True

"""The ``transferlens`` command: parses, dispatches to the library, maps errors to exit codes.

Each sub-command lives in ``transferlens.commands.<name>`` and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` (a function of
the parsed arguments returning an exit code). The CLI holds no logic of its own.

Exit codes: 0 success; 2 bad input (one line naming the key, file or value);
1 anything else. A file-system error is bad input when the user can fix it where it
happened (:func:`path_error`): a permission refused, a read-only file system, or any
path error on a path named on the command line (or inside or above one).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from transferlens import __version__
from transferlens.errors import EXIT_BAD_INPUT, EXIT_FAILURE, UserInputError

COMMANDS = ("demo", "train", "plan", "run", "status", "analyze", "report", "list")
# Refused by the file system wherever the path came from: the user fixes these (their
# permissions, their mounts), not the code.
REFUSED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
# Path errors that are bad input when the path is one the user named.
PATH_ERRORS = REFUSED | {
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP,
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transferlens",
        description="What is being transferred in transfer learning? Train, analyse, report.",
    )
    parser.add_argument("--version", action="version", version=f"transferlens {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"transferlens.commands.{name}")
        module.register(subparsers)
    return parser


def _named_paths(args: argparse.Namespace) -> Iterator[Path]:
    """Every string argument, read as a path (the command line names no other paths)."""
    for value in vars(args).values():
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, str | os.PathLike) and str(item):
                yield Path(item).expanduser().absolute()


def _related(path: Path, named: Path) -> bool:
    # At or inside the named path, or a parent made for it (an --out that does not exist).
    return path == named or named in path.parents or (path in named.parents and not named.exists())


def path_error(error: OSError, args: argparse.Namespace) -> str | None:
    """``PATH: reason``, when ``error`` is bad input (module docstring); else None."""
    if error.errno not in PATH_ERRORS or not error.filename:
        return None
    path = Path(os.fsdecode(error.filename)).expanduser().absolute()
    named = error.errno in REFUSED or any(_related(path, given) for given in _named_paths(args))
    if not named:
        return None
    return f"{os.fsdecode(error.filename)}: {error.strerror or os.strerror(error.errno)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserInputError as error:
        print(f"transferlens: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        line = path_error(error, args)
        if line is None or os.environ.get("TRANSFERLENS_DEBUG"):
            return _failed(error)
        print(f"transferlens: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(
            "transferlens: interrupted (finished work is kept; run again to resume)",
            file=sys.stderr,
        )
        return 130
    except Exception as error:  # noqa: BLE001 -- the last line of defence: one line, exit 1
        return _failed(error)


def _failed(error: Exception) -> int:
    if os.environ.get("TRANSFERLENS_DEBUG"):  # show the traceback when asked to
        raise error
    print(f"transferlens: failed: {type(error).__name__}: {error}", file=sys.stderr)
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

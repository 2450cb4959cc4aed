"""The ``transferlens`` command: parses, dispatches to the library, maps errors to exit codes.

Each sub-command lives in ``transferlens.commands.<name>`` and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` (a function of
the parsed arguments returning an exit code). The CLI holds no logic of its own.

Exit codes: 0 success; 2 bad input (one line naming the key, file or value);
1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from transferlens import __version__
from transferlens.errors import EXIT_BAD_INPUT, EXIT_FAILURE, UserInputError

COMMANDS = ("demo", "train", "plan", "run", "status", "analyze", "report")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserInputError as error:
        print(f"transferlens: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(
            "transferlens: interrupted (finished work is kept; run again to resume)",
            file=sys.stderr,
        )
        return 130
    except Exception as error:  # noqa: BLE001 -- the last line of defence: one line, exit 1
        if os.environ.get("TRANSFERLENS_DEBUG"):  # show the traceback when asked to
            raise
        print(f"transferlens: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

"""``transferlens train [CONFIG.yaml] --out DIR [overrides]``: one training run into a run folder.

The spec comes from the YAML file (a :class:`~transferlens.train.TrainSpec`), with
command-line flags overriding its keys; without a file the flags alone must give the
required keys (``--model``, ``--data``, ``--epochs``, ``--lr``). Every field of the spec
is a flag: ``--batch-size`` sets ``batch_size``, ``--image-size`` sets
``data.image_size``, ``--init-run DIR`` starts from a run folder. Your own images:
``--data image_folder --data-root DIR`` with ``DIR/<class>/<image>``. Values of flags are
validated like YAML values, so every mistake is one line naming the key (exit 2).
Running it again on a complete folder returns at once; on an interrupted one, resumes.
Every key and its default: ``docs/reference.md``; the names of models and data sets:
``transferlens list models``, ``transferlens list datasets``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transferlens.commands.spec_flags import SpecFlags
from transferlens.docstrings import plain_text
from transferlens.errors import UserInputError
from transferlens.train import TrainSpec, train
from transferlens.validation import read_yaml, validate

TRAIN_FLAGS = SpecFlags(TrainSpec)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one model (RI-T, P-T or pre-training) into a run folder",
        description=plain_text(__doc__.split("\n\n")[1]) if __doc__ else None,
    )
    parser.add_argument("config", nargs="?", help="YAML file of a TrainSpec")
    parser.add_argument("--out", help="run folder to write (resumed if it exists)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or lines")
    TRAIN_FLAGS.add_to(parser.add_argument_group("the spec's fields (override the YAML file)"))
    parser.set_defaults(handler=run)


def build_spec(args: argparse.Namespace) -> TrainSpec:
    """The TrainSpec of the YAML file (if any) with the flags applied on top."""
    data = read_yaml(args.config) if args.config else {}
    given = bool(TRAIN_FLAGS.given(args))
    merged = TRAIN_FLAGS.apply(data, args)
    if args.config:
        source = f"{args.config} (with options)" if given else str(args.config)
    else:
        source = "options"
    return validate(TrainSpec, merged, source)


def run(args: argparse.Namespace) -> int:
    if not args.out:
        raise UserInputError("--out: required (the run folder to write)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserInputError(f"--out: {args.out} exists and is not a folder")
    spec = build_spec(args)
    summary = train(spec, Path(args.out), progress=not args.no_progress)
    state = "already complete" if summary.already_complete else "complete"
    speed = summary.optimization_speed
    speed_text = "n/a" if speed is None else f"{speed:.4f}"
    print(
        f"{state}: {args.out}  final test metric {summary.final_test_metric:.4f}  "
        f"best {summary.best_test_metric:.4f} (epoch {summary.best_epoch})  "
        f"optimisation speed {speed_text}"
    )
    return 0

"""``transferlens train [CONFIG.yaml] --out DIR [overrides]``: one training run into a run folder.

The spec comes from the YAML file (a :class:`~transferlens.train.TrainSpec`), with
command-line flags overriding its keys; without a file the flags alone must give the
required keys (``--model``, ``--data``, ``--epochs``, ``--lr``). Values of flags are
validated like YAML values, so every mistake is one line naming the key (exit 2).
Running it again on a complete folder returns at once; on an interrupted one, resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from transferlens.errors import UserInputError
from transferlens.validation import read_yaml, validate

# flag destination -> key path in the spec
SPEC_FLAGS: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "epochs": ("epochs",),
    "lr": ("lr",),
    "batch_size": ("batch_size",),
    "mixup_alpha": ("mixup_alpha",),
    "warmup_epochs": ("warmup_epochs",),
    "grad_clip_norm": ("grad_clip_norm",),
    "device": ("device",),
    "seed": ("seed",),
    "num_workers": ("num_workers",),
    "data": ("data", "name"),
    "domain": ("data", "domain"),
    "data_root": ("data", "root"),
    "image_size": ("data", "image_size"),
    "train_size": ("data", "train_size"),
    "test_size": ("data", "test_size"),
    "block_size": ("data", "block_size"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one model (RI-T, P-T or pre-training) into a run folder",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("config", nargs="?", help="YAML file of a TrainSpec")
    parser.add_argument("--out", help="run folder to write (resumed if it exists)")
    # Values stay strings here: the spec validates them, with one-line errors.
    parser.add_argument("--model", help="model registry name, e.g. fixup_resnet10")
    parser.add_argument(
        "--model-kwarg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model keyword argument (repeatable), e.g. stem=cifar",
    )
    parser.add_argument("--data", help="data set registry name, e.g. synthetic")
    parser.add_argument("--domain", help="domain of the data set")
    parser.add_argument("--data-root", help="folder of the data on disk")
    parser.add_argument("--image-size")
    parser.add_argument("--train-size")
    parser.add_argument("--test-size")
    parser.add_argument("--block-size", help="block shuffle size (0 = pixel shuffle)")
    parser.add_argument("--init-run", help="start from this run folder (P-T)")
    parser.add_argument("--init-epoch", help="epoch of --init-run: a number, final or best")
    parser.add_argument("--init-file", help="start from this weights file (P-T)")
    parser.add_argument("--epochs")
    parser.add_argument("--lr")
    parser.add_argument("--batch-size")
    parser.add_argument("--mixup-alpha")
    parser.add_argument("--warmup-epochs", help="epochs of linear lr warm-up (default 0)")
    parser.add_argument("--grad-clip-norm", help="clip the global gradient norm to this")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed")
    parser.add_argument("--num-workers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or lines")
    parser.set_defaults(handler=run)


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _overrides(args: argparse.Namespace) -> dict[tuple[str, ...], Any]:
    """Key path -> value for every flag given on the command line."""
    found: dict[tuple[str, ...], Any] = {}
    for dest, path in SPEC_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            found[path] = value
    for item in args.model_kwarg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"--model-kwarg: expected KEY=VALUE (got {item!r})")
        found[("model_kwargs", key)] = _yaml_value(value)
    if args.init_run is not None and args.init_file is not None:
        raise UserInputError("--init-run and --init-file: give only one")
    if args.init_epoch is not None and args.init_run is None:
        raise UserInputError("--init-epoch: needs --init-run")
    if args.init_run is not None:
        found[("init",)] = {"kind": "run", "run": args.init_run}
        if args.init_epoch is not None:
            epoch = _yaml_value(args.init_epoch)
            found[("init",)]["epoch"] = epoch
    if args.init_file is not None:
        found[("init",)] = {"kind": "file", "path": args.init_file}
    return found


def build_spec(args: argparse.Namespace):
    """The TrainSpec of the YAML file (if any) with the flags applied on top."""
    from transferlens.train import TrainSpec

    data: dict[str, Any] = read_yaml(args.config) if args.config else {}
    overrides = _overrides(args)
    for path, value in overrides.items():
        target = data
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[path[-1]] = value
    if args.config:
        source = f"{args.config} (with options)" if overrides else str(args.config)
    else:
        source = "options"
    return validate(TrainSpec, data, source)


def run(args: argparse.Namespace) -> int:
    if not args.out:
        raise UserInputError("--out: required (the run folder to write)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserInputError(f"--out: {args.out} exists and is not a folder")
    spec = build_spec(args)
    from transferlens.train import train

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

"""``transferlens analyze <analysis>``: one of the paper's analyses on given models or runs.

Models come from run folders (--run DIR, at --epoch: a number, final or best) or
weights files (--weights FILE with --model NAME --num-classes K). Data come from the
first run's spec (its test split unless --split train) or from --data NAME --domain D
--data-root DIR. The analyses reuse and pretrain-checkpoints read a runs.csv table
instead. The table is printed and, with --out FILE.csv, written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from transferlens.errors import UserInputError

MODEL_ANALYSES = ("cka", "mistakes", "distance", "interpolation", "criticality")
HELP = {
    "cka": "CKA between the same layers of pairs of models (analysis 3)",
    "mistakes": "common and uncommon mistakes of pairs of models (analysis 2)",
    "distance": "l2 distance between two models, whole and per module (analysis 4)",
    "interpolation": "loss and metric on the line between two models, and the barrier (5)",
    "criticality": "module criticality and rewinding of one run (analysis 6)",
    "reuse": "feature reuse table from runs.csv (analysis 1)",
    "pretrain-checkpoints": "which pre-training checkpoint, from runs.csv (analysis 7)",
}


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _key_values(items: list[str], flag: str) -> dict[str, Any]:
    found = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"{flag}: expected KEY=VALUE (got {item!r})")
        found[key] = _yaml_value(value)
    return found


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument(
        "--run", action="append", default=[], metavar="DIR", help="run folder (repeatable)"
    )
    group.add_argument(
        "--epoch", action="append", default=[], metavar="E",
        help="epoch of each --run (one for all, or one per run): a number, final or best",
    )  # fmt: skip
    group.add_argument(
        "--weights", action="append", default=[], metavar="FILE", help="weights file (repeatable)"
    )
    group.add_argument("--model", help="model registry name of --weights, e.g. fixup_resnet50")
    group.add_argument("--num-classes", type=int, help="head size of --weights models")
    group.add_argument("--model-kwarg", action="append", default=[], metavar="KEY=VALUE")
    group.add_argument("--name", action="append", default=[], help="names of the models, in order")
    data = parser.add_argument_group("data (default: the first run's spec)")
    data.add_argument("--data", help="data set registry name, e.g. synthetic")
    data.add_argument("--domain")
    data.add_argument("--data-root")
    data.add_argument("--image-size", type=int)
    data.add_argument("--train-size", type=int)
    data.add_argument("--test-size", type=int)
    data.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    data.add_argument(
        "--split", choices=("test", "train"), default="test", help="data to evaluate on"
    )
    data.add_argument("--batch-size", type=int, help="default: the run's eval_batch_size, else 256")
    data.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze", help="run one analysis of the paper", description=__doc__.split("\n\n")[1]
    )
    analyses = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    for name, text in HELP.items():
        sub = analyses.add_parser(name, help=text, description=text)
        if name in MODEL_ANALYSES:
            _add_model_options(sub)
        else:
            sub.add_argument("--runs", required=True, metavar="CSV", help="runs.csv of a study")
        sub.add_argument("--out", metavar="FILE.csv", help="write the table here (atomically)")
        sub.set_defaults(handler=run)
    cka, mistakes = analyses.choices["cka"], analyses.choices["mistakes"]
    for sub in (cka, mistakes):
        sub.add_argument(
            "--pair", nargs=3, action="append", metavar=("LABEL", "A", "B"),
            help="a pair of named models (repeatable; default: every pair)",
        )  # fmt: skip
        sub.add_argument("--bootstrap", type=int, default=1000, help="resamples (0: no interval)")
    cka.add_argument("--layers", nargs="+", help="default: conv1 and the four stages")
    distance = analyses.choices["distance"]
    distance.add_argument("--modules", nargs="+", help="default: conv1, each block, the head")
    distance.add_argument("--include-buffers", action="store_true")
    interpolation = analyses.choices["interpolation"]
    interpolation.add_argument("--points", type=int, default=11, help="lambdas from 0 to 1")
    interpolation.add_argument(
        "--bn-mode", choices=("auto", "recompute", "interpolate"), default="auto"
    )
    interpolation.add_argument("--barriers-out", metavar="FILE.csv", help="write the barrier here")
    for sub in (distance, interpolation):
        sub.add_argument("--label", help="pair label (default: NAME_A-NAME_B)")
    criticality = analyses.choices["criticality"]
    criticality.add_argument("--init-epoch", default="0", help="epoch of the init (default 0)")
    criticality.add_argument("--init-weights", metavar="FILE", help="init for a --weights model")
    criticality.add_argument("--modules", nargs="+", help="default: conv1, each block, the head")
    criticality.add_argument("--loss-split", choices=("train", "test"), default="train")
    criticality.add_argument("--alpha-points", type=int, default=11)
    criticality.add_argument("--sigma-points", type=int, default=11)
    criticality.add_argument("--noise-samples", type=int, default=10)
    criticality.add_argument("--tolerance", type=float, default=1.01)
    criticality.add_argument("--seed", type=int, default=0)


def _epoch(text: str) -> int | str:
    if text in ("final", "best"):
        return text
    try:
        return int(text)
    except ValueError:
        raise UserInputError(f"--epoch: expected a number, final or best (got {text!r})") from None


def _names(args: argparse.Namespace, defaults: list[str]) -> list[str]:
    if args.name:
        if len(args.name) != len(defaults):
            raise UserInputError(f"--name: {len(args.name)} names for {len(defaults)} models")
        if len(set(args.name)) != len(args.name):
            raise UserInputError("--name: names must differ")
        return list(args.name)
    names = []
    for name in defaults:
        unique, index = name, 2
        while unique in names:
            unique, index = f"{name}_{index}", index + 1
        names.append(unique)
    return names


def _weights_model(args: argparse.Namespace, path: str):
    from transferlens import models

    if not args.model or args.num_classes is None:
        raise UserInputError("--weights needs --model NAME and --num-classes K")
    model = models.build_model(
        args.model, args.num_classes, **_key_values(args.model_kwarg, "--model-kwarg")
    )
    state = models.load_weights_file(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        reason = " ".join(str(error).split())[:300]
        raise UserInputError(f"{path}: does not fit model {args.model!r} ({reason})") from None
    return model.eval()


def load_models(args: argparse.Namespace) -> dict[str, Any]:
    """Named models of ``--run`` (at ``--epoch``) and ``--weights``, in the given order."""
    from transferlens.train import load_model

    if args.run and args.weights:
        raise UserInputError("give models either as --run folders or as --weights files")
    if args.epoch and len(args.epoch) not in (1, len(args.run)):
        raise UserInputError(f"--epoch: give one, or one per --run ({len(args.run)})")
    epochs = [_epoch(e) for e in args.epoch] or ["final"]
    loaded = []
    for index, run_dir in enumerate(args.run):
        epoch = epochs[index] if len(epochs) > 1 else epochs[0]
        loaded.append((Path(run_dir).name, load_model(run_dir, epoch)))
    for path in args.weights:
        loaded.append((Path(path).stem, _weights_model(args, path)))
    if not loaded:
        raise UserInputError("no models: give --run DIR or --weights FILE")
    names = _names(args, [name for name, _ in loaded])
    return dict(zip(names, (model for _, model in loaded)))


def _data_spec(args: argparse.Namespace):
    from transferlens.data import DataSpec
    from transferlens.validation import validate

    if args.data is not None:
        fields = {
            "name": args.data, "domain": args.domain, "root": args.data_root,
            "image_size": args.image_size, "train_size": args.train_size,
            "test_size": args.test_size, "options": _key_values(args.data_option, "--data-option"),
        }  # fmt: skip
        return validate(
            DataSpec, {k: v for k, v in fields.items() if v is not None}, "--data"
        ), None
    if not args.run:
        raise UserInputError("no data: give --data NAME (and --domain, --data-root) or a --run")
    from transferlens.train import load_run

    record = load_run(args.run[0])
    spec = record.train_spec()
    return spec.data, spec.eval_batch_size


def load_data(args: argparse.Namespace):
    """``(splits, batch_size)``: the data of ``--data`` or of the first run's spec."""
    from transferlens.data import build_data

    spec, run_batch = _data_spec(args)
    batch_size = args.batch_size or run_batch or 256
    if batch_size < 1:
        raise UserInputError(f"--batch-size must be >= 1 (got {batch_size})")
    return build_data(spec), batch_size


def _loader(splits, split: str, batch_size: int, workers: int):
    from torch.utils.data import DataLoader

    if split == "test":
        dataset = splits.test
    else:  # training images without augmentation, as evaluated during training
        dataset = splits.train_eval if splits.train_eval is not None else splits.train
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


def _device(text: str):
    import torch

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"--device: {text!r} requested but CUDA is not available")
    try:
        return torch.device(text)
    except RuntimeError:
        raise UserInputError(f"--device: unknown device {text!r}") from None


def _two(models: dict[str, Any], analysis: str) -> tuple[list[str], list[Any]]:
    if len(models) != 2:
        raise UserInputError(f"{analysis}: needs exactly two models (got {len(models)})")
    return list(models), list(models.values())


def _with_label(frame, label: str):
    return frame.assign(pair=label)[["pair", *frame.columns]]


def _analyse_models(args: argparse.Namespace):
    from transferlens.analysis import distance, interpolation

    name = args.analysis
    if name == "criticality":
        return _criticality(args)
    models = load_models(args)
    if name == "distance":
        names, (a, b) = _two(models, name)
        frame = distance.parameter_distance(
            a, b, modules=args.modules, include_buffers=args.include_buffers
        )
        if frame.attrs["excluded"]:
            print(f"left out (heads of different shapes): {', '.join(frame.attrs['excluded'])}")
        return _with_label(frame, args.label or "-".join(names))
    device = _device(args.device)
    splits, batch_size = load_data(args)
    loader = _loader(splits, args.split, batch_size, args.num_workers)
    if name == "interpolation":
        names, (a, b) = _two(models, name)
        curve = interpolation.interpolation_curve(
            a, b, loader, splits.task, lams=interpolation.lambda_grid(args.points),
            bn_mode=args.bn_mode, device=device,
            train_loader=_loader(splits, "train", batch_size, args.num_workers),
        )  # fmt: skip
        label = args.label or "-".join(names)
        loss_barrier, metric_barrier = interpolation.barrier(curve)
        print(f"{label}: loss barrier {loss_barrier:.6g}, metric barrier {metric_barrier:.6g}")
        if args.barriers_out:
            import pandas as pd

            barriers = pd.DataFrame(
                [(label, loss_barrier, metric_barrier)],
                columns=["pair", "loss_barrier", "metric_barrier"],
            )
            _write(barriers, args.barriers_out)
        return _with_label(curve, label)
    for model in models.values():
        model.to(device)
    pairs = [tuple(pair) for pair in args.pair] if args.pair else None
    if name == "cka":
        from transferlens.analysis.cka_models import cka

        return cka(
            models,
            loader,
            layers=args.layers,
            pairs=pairs,
            n_bootstrap=args.bootstrap,
            device=device,
        ).to_frame()
    from transferlens.analysis.mistake_tables import mistakes

    return mistakes(
        models, pairs, loader=loader, n_bootstrap=args.bootstrap, device=device
    ).to_frame()


def _criticality(args: argparse.Namespace):
    import numpy as np

    from transferlens.analysis import criticality

    if len(args.run) + len(args.weights) != 1:
        raise UserInputError("criticality: give one --run (or one --weights with --init-weights)")
    final = load_models(args)
    if args.run:
        from transferlens.train import load_model

        init = load_model(args.run[0], _epoch(args.init_epoch))
    else:
        if not args.init_weights:
            raise UserInputError("criticality with --weights needs --init-weights FILE")
        init = _weights_model(args, args.init_weights)
    for flag, value in (
        ("--alpha-points", args.alpha_points),
        ("--sigma-points", args.sigma_points),
    ):
        if value < 2:
            raise UserInputError(f"{flag} must be at least 2 (got {value})")
    splits, batch_size = load_data(args)
    frame = criticality.module_criticality(
        next(iter(final.values())), init,
        _loader(splits, args.loss_split, batch_size, args.num_workers), splits.task,
        modules=args.modules, alphas=np.linspace(0.0, 1.0, args.alpha_points),
        sigmas=np.linspace(1e-16, 1.0, args.sigma_points), n_noise=args.noise_samples,
        tolerance=args.tolerance, seed=args.seed, device=_device(args.device),
        metric_loader=_loader(splits, args.split, batch_size, args.num_workers),
    )  # fmt: skip
    passes, full = frame.attrs["n_forward_passes"], frame.attrs["n_full_grid_passes"]
    print(f"forward passes: {passes} of the full grid's {full}")
    return frame


def _runs_table(path: str):
    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"--runs: {file}: file not found")
    try:
        return pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserInputError(
            f"--runs: {file}: not a readable CSV ({type(error).__name__})"
        ) from None


def _write(frame, path: str) -> None:
    from transferlens.io import atomic_write_text

    if not path.endswith(".csv"):
        raise UserInputError(f"--out: expected a .csv file name (got {path!r})")
    atomic_write_text(path, frame.to_csv(index=False))


def run(args: argparse.Namespace) -> int:
    if args.out and not args.out.endswith(".csv"):
        raise UserInputError(f"--out: expected a .csv file name (got {args.out!r})")
    if args.analysis == "reuse":
        from transferlens.analysis.reuse import feature_reuse

        frame = feature_reuse(_runs_table(args.runs))
    elif args.analysis == "pretrain-checkpoints":
        from transferlens.analysis.pretraining import pretrain_checkpoints

        frame = pretrain_checkpoints(_runs_table(args.runs))
    else:
        frame = _analyse_models(args)
    print(frame.to_string(index=False), file=sys.stdout)
    if args.out:
        _write(frame, args.out)
        print(f"wrote {args.out}")
    return 0

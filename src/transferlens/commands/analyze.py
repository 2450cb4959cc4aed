"""``transferlens analyze <analysis>``: one of the paper's analyses on given models or runs.

Models come from run folders (--run DIR, at --epoch: a number, final or best) or
weights files (--weights FILE with --model NAME --num-classes K). Data come from the
first run's spec (its test split unless --split train; data flags change its keys) or
from --data NAME --domain D --data-root DIR. The analyses reuse and pretrain-checkpoints
read a runs.csv table instead. The table is printed and, with --out FILE.csv, written.
Models and data are loaded by transferlens.inputs, as from Python.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from transferlens import inputs
from transferlens.commands.spec_flags import SpecFlags, key_values
from transferlens.data import DataSpec
from transferlens.devices import resolve_device
from transferlens.errors import UserInputError
from transferlens.io import atomic_write_text
from transferlens.results import TABLE_COLUMNS
from transferlens.study.analyses import settings
from transferlens.study.analyses.registry import ANALYSES as REGISTRY
from transferlens.validation import validate

DATA_FLAGS = SpecFlags(DataSpec)


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
    DATA_FLAGS.add_to(data)
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
    for name, (text, _) in ANALYSES.items():
        sub = analyses.add_parser(name, help=text, description=text)
        if name in TABLE_ANALYSES:
            sub.add_argument("--runs", required=True, metavar="CSV", help="runs.csv of a study")
        else:
            _add_model_options(sub)
        sub.add_argument("--out", metavar="FILE.csv", help="write the table here (atomically)")
        sub.set_defaults(handler=run)
    cka, mistakes = analyses.choices["cka"], analyses.choices["mistakes"]
    for sub in (cka, mistakes):
        sub.add_argument(
            "--pair", nargs=3, action="append", metavar=("LABEL", "A", "B"),
            help="a pair of named models (repeatable; default: every pair)",
        )  # fmt: skip
        sub.add_argument("--bootstrap", type=int, default=1000, help="resamples (0: no interval)")
    analyses.choices["criticality"].add_argument(
        "--bootstrap", type=int, default=1000,
        help="resamples of the training examples for criticality_low/high (0: no interval)",
    )  # fmt: skip
    cka.add_argument(
        "--layers",
        nargs="+",
        help="name, name:in or name:out.<key> (default: each stage's output and the "
        "classifier's input, from the module map)",
    )
    cka.add_argument(
        "--permutations",
        type=int,
        default=100,
        help="draws of the permutation null (rows of one model permuted) for cka_p (0: none)",
    )
    cka.add_argument(
        "--tokens",
        choices=("all", "cls", "mean"),
        default="all",
        help="token outputs [N, T, D]: all = flattened, cls = token 0, mean = over tokens",
    )
    distance = analyses.choices["distance"]
    distance.add_argument(
        "--modules",
        nargs="+",
        help="default: the units of the module map (ResNets: conv1, each block, the head)",
    )
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
    criticality.add_argument(
        "--modules",
        nargs="+",
        help="default: the units of the module map (ResNets: conv1, each block, the head)",
    )
    criticality.add_argument("--loss-split", choices=("train", "test"), default="train")
    criticality.add_argument("--alpha-points", type=int, default=11)
    criticality.add_argument("--sigma-points", type=int, default=11)
    criticality.add_argument("--noise-samples", type=int, default=10)
    criticality.add_argument(
        "--definition",
        choices=("epsilon", "reference"),
        default="epsilon",
        help="epsilon: loss bound --epsilon, sigmas log-spaced over --sigma-span times each "
        "module's weight RMS (resolves at convergence); reference: the TensorFlow "
        "reference's --tolerance x final loss, sigmas linspace(1e-16, 1)",
    )
    criticality.add_argument("--epsilon", type=float, default=0.1, help="loss bound (epsilon)")
    criticality.add_argument(
        "--sigma-span", type=float, nargs=2, default=(1e-3, 10.0), metavar=("LOW", "HIGH")
    )
    criticality.add_argument("--tolerance", type=float, default=1.01, help="(reference)")
    criticality.add_argument("--seed", type=int, default=0)


def _epoch(text: str, flag: str = "--epoch") -> inputs.Epoch:
    if text in ("final", "best"):
        return text  # type: ignore[return-value]
    try:
        return int(text)
    except ValueError:
        raise UserInputError(f"{flag}: expected a number, final or best (got {text!r})") from None


def _models(args: argparse.Namespace) -> dict[str, Any]:
    """The named models of ``--run`` (at ``--epoch``) and ``--weights``, in the given order."""
    if args.weights and (not args.model or args.num_classes is None):
        raise UserInputError("--weights needs --model NAME and --num-classes K")
    epochs = [_epoch(text) for text in args.epoch] or ["final"]
    for run_dir in args.run:
        inputs.check_run_folder(run_dir, "--run")
    return inputs.load_models(
        args.run,
        epochs=epochs,
        weights=args.weights,
        model=args.model,
        num_classes=args.num_classes,
        model_kwargs=key_values(args.model_kwarg, "--model-kwarg"),
        names=args.name or None,
    )


def _eval_data(args: argparse.Namespace) -> inputs.EvalData:
    """The data of ``--data`` (and its flags), or the first run's with the data flags applied."""
    run_batch = None
    if DATA_FLAGS.value(args, "name") is not None:
        spec = validate(DataSpec, DATA_FLAGS.apply({}, args), "--data")
    elif args.run:
        spec, run_batch = inputs.run_data(args.run[0])
        if DATA_FLAGS.given(args):
            changed = DATA_FLAGS.apply(spec.model_dump(mode="json"), args)
            spec = validate(DataSpec, changed, f"{args.run[0]} data (with options)")
    else:
        raise UserInputError("no data: give --data NAME (and --domain, --data-root) or a --run")
    batch_size = args.batch_size or run_batch or inputs.DEFAULT_EVAL_BATCH_SIZE
    return inputs.eval_data(spec, batch_size=batch_size, num_workers=args.num_workers)


def _two(models: dict[str, Any], analysis: str) -> tuple[list[str], list[Any]]:
    if len(models) != 2:
        raise UserInputError(f"{analysis}: needs exactly two models (got {len(models)})")
    return list(models), list(models.values())


def _with_label(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    return frame.assign(pair=label)[["pair", *frame.columns]]


def _distance(args: argparse.Namespace) -> pd.DataFrame:
    from transferlens.analysis import parameter_distance

    names, (a, b) = _two(_models(args), "distance")
    result = parameter_distance(a, b, modules=args.modules, include_buffers=args.include_buffers)
    if result.excluded:
        print(f"left out (heads of different shapes): {', '.join(result.excluded)}")
    return _with_label(result.to_frame(), args.label or "-".join(names))


def _interpolation(args: argparse.Namespace) -> pd.DataFrame:
    from transferlens.analysis import barrier, interpolation_curve, lambda_grid

    names, (a, b) = _two(_models(args), "interpolation")
    device = resolve_device(args.device, key="--device")
    data = _eval_data(args)
    curve = interpolation_curve(
        a, b, data.loader(args.split), data.task, lams=lambda_grid(args.points),
        bn_mode=args.bn_mode, device=device, train_loader=data.loader("train"),
    )  # fmt: skip
    label = args.label or "-".join(names)
    loss_barrier, metric_barrier = barrier(curve)
    print(f"{label}: loss barrier {loss_barrier:.6g}, metric barrier {metric_barrier:.6g}")
    if args.barriers_out:
        columns = [c for c in TABLE_COLUMNS["barriers"] if c != "target"]
        _write(pd.DataFrame([(label, loss_barrier, metric_barrier)], columns=columns),
               args.barriers_out)  # fmt: skip
    return _with_label(curve.to_frame(), label)


def _cka_or_mistakes(args: argparse.Namespace) -> pd.DataFrame:
    models = _models(args)
    device = resolve_device(args.device, key="--device")
    loader = _eval_data(args).loader(args.split)
    for model in models.values():
        model.to(device)
    pairs = [tuple(pair) for pair in args.pair] if args.pair else None
    if args.analysis == "cka":
        from transferlens.analysis import cka_many

        return cka_many(
            models, loader, layers=args.layers, pairs=pairs, n_bootstrap=args.bootstrap,
            n_permutations=args.permutations, tokens=args.tokens, device=device,
        ).to_frame()  # fmt: skip
    from transferlens.analysis import mistakes

    return mistakes(
        models, pairs, loader=loader, n_bootstrap=args.bootstrap, device=device
    ).to_frame()


def _criticality(args: argparse.Namespace) -> pd.DataFrame:
    from transferlens.analysis import criticality_grid, module_criticality
    from transferlens.analysis.criticality_definition import relative_sigma_grid
    from transferlens.train import load_model

    if len(args.run) + len(args.weights) != 1:
        raise UserInputError("criticality: give one --run (or one --weights with --init-weights)")
    final = next(iter(_models(args).values()))
    if args.run:
        init = load_model(args.run[0], _epoch(args.init_epoch, "--init-epoch"))
    elif args.init_weights:
        init = inputs.load_weights_model(
            args.init_weights, args.model, args.num_classes,
            key_values(args.model_kwarg, "--model-kwarg"),
        )  # fmt: skip
    else:
        raise UserInputError("criticality with --weights needs --init-weights FILE")
    for flag, value in (
        ("--alpha-points", args.alpha_points),
        ("--sigma-points", args.sigma_points),
    ):
        if value < 2:
            raise UserInputError(f"{flag} must be at least 2 (got {value})")
    data = _eval_data(args)
    alphas, sigmas = criticality_grid(args.alpha_points, args.sigma_points)
    if args.definition == "epsilon":
        sigmas = relative_sigma_grid(args.sigma_points, args.sigma_span)
    result = module_criticality(
        final, init, data.loader(args.loss_split), data.task,
        modules=args.modules, alphas=alphas, sigmas=sigmas, n_noise=args.noise_samples,
        definition=args.definition, epsilon=args.epsilon, tolerance=args.tolerance,
        seed=args.seed, device=resolve_device(args.device, key="--device"),
        metric_loader=data.loader(args.split), n_bootstrap=args.bootstrap,
    )  # fmt: skip
    print(
        f"forward passes: {result.n_forward_passes} of the full grid's {result.n_full_grid_passes}"
    )
    return result.to_frame()


def _reuse(args: argparse.Namespace) -> pd.DataFrame:
    from transferlens.analysis import feature_reuse

    return feature_reuse(inputs.read_runs_table(args.runs)).to_frame()


def _pretrain_checkpoints(args: argparse.Namespace) -> pd.DataFrame:
    from transferlens.analysis import pretrain_checkpoints

    return pretrain_checkpoints(inputs.read_runs_table(args.runs)).to_frame()


# The command of each analysis of the registry (keyed by its settings model, so that the
# names are written once, in transferlens.study.analyses.registry).
RUNNERS: dict[type, Callable[[argparse.Namespace], pd.DataFrame]] = {
    settings.ReuseSettings: _reuse,
    settings.PretrainCheckpointsSettings: _pretrain_checkpoints,
    settings.MistakesSettings: _cka_or_mistakes,
    settings.CkaSettings: _cka_or_mistakes,
    settings.DistanceSettings: _distance,
    settings.InterpolationSettings: _interpolation,
    settings.CriticalitySettings: _criticality,
}


def command_name(analysis: str) -> str:
    """The subcommand of a registry name (``pretrain_checkpoints`` -> ``pretrain-checkpoints``)."""
    return analysis.replace("_", "-")


# subcommand -> (help, function of the parsed arguments returning the table)
ANALYSES: dict[str, tuple[str, Callable[[argparse.Namespace], pd.DataFrame]]] = {
    command_name(name): (analysis.title, RUNNERS[analysis.settings])
    for name, analysis in REGISTRY.items()
}
# Analyses of a runs.csv table; every other analysis runs on models and data.
TABLE_ANALYSES = tuple(
    command_name(name) for name, analysis in REGISTRY.items() if analysis.reads_runs_table
)


def _write(frame: pd.DataFrame, path: str) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def _check_writable(path: str, option: str) -> None:
    """Fail before the analysis, not after it, when ``path`` cannot be written: its
    nearest existing folder must take a new file (tried, since ``os.access`` says yes to
    root on a read-only mount)."""
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise UserInputError(f"{option}: {path} is a folder, not a file")
    folder = next(parent for parent in target.parents if parent.exists())
    if not folder.is_dir():
        raise UserInputError(f"{option}: cannot write {path} ({folder} is a file)")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserInputError(
            f"{option}: cannot write {path} in {folder} ({error.strerror})"
        ) from None


def run(args: argparse.Namespace) -> int:
    for flag in ("out", "barriers_out"):
        path = getattr(args, flag, None)
        option = "--" + flag.replace("_", "-")
        if path and not path.endswith(".csv"):
            raise UserInputError(f"{option}: expected a .csv file name (got {path!r})")
        if path:
            _check_writable(path, option)
    _, analysis = ANALYSES[args.analysis]
    frame = analysis(args)
    print(frame.to_string(index=False))
    if args.out:
        _write(frame, args.out)
        print(f"wrote {args.out}")
    return 0

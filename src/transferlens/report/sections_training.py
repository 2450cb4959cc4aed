"""Report sections about training: P-T vs RI-T (Fig. 2), block shuffling (Fig. 3) and the
choice of pre-training checkpoint (Fig. 7)."""

from __future__ import annotations

import pandas as pd

from transferlens.report.blocks import NoteBlock, Section, SectionContext, SectionKind, TableBlock
from transferlens.report.figures import (
    INIT_LABELS,
    has_seed_intervals,
    plot_learning_curves,
    plot_pretrain_checkpoints,
    plot_reuse,
)
from transferlens.report.formatting import (
    block_label,
    block_sort_key,
    format_metric,
    format_metric_interval,
    format_percent_interval,
    has_values,
)
from transferlens.results import (
    BLOCK_SHUFFLE_GROUP,
    INITS,
    has_groups,
    main_runs,
    runs_in_group,
)

SEED_INTERVAL = "95% t-interval of the mean across seeds"
RUN_INTERVALS = (
    "final: 95% bootstrap over the test examples; speed: 95% bootstrap over the train-eval "
    "examples, one resample for every epoch"
)
RUN_INTERVAL_COLUMNS = (
    "final_test_metric_low",
    "final_test_metric_high",
    "optimization_speed_low",
    "optimization_speed_high",
)
GAP_INTERVAL = (
    "the relative gap's 95% interval is the delete-one-run jackknife over the runs of both arms"
)


def _spread(values: pd.Series, task: str) -> str:
    """``mean (min-max, n=runs)`` of the runs' metric, or ``n/a``."""
    values = values.dropna()
    if values.empty:
        return "n/a"
    mean = format_metric(values.mean(), task)
    if len(values) == 1:
        return f"{mean} (1 run)"
    low, high = format_metric(values.min(), task), format_metric(values.max(), task)
    return f"{mean} ({low}\u2013{high}, n={len(values)})"


def learning_curves_frame(epochs: pd.DataFrame | None, main: pd.DataFrame) -> pd.DataFrame:
    """target, init, run_id, epoch, test_metric of the main runs, from epochs.csv."""
    columns = ["target", "init", "run_id", "epoch", "test_metric"]
    if epochs is None:
        return pd.DataFrame(columns=columns)
    curves = epochs[["run_id", "epoch", "test_metric"]].dropna(subset=["epoch", "test_metric"])
    curves = curves.merge(main[["run_id", "target", "init"]], on="run_id", how="inner")
    return curves.astype({"epoch": int, "test_metric": float})[columns]


def _fill_training(ctx: SectionContext, section: Section) -> None:
    runs = ctx.results.tables["runs"]
    main = main_runs(runs)
    if main.empty:
        section.blocks.append(
            NoteBlock("runs.csv has no unshuffled P-T or RI-T target run.", "warn")
        )
        return
    curves = learning_curves_frame(ctx.results.get("epochs"), main)
    targets = ctx.targets_in(curves)
    if targets:
        section.blocks.append(
            ctx.figure(
                plot_learning_curves(curves, targets, ctx.tasks),
                "learning_curves",
                "Test metric vs epoch, P-T (blue) and RI-T (orange); lines are the mean over "
                "seeds, bands span the runs' minimum to maximum.",
            )
        )
    else:
        section.blocks.append(
            NoteBlock(
                "results/epochs.csv is missing or has no epoch of these runs, so no learning "
                "curve is drawn.",
                "warn",
            )
        )
    rows = []
    for target in ctx.targets:
        task = ctx.tasks[target]
        pt = main[(main["target"] == target) & (main["init"] == "PT")]
        rit = main[(main["target"] == target) & (main["init"] == "RIT")]
        if pt.empty and rit.empty:
            continue
        gap = "n/a"
        pt_mean, rit_mean = pt["final_test_metric"].mean(), rit["final_test_metric"].mean()
        if pd.notna(pt_mean) and pd.notna(rit_mean) and pt_mean:
            gap = f"{100.0 * (pt_mean - rit_mean) / pt_mean:.1f}%"
        rows.append(
            [
                target,
                _spread(pt["final_test_metric"], task),
                _spread(rit["final_test_metric"], task),
                gap,
                _spread(pt["best_test_metric"], task),
                _spread(rit["best_test_metric"], task),
                f"{format_metric(pt['optimization_speed'].mean(), task)} / "
                f"{format_metric(rit['optimization_speed'].mean(), task)}",
            ]
        )
    section.blocks.append(
        TableBlock(
            "Final and best test metric (mean over seeds, range), relative gap "
            "100 (P-T - RI-T) / P-T of the final means, optimisation speed P-T / RI-T.",
            [
                "target",
                "P-T final",
                "RI-T final",
                "relative gap",
                "P-T best",
                "RI-T best",
                "speed P-T / RI-T",
            ],
            rows,
        )
    )
    if has_run_intervals(main):
        section.blocks.append(
            TableBlock(
                f"Each run's final test metric and optimisation speed [{RUN_INTERVALS}; "
                "results/runs.csv].",
                ["target", "init", "seed", "final test", "optimisation speed"],
                run_interval_rows(main, ctx.targets, ctx.tasks),
            )
        )


def has_run_intervals(runs: pd.DataFrame | None) -> bool:
    """Does runs.csv carry the runs' own intervals (absent from older study folders)?"""
    return has_values(runs, *RUN_INTERVAL_COLUMNS)


def run_interval_rows(
    main: pd.DataFrame, targets: list[str], tasks: dict[str, str]
) -> list[list[str]]:
    """One row per main run: target, P-T or RI-T, seed, final test metric and optimisation
    speed, each with its interval from runs.csv (the value alone where it has none)."""
    rows = []
    for target in targets:
        task = tasks[target]
        runs = main[main["target"] == target].sort_values(["init", "seed"])
        for run in runs.itertuples(index=False):
            rows.append(
                [
                    target,
                    INIT_LABELS.get(run.init, str(run.init)),
                    str(run.seed),
                    format_metric_interval(
                        run.final_test_metric, run.final_test_metric_low,
                        run.final_test_metric_high, task,
                    ),
                    format_metric_interval(
                        run.optimization_speed, run.optimization_speed_low,
                        run.optimization_speed_high, task,
                    ),
                ]
            )  # fmt: skip
    return rows


def _interval(row: pd.Series, column: str) -> tuple[object, object, object]:
    """``(value, low, high)`` of ``column`` with its interval across seeds (NaN bounds when
    the table has none)."""
    low, high = f"{column}_seeds_low", f"{column}_seeds_high"
    return row[column], row.get(low, float("nan")), row.get(high, float("nan"))


def _reuse_rows(reuse: pd.DataFrame, targets: list[str], tasks: dict[str, str]) -> list[list[str]]:
    """Per target and block size (unshuffled last): the means over seeds of reuse.csv, each
    with its interval across seeds where the table has one."""
    rows = []
    for target in targets:
        task = tasks[target]
        table = reuse[reuse["target"] == target]
        grouped = table.groupby(table["block_size"].fillna(-1)).mean(numeric_only=True)
        for key in sorted(grouped.index, key=lambda k: block_sort_key(None if k == -1 else k)):
            row = grouped.loc[key]
            rows.append(
                [
                    target,
                    block_label(None if key == -1 else key),
                    format_metric_interval(*_interval(row, "metric_pt"), task),
                    format_metric_interval(*_interval(row, "metric_rit"), task),
                    format_percent_interval(*_interval(row, "relative_gap")),
                    format_metric_interval(*_interval(row, "speed_pt"), task),
                    format_metric_interval(*_interval(row, "speed_rit"), task),
                ]
            )
    return rows


def reuse_seed_runs(runs: pd.DataFrame | None) -> pd.DataFrame | None:
    """The finished runs reuse.csv averages, one row per seed (target, init, block_size,
    final_test_metric, optimization_speed and, where runs.csv has them, their intervals
    ``<column>_low/_high``), for the figure's dots: the block-shuffle
    sweep's runs of runs.csv, or its main runs in a study without a sweep (the rule of
    :func:`transferlens.analysis.feature_reuse`). None for a runs table without the
    runner's ``groups`` column (a hand-made table: no dots)."""
    if runs is None or not has_groups(runs):
        return None
    chosen = runs_in_group(runs, BLOCK_SHUFFLE_GROUP)
    if chosen.empty:
        chosen = main_runs(runs)
    chosen = chosen[(chosen["kind"] == "target") & chosen["init"].isin(INITS)]
    chosen = chosen[pd.to_numeric(chosen["final_test_metric"], errors="coerce").notna()]
    columns = ["target", "init", "block_size", "final_test_metric", "optimization_speed"]
    if has_run_intervals(chosen):  # each dot's own interval (the figure's thin bars)
        columns += list(RUN_INTERVAL_COLUMNS)
    return chosen[columns]


def _fill_reuse(ctx: SectionContext, section: Section) -> None:
    reuse = ctx.results.tables["reuse"]
    targets = ctx.targets_in(reuse)
    seeds = reuse_seed_runs(ctx.results.get("runs"))
    intervals = has_seed_intervals(reuse, "metric_pt")
    bars = (
        f"Error bars: the {SEED_INTERVAL} (reuse.csv)."
        if intervals
        else "Error bars span the seeds when there are several."
    )
    dots = " Dots: each seed's run (runs.csv)." if seeds is not None and not seeds.empty else ""
    if dots and has_run_intervals(seeds):
        dots = (
            " Dots: each seed's run (runs.csv), with a thin bar for its own interval "
            f"({RUN_INTERVALS})."
        )
    caption = (
        "Left: final test metric of P-T and RI-T per block size, the relative gap printed over "
        f"each pair. Right: optimisation speed. {bars}{dots}"
    )
    section.blocks.append(
        ctx.figure(plot_reuse(reuse, targets, ctx.tasks, seeds), "block_shuffling", caption)
    )
    header = ["target", "block size", "P-T final", "RI-T final", "relative gap", "P-T speed",
              "RI-T speed"]  # fmt: skip
    rows = _reuse_rows(reuse, targets, ctx.tasks)
    title = "Block shuffling (mean over seeds)."
    if intervals:
        title = (
            f"Block shuffling (mean over seeds) [{SEED_INTERVAL}; {GAP_INTERVAL}; none with "
            "one seed in an arm]."
        )
    section.blocks.append(TableBlock(title, header, rows))


def _pretrain_rows(
    table: pd.DataFrame, targets: list[str], tasks: dict[str, str]
) -> list[list[str]]:
    """Per target and pre-training epoch: the means over seeds (each with its interval
    across seeds where the table has one) and the number of runs."""
    rows = []
    for target in targets:
        grouped = table[table["target"] == target].groupby("pretrain_epoch")
        means = grouped.mean(numeric_only=True).sort_index()
        for epoch, row in means.iterrows():
            task = tasks[target]
            rows.append(
                [
                    target,
                    str(epoch),
                    format_metric_interval(*_interval(row, "final_test_metric"), task),
                    format_metric_interval(*_interval(row, "optimization_speed"), task),
                    str(_run_count(grouped.get_group(epoch))),
                ]
            )
    return rows


def _run_count(rows: pd.DataFrame) -> int:
    """The runs behind one epoch: the table's ``n`` where it has one (a study's table, one
    row per epoch), else its rows (a hand-made table, one row per run)."""
    if "n" in rows.columns and rows["n"].notna().all():
        return int(rows["n"].sum())
    return len(rows)


def _fill_pretrain(ctx: SectionContext, section: Section) -> None:
    table = ctx.results.tables["pretrain_checkpoints"]
    targets = ctx.targets_in(table)
    figure = plot_pretrain_checkpoints(table, targets, ctx.tasks)
    intervals = has_seed_intervals(table, "final_test_metric")
    spread = (
        f"error bars are the {SEED_INTERVAL} (pretrain_checkpoints.csv)"
        if intervals
        else "bands span the seeds when there are several"
    )
    caption = (
        "Final test metric (blue) and optimisation speed (green) of P-T vs the pre-training "
        f"epoch it started from; {spread}."
    )
    section.blocks.append(ctx.figure(figure, "pretrain_checkpoints", caption))
    title = "Fine-tuning from pre-training checkpoints (mean over seeds)."
    if intervals:
        title = f"Fine-tuning from pre-training checkpoints (mean over seeds) [{SEED_INTERVAL}]."
    section.blocks.append(
        TableBlock(
            title,
            ["target", "pre-training epoch", "final test", "optimisation speed", "runs"],
            _pretrain_rows(table, targets, ctx.tasks),
        )
    )


TRAINING = SectionKind(
    "training",
    "P-T vs RI-T: learning curves",
    "Test metric per epoch of the pre-trained model fine-tuned on each target (P-T) and of "
    "the same network trained from a random initialisation (RI-T), on unshuffled images "
    "(paper Fig. 2). Targets run from the closest to the source to the farthest.",
    tables=("runs",),
    fill=_fill_training,
)

REUSE = SectionKind(
    "reuse",
    "Feature reuse: block shuffling",
    "Images cut into b x b blocks permuted by one fixed permutation ('pixel' = all values "
    "permuted, 'none' = unshuffled). Relative gap = 100 (P-T - RI-T) / P-T; optimisation "
    "speed = mean training metric (evaluation mode) over all epochs (paper Fig. 3).",
    tables=("reuse",),
    fill=_fill_reuse,
)

PRETRAIN = SectionKind(
    "pretrain",
    "Which pre-training checkpoint to fine-tune from",
    "P-T started from P's checkpoint after k epochs of pre-training (k = 0: P's random "
    "init): final test metric and optimisation speed on each target (paper Fig. 7).",
    tables=("pretrain_checkpoints",),
    fill=_fill_pretrain,
)

"""Report sections about training: P-T vs RI-T (Fig. 2), block shuffling (Fig. 3) and the
choice of pre-training checkpoint (Fig. 7)."""

from __future__ import annotations

import pandas as pd

from transferlens.io import read_jsonl
from transferlens.report.blocks import NoteBlock, Section, SectionContext, TableBlock
from transferlens.report.figures import (
    plot_learning_curves,
    plot_pretrain_checkpoints,
    plot_reuse,
)
from transferlens.report.formatting import block_label, block_sort_key, format_metric
from transferlens.report.tables import main_target_runs


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


def learning_curves_frame(ctx: SectionContext, main: pd.DataFrame) -> pd.DataFrame:
    """target, init, run_id, epoch, test_metric of the main runs, from their metrics.jsonl."""
    records = []
    for row in main.itertuples(index=False):
        path = ctx.results.study_dir / "runs" / str(row.run_id) / "metrics.jsonl"
        for record in read_jsonl(path):
            if "epoch" in record and record.get("test_metric") is not None:
                records.append(
                    {
                        "target": row.target,
                        "init": row.init,
                        "run_id": row.run_id,
                        "epoch": int(record["epoch"]),
                        "test_metric": float(record["test_metric"]),
                    }
                )
    return pd.DataFrame.from_records(
        records, columns=["target", "init", "run_id", "epoch", "test_metric"]
    )


def training_section(ctx: SectionContext) -> Section:
    section = Section(
        "training",
        "P-T vs RI-T: learning curves",
        "Test metric per epoch of the pre-trained model fine-tuned on each target (P-T) and of "
        "the same network trained from a random initialisation (RI-T), on unshuffled images "
        "(paper Fig. 2). Targets run from the closest to the source to the farthest.",
    )
    runs = ctx.results.get("runs")
    if runs is None:
        return ctx.not_run_section(section, "runs")
    main = main_target_runs(runs)
    if main.empty:
        section.blocks.append(
            NoteBlock("runs.csv has no unshuffled P-T or RI-T target run.", "warn")
        )
        return section
    curves = learning_curves_frame(ctx, main)
    targets = [t for t in ctx.targets if (curves["target"] == t).any()]
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
                "No runs/<run_id>/metrics.jsonl was found, so no learning curve is drawn.", "warn"
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
    return section


def reuse_section(ctx: SectionContext) -> Section:
    section = Section(
        "reuse",
        "Feature reuse: block shuffling",
        "Images cut into b x b blocks permuted by one fixed permutation ('pixel' = all values "
        "permuted, 'none' = unshuffled). Relative gap = 100 (P-T - RI-T) / P-T; optimisation "
        "speed = mean training metric (evaluation mode) over all epochs (paper Fig. 3).",
    )
    reuse = ctx.results.get("reuse")
    if reuse is None:
        return ctx.not_run_section(section, "reuse")
    targets = [t for t in ctx.targets if (reuse["target"] == t).any()]
    section.blocks.append(
        ctx.figure(
            plot_reuse(reuse, targets, ctx.tasks),
            "block_shuffling",
            "Left: final test metric of P-T and RI-T per block size, the relative gap printed "
            "over each pair. Right: optimisation speed. Error bars span the seeds when there "
            "are several.",
        )
    )
    rows = []
    for target in targets:
        task = ctx.tasks[target]
        table = reuse[reuse["target"] == target]
        grouped = table.groupby(table["block_size"].fillna(-1)).mean(numeric_only=True)
        for key in sorted(grouped.index, key=lambda k: block_sort_key(None if k == -1 else k)):
            row = grouped.loc[key]
            rows.append(
                [
                    target,
                    block_label(None if key == -1 else key),
                    format_metric(row["metric_pt"], task),
                    format_metric(row["metric_rit"], task),
                    f"{row['relative_gap']:.1f}%",
                    format_metric(row["speed_pt"], task),
                    format_metric(row["speed_rit"], task),
                ]
            )
    section.blocks.append(
        TableBlock(
            "Block shuffling (mean over seeds).",
            [
                "target",
                "block size",
                "P-T final",
                "RI-T final",
                "relative gap",
                "P-T speed",
                "RI-T speed",
            ],
            rows,
        )
    )
    return section


def pretrain_section(ctx: SectionContext) -> Section:
    section = Section(
        "pretrain",
        "Which pre-training checkpoint to fine-tune from",
        "P-T started from P's checkpoint after k epochs of pre-training (k = 0: P's random "
        "init): final test metric and optimisation speed on each target (paper Fig. 7).",
    )
    table = ctx.results.get("pretrain_checkpoints")
    if table is None:
        return ctx.not_run_section(section, "pretrain_checkpoints")
    targets = [t for t in ctx.targets if (table["target"] == t).any()]
    section.blocks.append(
        ctx.figure(
            plot_pretrain_checkpoints(table, targets, ctx.tasks),
            "pretrain_checkpoints",
            "Final test metric (blue) and optimisation speed (green) of P-T vs the pre-training "
            "epoch it started from; bands span the seeds when there are several.",
        )
    )
    rows = []
    for target in targets:
        task = ctx.tasks[target]
        grouped = table[table["target"] == target].groupby("pretrain_epoch")
        means = grouped[["final_test_metric", "optimization_speed"]].mean().sort_index()
        for epoch, row in means.iterrows():
            rows.append(
                [
                    target,
                    str(epoch),
                    format_metric(row["final_test_metric"], task),
                    format_metric(row["optimization_speed"], task),
                    str(int(grouped.size()[epoch])),
                ]
            )
    section.blocks.append(
        TableBlock(
            "Fine-tuning from pre-training checkpoints (mean over seeds).",
            ["target", "pre-training epoch", "final test", "optimisation speed", "runs"],
            rows,
        )
    )
    return section

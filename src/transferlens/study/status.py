"""Text summaries of a study: its plan (``transferlens plan``) and its state (``status``).

Both read only the study folder's files, so they are safe to run while runners work.
``status`` flags a study whose runs were trained in different environments (CPU
threads, device, torch version: :mod:`transferlens.train.environment`), whose numbers
are then not comparable bit for bit.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from transferlens.results import table_path
from transferlens.study.analyses.registry import ANALYSES
from transferlens.study.plan import GROUPS, Plan, RunMeta
from transferlens.study.store import STATES, StudyStore
from transferlens.train import run_dir as run_folder
from transferlens.train.environment import Environment


def _arm(meta: RunMeta) -> str:
    return "P (source)" if meta.kind == "source" else "P-T" if meta.init == "PT" else "RI-T"


def plan_summary(plan: Plan, store: StudyStore, *, list_runs: bool = False) -> str:
    """Runs by arm and target, by group, and the total with how many are complete."""
    complete = {run.run_id for run in plan if store.is_complete(run.run_id)}
    rows: Counter[tuple[str, str]] = Counter()
    done: Counter[tuple[str, str]] = Counter()
    for run in plan:
        key = (_arm(run.meta), run.meta.target)
        rows[key] += 1
        done[key] += run.run_id in complete
    lines = [
        f"study {plan.study.name}: {len(plan)} runs ({len(complete)} complete) -> {store.root}"
    ]
    lines.append(f"  {'arm':<11} {'target':<16} {'runs':>5} {'complete':>9}")
    for (arm, target), count in rows.items():
        lines.append(f"  {arm:<11} {target:<16} {count:>5} {done[(arm, target)]:>9}")
    lines.append(f"  {'total':<28} {len(plan):>5} {len(complete):>9}")
    groups: Counter[str] = Counter(group for run in plan for group in run.meta.groups)
    shown = [f"{group} {groups[group]}" for group in GROUPS if groups[group]]
    lines.append("  by sweep (a run may serve several): " + ", ".join(shown))
    epochs = sum(run.epochs for run in plan if run.run_id not in complete)
    lines.append(f"  training epochs left: {epochs}")
    threads = plan.study.threads_per_run
    lines.append(
        f"  each run: {threads} CPU thread{'s' if threads != 1 else ''}, "
        f"checkpoints kept: {plan.study.keep_checkpoints}"
    )
    analyses = ", ".join(plan.study.analyses) or "none"
    lines.append(f"  analyses: {analyses}")
    if list_runs:
        lines.append("")
        for run in plan:
            state = "complete" if run.run_id in complete else ""
            after = (
                f" after {run.depends_on.run_id}@{run.depends_on.epoch}" if run.depends_on else ""
            )
            lines.append(
                f"  {run.run_id}  {run.meta.describe():<40} {run.epochs:>4} ep{after}  {state}"
            )
    return "\n".join(lines)


def study_status(store: StudyStore) -> str:
    """Runs by state (running with their epoch, failed with their error), analyses, report."""
    data = store.read_study()
    planned = store.planned_runs()
    states = {run_id: store.state(run_id) for run_id, _, _ in planned}
    counts = Counter(states.values())
    lines = [f"study {data.get('name')}: {len(planned)} runs in {store.root}"]
    for state in STATES:
        lines.append(f"  {state:<9} {counts.get(state, 0):>5}")
        if state == "running":
            for run_id, meta, _ in planned:
                if states[run_id] == "running":
                    epoch = store.last_epoch(run_id)
                    shown = "starting" if epoch is None else f"epoch {epoch}"
                    lines.append(f"    {run_id}  {meta.describe()}  ({shown})")
        if state == "failed":
            for run_id, meta, _ in planned:
                if states[run_id] == "failed":
                    error = (store.failure(run_id) or {}).get("error", "")
                    lines.append(f"    {run_id}  {meta.describe()}: {error}")
    by_arm: Counter[str] = Counter()
    by_arm_done: Counter[str] = Counter()
    for run_id, meta, _ in planned:
        by_arm[_arm(meta)] += 1
        by_arm_done[_arm(meta)] += states[run_id] == "complete"
    lines.append(
        "  by arm: " + ", ".join(f"{arm} {by_arm_done[arm]}/{n}" for arm, n in by_arm.items())
    )
    known = {run_id for run_id, _, _ in planned}
    strays = [p.name for p in store.runs_dir.glob("*") if p.is_dir() and p.name not in known]
    if strays:
        lines.append(f"  {len(strays)} run folder(s) not in the current plan (an earlier version)")
    lines.extend(environment_lines(store, [run_id for run_id, _, _ in planned]))
    lines.extend(_analyses_lines(store, list(data.get("study", {}).get("analyses") or {})))
    return "\n".join(lines)


def environment_lines(store: StudyStore, run_ids: list[str]) -> list[str]:
    """Where the started runs were trained: one line if in one environment, else a
    warning with the runs per environment (a resumed run may count in several)."""
    runs_per: Counter[Environment] = Counter()
    unrecorded = 0
    resumed_elsewhere = []
    for run_id in run_ids:
        folder = store.run_dir(run_id)
        if not (folder / run_folder.SPEC_FILE).is_file():
            continue  # not started
        environments = run_folder.run_environments(folder)
        if not environments:
            unrecorded += 1
        if len(environments) > 1:
            resumed_elsewhere.append(run_id)
        runs_per.update(environments)
    lines = []
    if len(runs_per) == 1:
        lines.append(f"  environment: {next(iter(runs_per)).describe()}")
    elif runs_per:
        lines.append(
            "  WARNING: runs trained in different environments (their numbers are not "
            "comparable bit for bit; see docs/architecture.md, What is bit-reproducible):"
        )
        for environment, count in runs_per.most_common():
            lines.append(f"    {count:>5} run(s): {environment.describe()}")
        for run_id in resumed_elsewhere:
            lines.append(f"    {run_id} was resumed in another environment")
    if unrecorded:
        lines.append(f"  {unrecorded} run(s) recorded no environment (trained before it was)")
    return lines


def _analyses_lines(store: StudyStore, requested: list[str]) -> list[str]:
    state = store.analyses_state()
    if not requested:
        return ["  analyses: none requested", f"  report: {_report_line(store)}"]
    if state is None:
        line = "not run yet (they run once every run is complete)"
    else:
        line = state["state"] + (f": {state['detail']}" if state.get("detail") else "")
        line += f" ({state.get('time', '')})"
    lines = [f"  analyses: {line}"]
    present = []
    missing = []
    for name in requested:
        tables = ANALYSES[name].tables if name in ANALYSES else (name,)
        if all(table_path(store.results_dir, table).is_file() for table in tables):
            present.append(name)
        else:
            missing.append(name)
    if requested:
        lines.append(
            f"    tables: {len(present)}/{len(requested)} written"
            + (f" (missing: {', '.join(missing)})" if missing else "")
        )
    runs_csv = store.results_dir / "runs.csv"
    lines.append(f"    runs.csv: {'written' if runs_csv.is_file() else 'not written yet'}")
    lines.append(f"  report: {_report_line(store)}")
    return lines


def _report_line(store: StudyStore) -> str:
    report = Path(store.root) / "report" / "index.html"
    return str(report) if report.is_file() else "not written yet"

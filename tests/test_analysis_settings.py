"""A study's ``analyses:`` settings are typed and checked before any work starts."""

from __future__ import annotations

import pytest

from conftest import TINY_STUDY
from transferlens.cli import main
from transferlens.study import load_study
from transferlens.study.analyses import ANALYSES, ANALYSIS_NAMES
from transferlens.study.analyses.run import fingerprint, requested_analyses
from transferlens.study.plan import plan_study
from transferlens.study.spec import StudySpec

# The settings every study has run with so far: a changed default changes the results.
DEFAULTS = {
    "reuse": {},
    "pretrain_checkpoints": {},
    "mistakes": {"n_bootstrap": 1000, "examples_per_cell": 12},
    "cka": {
        "layers": None,
        "n_bootstrap": 200,
        "n_permutations": 100,
        "max_examples": None,
        "matrix": True,
        "tokens": "all",
    },
    "distance": {},
    "interpolation": {
        "points": 11,
        "max_examples": None,
        "align": ["none"],
        "repair": False,
        "n_bootstrap": 200,
    },
    "criticality": {
        "definition": "epsilon",
        "epsilon": 0.1,
        "sigma_span": (0.001, 10.0),
        "n_noise": 10,
        "tolerance": 1.01,
        "alphas": 11,
        "sigmas": 11,
        "seeds": "all",  # "first" before #16: a changed default recomputes old studies
        "n_bootstrap": 1000,
        "max_examples": 1024,
        "path_points": 6,
        "path_sigmas": [0.0, 0.05, 0.1, 0.2],
        "path_module": None,  # the module map's first unit: conv1 for a ResNet
    },
}


def test_registry_order_and_defaults_are_the_ones_results_depend_on():
    assert tuple(DEFAULTS) == ANALYSIS_NAMES  # the run order: analyses share one seeded RNG
    for name, defaults in DEFAULTS.items():
        assert ANALYSES[name].settings().model_dump() == defaults, name


@pytest.mark.parametrize(
    "analyses, words",
    [
        ({"criticality": {"n_noize": 3}}, ["analyses.criticality.n_noize: unknown key"]),
        ({"criticality": {"n_noise": "x"}}, ["analyses.criticality.n_noise", "'x'"]),
        ({"cka": {"layers": "conv1"}}, ["analyses.cka.layers"]),
        ({"foo": {}}, ["analyses: unknown analysis 'foo'", "known: reuse, "]),
    ],
)
@pytest.mark.parametrize("command", ["plan", "run"])
def test_bad_settings_are_refused_before_any_work(
    tmp_path, capsys, study_file, analyses, words, command
):
    path = study_file(analyses=analyses)
    out = tmp_path / "out"
    assert main([command, str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    assert not out.exists()  # nothing was planned into a folder, nothing trained


def test_null_or_empty_settings_mean_the_defaults(study_file):
    study = load_study(study_file(analyses={"cka": None, "distance": {}, "mistakes": {}}))
    assert set(study.analyses) == {"cka", "distance", "mistakes"}
    assert study.analyses["cka"] == ANALYSES["cka"].settings()
    assert study.analyses["mistakes"].n_bootstrap == 1000
    planned = [name for name, _ in requested_analyses(plan_study(study))]
    assert planned == ["mistakes", "cka", "distance"]  # the registry's order, not the file's


def test_settings_round_trip_through_study_json():
    study = StudySpec.model_validate({**TINY_STUDY, "analyses": {"criticality": {"n_noise": 3}}})
    again = StudySpec.model_validate(study.model_dump(mode="json"))
    assert again.analyses == study.analyses
    assert again.analyses["criticality"].n_noise == 3


class _Context:
    """What the fingerprint reads of a study context: its plan, which runs are complete
    and which of them are the models' runs (P and the main runs)."""

    def __init__(self, plan, complete=(), model_runs=()):
        self.plan = plan
        done = set(complete)
        self.store = type("Store", (), {"is_complete": staticmethod(lambda r: r in done)})()
        self._model_runs = sorted(model_runs)

    def model_runs(self):
        return self._model_runs


def test_fingerprint_follows_the_settings():
    def stamp(settings):
        study = StudySpec.model_validate({**TINY_STUDY, "analyses": {"criticality": settings}})
        plan = plan_study(study)
        (name, given), *_ = requested_analyses(plan)
        return fingerprint(_Context(plan), name, given)

    assert stamp({}) == stamp(None) == stamp({"n_noise": 10})
    assert stamp({"n_noise": 3}) != stamp({})


def test_a_sweep_run_finishing_recomputes_the_runs_table_analyses_only():
    study = StudySpec.model_validate({**TINY_STUDY, "analyses": {"reuse": {}, "cka": {}}})
    plan = plan_study(study)
    run_ids = [run.run_id for run in plan]
    models = run_ids[:-1]  # the last run stands for a sweep's

    def stamps(complete, model_runs):
        context = _Context(plan, complete, model_runs)
        return {name: fingerprint(context, name, given) for name, given in requested_analyses(plan)}

    before = stamps(models, models)
    after = stamps(run_ids, models)  # the sweep run completes: no new model to analyse
    assert after["cka"] == before["cka"]
    assert after["reuse"] != before["reuse"]
    # A main run completing changes what cka reads.
    assert stamps(models, models[:-1])["cka"] != before["cka"]

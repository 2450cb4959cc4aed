"""`transferlens analyze`: every analysis on run folders written by `transferlens.train`."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from transferlens.analysis import parameter_distance
from transferlens.cli import main
from transferlens.train import TrainSpec, checkpoint_path, load_model, train
from transferlens.validation import validate

ANALYSES = (
    "cka",
    "mistakes",
    "distance",
    "interpolation",
    "criticality",
    "reuse",
    "pretrain-checkpoints",
)
DATA = [
    "--data",
    "synthetic",
    "--domain",
    "real",
    "--image-size",
    "16",
    "--train-size",
    "48",
    "--test-size",
    "48",
]
MODEL = [
    "--model",
    "fixup_resnet10",
    "--num-classes",
    "10",
    "--model-kwarg",
    "stem=cifar",
    "--model-kwarg",
    "width=4",
]


def tiny_spec(seed: int) -> TrainSpec:
    spec = {
        "model": "fixup_resnet10",
        "model_kwargs": {"stem": "cifar", "width": 4},
        "data": {"name": "synthetic", "domain": "real", "image_size": 16, "train_size": 48, "test_size": 48},
        "epochs": 1, "batch_size": 16, "lr": 0.05, "device": "cpu", "eval_batch_size": 24, "seed": seed,
    }  # fmt: skip
    return validate(TrainSpec, spec, "tiny spec")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    folders = []
    for seed in (0, 1):
        folder = root / f"rit{seed}"
        train(tiny_spec(seed), folder, progress=False)
        folders.append(str(folder))
    return folders


def analyze(*argv: str) -> int:
    return main(["analyze", *argv])


@pytest.mark.parametrize("analysis", ANALYSES)
def test_help_of_every_analysis(analysis, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", analysis, "--help"])
    assert exit_info.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_distance_of_two_runs_matches_the_library(runs, tmp_path, capsys):
    out = tmp_path / "distance.csv"
    assert analyze("distance", "--run", runs[0], "--run", runs[1], "--out", str(out)) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["pair", "module", "l2"]
    assert table["pair"].iloc[0] == "rit0-rit1"
    expected = parameter_distance(load_model(runs[0]), load_model(runs[1])).to_frame()
    assert table["l2"].tolist() == pytest.approx(expected["l2"].tolist(), rel=1e-9)
    assert "layer1.0" in capsys.readouterr().out
    # Epochs per run: a run against its own init.
    assert analyze("distance", "--run", runs[0], "--run", runs[0], "--epoch", "0", "--epoch", "final",
                   "--label", "init-final", "--out", str(out)) == 0  # fmt: skip
    assert pd.read_csv(out)["pair"].iloc[0] == "init-final"


def test_interpolation_writes_curve_and_barrier(runs, tmp_path):
    out, barriers = tmp_path / "interpolation.csv", tmp_path / "barriers.csv"
    code = analyze("interpolation", "--run", runs[0], "--run", runs[1], "--points", "3",
                   "--out", str(out), "--barriers-out", str(barriers))  # fmt: skip
    assert code == 0
    curve = pd.read_csv(out)
    assert list(curve.columns) == ["pair", "lam", "loss", "metric"] and curve["lam"].tolist() == [
        0.0,
        0.5,
        1.0,
    ]
    summary = pd.read_csv(barriers)
    assert list(summary.columns) == ["pair", "loss_barrier", "metric_barrier"]
    assert summary["loss_barrier"].iloc[0] >= 0.0


def test_cka_and_mistakes_of_two_runs(runs, tmp_path):
    out = tmp_path / "cka.csv"
    assert analyze("cka", "--run", runs[0], "--run", runs[1], "--bootstrap", "0", "--layers", "conv1", "layer1",
                   "--name", "A", "--name", "B", "--out", str(out)) == 0  # fmt: skip
    table = pd.read_csv(out)
    assert table["layer"].tolist() == ["conv1", "layer1"] and set(table["pair"]) == {"A-B"}
    assert ((table["cka"] >= 0) & (table["cka"] <= 1 + 1e-6)).all()
    out = tmp_path / "mistakes.csv"
    assert analyze("mistakes", "--run", runs[0], "--run", runs[1], "--bootstrap", "0",
                   "--pair", "RIT-RIT", "rit0", "rit1", "--out", str(out)) == 0  # fmt: skip
    table = pd.read_csv(out)
    row = table.iloc[0]
    assert row["pair"] == "RIT-RIT" and row["n"] == 48
    assert row[["both_right", "both_wrong", "only_first_wrong", "only_second_wrong"]].sum() == 48


def test_criticality_of_a_run_and_of_weights_files(runs, tmp_path):
    out = tmp_path / "criticality.csv"
    small = ["--alpha-points", "3", "--sigma-points", "3", "--noise-samples", "2"]
    reference = [*small, "--definition", "reference"]
    assert analyze("criticality", "--run", runs[0], *reference, "--out", str(out)) == 0
    table = pd.read_csv(out)
    columns = ["module", "rewind_metric", "criticality", "alpha", "sigma", "resolved"]
    columns += ["criticality_low", "criticality_high"]  # --bootstrap 1000 by default
    assert list(table.columns) == columns
    # The evaluation-set interval holds the value (the network's from the same resamples).
    assert (table["criticality_low"] <= table["criticality"]).all()
    assert (table["criticality"] <= table["criticality_high"]).all()
    assert table["module"].tolist() == [
        "conv1",
        "layer1.0",
        "layer2.0",
        "layer3.0",
        "layer4.0",
        "fc",
        "network",
    ]
    assert table["criticality"].iloc[-1] == pytest.approx(table["criticality"].iloc[:-1].sum())
    # The same run given as two weights files (final, init) and --data gives the same table.
    final, init = checkpoint_path(runs[0], 1), checkpoint_path(runs[0], 0)
    out2 = tmp_path / "criticality2.csv"
    assert analyze("criticality", "--weights", str(final), "--init-weights", str(init), *MODEL, *DATA,
                   "--batch-size", "24", *reference, "--out", str(out2)) == 0  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_csv(out2), table)
    # The default definition (an absolute loss bound, sigmas relative to each module's
    # weights): its minimisers are flagged when they sit on the grid's edge, then NaN.
    out3 = tmp_path / "criticality3.csv"
    assert (
        analyze("criticality", "--run", runs[0], *small, "--epsilon", "5", "--out", str(out3)) == 0
    )
    default = pd.read_csv(out3)
    assert list(default.columns) == columns
    # --bootstrap 0: the search alone, the same values, no interval.
    out4 = tmp_path / "criticality4.csv"
    assert analyze("criticality", "--run", runs[0], *small, "--epsilon", "5", "--bootstrap", "0",
                   "--out", str(out4)) == 0  # fmt: skip
    alone = pd.read_csv(out4)
    pd.testing.assert_frame_equal(alone[columns[:6]], default[columns[:6]])
    assert alone[["criticality_low", "criticality_high"]].isna().all().all()
    assert (default["criticality"].isna() == ~default["resolved"]).all()


def test_reuse_and_pretrain_checkpoints_from_a_runs_table(tmp_path):
    runs_csv = tmp_path / "runs.csv"
    pd.DataFrame(
        {
            "run_id": ["a", "b", "c", "d"], "kind": ["target"] * 4, "init": ["PT", "RIT", "PT", "PT"],
            "target": ["real"] * 4, "seed": [0, 0, 0, 0], "block_size": [None, None, None, 4],
            "pretrain_epoch": [5, None, 2, 5], "final_test_metric": [0.8, 0.6, 0.7, 0.5],
            "optimization_speed": [0.7, 0.5, 0.6, 0.4],
        }
    ).to_csv(runs_csv, index=False)  # fmt: skip
    out = tmp_path / "reuse.csv"
    assert analyze("reuse", "--runs", str(runs_csv), "--out", str(out)) == 0
    reuse = pd.read_csv(out)
    unshuffled = reuse[reuse["block_size"].isna()].iloc[0]
    assert unshuffled["relative_gap"] == pytest.approx(25.0)
    out = tmp_path / "pretrain.csv"
    assert analyze("pretrain-checkpoints", "--runs", str(runs_csv), "--out", str(out)) == 0
    assert pd.read_csv(out)["pretrain_epoch"].tolist() == [2, 5]


@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        (["distance", "--run", "no/such/run", "--run", "no/such/run"], "no/such/run"),
        (
            ["distance", "--weights", "missing.safetensors", "--weights", "x.safetensors", *MODEL],
            "missing",
        ),
        (["reuse", "--runs", "missing.csv"], "missing.csv"),
        (["reuse", "--runs", "runs.csv", "--out", "table.txt"], "--out"),
        (["cka", "--weights", "a.safetensors", "--model", "fixup_resnet10"], "--num-classes"),
        (["distance", "--run", "x", "--run", "y", "--epoch", "last"], "--epoch"),
        (["criticality"], "--run"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, culprit, capsys):
    assert analyze(*argv) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and culprit in error


def test_distance_needs_two_models(runs, capsys):
    assert analyze("distance", "--run", runs[0]) == 2
    assert "two models" in capsys.readouterr().err


def test_checkpoints_written_by_train_are_what_the_cli_reads(runs):
    # Sanity: the two runs differ and each moved away from its init.
    a, b = load_model(runs[0]), load_model(runs[1])
    assert not torch.equal(a.conv1.weight, b.conv1.weight)
    assert math.isfinite(parameter_distance(a, load_model(runs[0], 0)).total)


def test_library_loads_what_the_cli_loads(runs):
    """``transferlens.inputs`` is what the command calls: models, names, data, loaders."""
    from transferlens import inputs

    models = inputs.load_models([runs[0], runs[0]], epochs=[0, "final"])
    assert list(models) == ["rit0", "rit0_2"]
    assert not torch.equal(models["rit0"].conv1.weight, models["rit0_2"].conv1.weight)
    assert all(not model.training for model in models.values())
    weights = inputs.load_models(
        weights=[checkpoint_path(runs[0], 1)], model="fixup_resnet10", num_classes=10,
        model_kwargs={"stem": "cifar", "width": 4}, names=["w"],
    )  # fmt: skip
    assert torch.equal(weights["w"].conv1.weight, models["rit0_2"].conv1.weight)
    spec, batch_size = inputs.run_data(runs[0])
    assert (spec.name, spec.test_size, batch_size) == ("synthetic", 48, 24)
    data = inputs.eval_data(spec, batch_size=batch_size)
    assert data.task == "multiclass" and len(data.loader("test")) == 2
    train_loader = data.loader("train")  # the training images without augmentation
    assert train_loader.dataset is (data.splits.train_eval or data.splits.train)


@pytest.mark.parametrize(
    ("call", "culprit"),
    [
        (lambda inputs, run: inputs.load_models(), "no models"),
        (lambda inputs, run: inputs.load_models([run], weights=["w"]), "not both"),
        (lambda inputs, run: inputs.load_models([run, run], epochs=[0, 1, 2]), "epochs"),
        (lambda inputs, run: inputs.load_models([run], names=["a", "b"]), "names"),
        (lambda inputs, run: inputs.load_models(weights=["w"], model="fixup_resnet10"), "num_classes"),
        (lambda inputs, run: inputs.read_runs_table("no/runs.csv"), "no/runs.csv"),
    ],
)  # fmt: skip
def test_library_bad_input_names_the_parameter(runs, call, culprit):
    from transferlens import inputs
    from transferlens.errors import UserInputError

    with pytest.raises(UserInputError, match=culprit):
        call(inputs, runs[0])


def test_device_resolution():
    from transferlens.devices import resolve_device
    from transferlens.errors import UserInputError

    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    with pytest.raises(UserInputError, match="--device: unknown device 'tpu'"):
        resolve_device("tpu", key="--device")
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_data_flags_change_the_runs_data(runs, tmp_path):
    out = tmp_path / "mistakes.csv"
    assert analyze("mistakes", "--run", runs[0], "--run", runs[1], "--bootstrap", "0",
                   "--test-size", "24", "--out", str(out)) == 0  # fmt: skip
    assert pd.read_csv(out)["n"].tolist() == [24]

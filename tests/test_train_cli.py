"""`transferlens train`: configs and flags in, a run folder out; bad input = one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from transferlens.cli import main
from transferlens.data import DataSplits, register_dataset
from transferlens.data.tensor_dataset import TensorImageDataset
from transferlens.train import available_epochs, load_run


@register_dataset("tiny_test_cli")
def _tiny(spec) -> DataSplits:
    """Random 8 px images of 3 classes (learnability does not matter here)."""
    generator = torch.Generator().manual_seed(spec.split_seed)
    size = spec.image_size or 8

    def split(count: int) -> TensorImageDataset:
        images = torch.randint(0, 256, (count, 3, size, size), generator=generator)
        targets = torch.arange(count) % 3
        return TensorImageDataset(images.to(torch.uint8), targets, (0.5,) * 3, (0.25,) * 3)

    return DataSplits(
        train=split(24), test=split(12), num_classes=3, task="multiclass", image_size=size
    )


BASE = {
    "model": "fixup_resnet10",
    "model_kwargs": {"stem": "cifar", "width": 4},
    "data": {"name": "tiny_test_cli"},
    "epochs": 2,
    "batch_size": 8,
    "lr": 0.05,
    "device": "cpu",
}


def write_config(folder: Path, content: dict | str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def merged(**changes) -> dict:
    config = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    config = write_config(folder, BASE)
    assert main(["train", str(config), "--out", str(folder / "run"), "--no-progress"]) == 0
    return folder / "run"


def test_config_file_trains_a_run_folder(finished_run: Path) -> None:
    record = load_run(finished_run)
    assert record.complete and available_epochs(finished_run) == [0, 1, 2]
    assert record.spec["lr"] == 0.05 and record.spec["momentum"] == 0.9


def test_flags_override_the_config_and_rerun_is_instant(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, BASE)
    out = tmp_path / "run"
    argv = ["train", str(config), "--out", str(out), "--epochs", "1", "--lr", "0.01", "--seed", "4"]
    assert main([*argv, "--no-progress"]) == 0
    spec = load_run(out).spec
    assert (spec["epochs"], spec["lr"], spec["seed"]) == (1, 0.01, 4)
    assert [r["epoch"] for r in load_run(out).metrics] == [0, 1]
    capsys.readouterr()
    assert main([*argv, "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("already complete")


def test_flags_alone_without_a_config(tmp_path: Path, finished_run: Path, capsys) -> None:
    out = tmp_path / "pt"
    argv = [
        "train", "--out", str(out), "--model", "fixup_resnet10", "--model-kwarg", "stem=cifar",
        "--model-kwarg", "width=4", "--data", "tiny_test_cli", "--epochs", "1", "--lr", "0.01",
        "--batch-size", "8", "--device", "cpu", "--init-run", str(finished_run),
        "--init-epoch", "1",
    ]  # fmt: skip
    assert main(argv) == 0  # with progress: epoch lines on stdout
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.out and "complete:" in captured.out
    spec = load_run(out).spec
    assert spec["model_kwargs"] == {"stem": "cifar", "width": 4}
    assert spec["init"] == {"kind": "run", "run": str(finished_run), "epoch": 1}


def bad_input_cases(tmp: Path, run: Path) -> list[tuple[str, list[str], str]]:
    """(name, extra argv after the config, expected text in the one-line error)."""

    def cfg(content: dict | str) -> str:
        name = f"c{len(list(tmp.glob('*.yaml')))}.yaml"
        return str(write_config(tmp, content, name))

    weights = tmp / "not-there.safetensors"
    return [
        ("unknown key", [cfg(merged(learning_rate=0.1))], "learning_rate: unknown key"),
        ("wrong type", [cfg(merged(epochs="many"))], "epochs:"),
        ("negative epochs", [cfg(merged(epochs=-1))], "epochs:"),
        ("negative epochs flag", [cfg(BASE), "--epochs", "-3"], "epochs:"),
        ("bad lr flag", [cfg(BASE), "--lr", "fast"], "lr:"),
        ("unknown model", [cfg(merged(model="resnet_of_doom"))], "unknown model"),
        ("bad model kwarg", [cfg(merged(model_kwargs={"depth": 3}))], "'depth'"),
        ("unknown dataset", [cfg(merged(data={"name": "nope"}))], "unknown dataset"),
        ("unknown data key", [cfg(merged(data={"colour": 1}))], "data.colour: unknown key"),
        ("missing required", [cfg({"model": "fixup_resnet10"})], "data:"),
        ("bad init kind", [cfg(merged(init={"kind": "magic"}))], "init"),
        (
            "missing init run",
            [cfg(merged(init={"kind": "run", "run": str(tmp / "x")}))],
            "init.run",
        ),
        (
            "epoch not in run",
            [cfg(merged(init={"kind": "run", "run": str(run), "epoch": 7}))],
            "no checkpoint of epoch 7",
        ),
        (
            "missing init file",
            [cfg(merged(init={"kind": "file", "path": str(weights)}))],
            "not found",
        ),
        ("bad milestones", [cfg(merged(lr_milestones=[5, 2]))], "lr_milestones"),
        ("bad device", [cfg(merged(device="tpu"))], "device"),
        (
            "block size not dividing",
            [
                cfg(
                    merged(
                        data={
                            "name": "synthetic",
                            "domain": "real",
                            "image_size": 16,
                            "train_size": 8,
                            "test_size": 8,
                            "block_size": 5,
                        }
                    )
                )
            ],
            "block_size 5",
        ),  # fmt: skip
        (
            "missing data root",
            [cfg(merged(data={"name": "cifar10", "root": str(tmp / "no-data")}))],
            "cifar10",
        ),
        ("missing config", [str(tmp / "absent.yaml")], "file not found"),
        ("not yaml", [cfg("epochs: [1,\n")], "not valid YAML"),
        ("init flags clash", [cfg(BASE), "--init-run", "a", "--init-file", "b"], "only one"),
        ("model kwarg syntax", [cfg(BASE), "--model-kwarg", "width"], "KEY=VALUE"),
        ("other spec in folder", [cfg(merged(epochs=2, lr=0.5))], "another spec"),
    ]


def test_every_bad_input_is_one_line_and_exit_2(tmp_path: Path, finished_run: Path, capsys) -> None:
    for name, args, expected in bad_input_cases(tmp_path, finished_run):
        out = finished_run if name == "other spec in folder" else tmp_path / "out"
        code = main(["train", *args, "--out", str(out), "--no-progress"])
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 2, (name, captured.err)
        assert len(lines) == 1, (name, captured.err)
        assert expected in lines[0], (name, lines[0])
        assert not (tmp_path / "out").exists(), name  # nothing written for bad input


def test_missing_out_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, BASE)
    assert main(["train", str(config)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "transferlens: error: --out: required (the run folder to write)"
    ]

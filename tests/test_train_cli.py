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


def spec_paths(spec_type, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every leaf key path of a spec model, nested specs and union members included."""
    import typing

    from pydantic import BaseModel

    paths = set()
    for name, field in spec_type.model_fields.items():
        annotation = field.annotation
        members = [*typing.get_args(annotation), annotation]
        nested = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if nested:
            for member in nested:
                paths |= spec_paths(member, (*prefix, name))
        else:
            paths.add((*prefix, name))
    return paths


def test_every_spec_field_is_a_flag() -> None:
    from transferlens.commands.train import TRAIN_FLAGS
    from transferlens.train import TrainSpec

    assert {flag.path for flag in TRAIN_FLAGS.flags} == spec_paths(TrainSpec)
    options = {flag.path: flag.option for flag in TRAIN_FLAGS.flags}
    # The flags users had before they were generated keep their names.
    assert options[("data", "name")] == "--data" and options[("data", "root")] == "--data-root"
    assert options[("data", "image_size")] == "--image-size"
    assert options[("model_kwargs",)] == "--model-kwarg"
    assert options[("init", "run")] == "--init-run" and options[("init", "path")] == "--init-file"
    assert options[("init", "epoch")] == "--init-epoch"
    assert options[("grad_clip_norm",)] == "--grad-clip-norm"


def parsed_spec(*argv: str):
    from transferlens.cli import build_parser
    from transferlens.commands.train import build_spec

    return build_spec(build_parser().parse_args(["train", *argv]))


def test_generated_flags_set_their_fields(tmp_path: Path) -> None:
    spec = parsed_spec(
        "--model", "fixup_resnet10", "--data", "tiny_test_cli", "--epochs", "3", "--lr", "0.1",
        "--lr-milestones", "1", "2", "--no-train-eval", "--amp", "false", "--augment",
        "--data-option", "n=5", "--momentum", "0.5", "--init-seed", "7",
    )  # fmt: skip
    assert spec.lr_milestones == [1, 2] and spec.train_eval is False and spec.amp is False
    assert spec.data.augment is True and spec.data.options == {"n": 5}
    assert spec.momentum == 0.5 and (spec.init.kind, spec.init.seed) == ("random", 7)
    # Flags change the keys they name and keep the YAML file's others, nested ones too.
    config = write_config(tmp_path, merged(init={"kind": "run", "run": "a", "epoch": 2}))
    spec = parsed_spec(str(config), "--init-epoch", "best", "--image-size", "6")
    assert (spec.init.kind, spec.init.run, spec.init.epoch) == ("run", "a", "best")
    assert (spec.data.name, spec.data.image_size) == ("tiny_test_cli", 6)
    # A flag of another kind of init replaces the file's init.
    spec = parsed_spec(str(config), "--init-file", "w.safetensors")
    assert spec.init.model_dump() == {"kind": "file", "path": "w.safetensors"}
    spec = parsed_spec(str(config), "--init", "pretrained", "--init-kwarg", "weights=DEFAULT")
    assert spec.init.model_dump() == {"kind": "pretrained", "kwargs": {"weights": "DEFAULT"}}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--init-seed", "1", "--init-run", "x"], "--init-seed and --init-run: give only one"),
        (["--init", "file", "--init-run", "x"], "--init-run: not a setting of --init file"),
        (["--amp", "maybe"], "amp"),
        (["--lr-milestones", "3", "1"], "lr_milestones"),
        (["--image-size", "big"], "data.image_size"),
    ],
)
def test_bad_generated_flag_is_one_line_naming_it(tmp_path: Path, argv, expected, capsys) -> None:
    config = write_config(tmp_path, BASE)
    code = main(["train", str(config), *argv, "--out", str(tmp_path / "out"), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "out").exists()


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_own_data_yaml() -> dict:
    """The train YAML of README's "Your own data" section."""
    section = README.read_text(encoding="utf-8").split("## Your own data", 1)[1]
    return yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])


def test_readme_own_data_example_trains_with_the_stated_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from PIL import Image

    from transferlens.data import build_data
    from transferlens.train import TrainSpec

    monkeypatch.setenv("TRANSFERLENS_CACHE", str(tmp_path / "cache"))
    for label, colour in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
        (tmp_path / "my_images" / label).mkdir(parents=True)
        for index in range(10):
            shade = tuple(min(255, value + 5 * index) for value in colour)
            Image.new("RGB", (12, 12), shade).save(tmp_path / "my_images" / label / f"{index}.png")
    config = readme_own_data_yaml()
    assert config["data"]["name"] == "image_folder"
    config["data"]["root"] = str(tmp_path / "my_images")
    spec = TrainSpec.model_validate(config)
    assert spec.batch_size == 128 and spec.data.split_seed == 0 and not spec.data.augment
    path = write_config(tmp_path, config, "my-run.yaml")
    out = tmp_path / "runs" / "mine"
    argv = ["train", str(path), "--out", str(out), "--epochs", "1", "--device", "cpu"]
    assert main([*argv, "--no-progress"]) == 0, capsys.readouterr().err
    assert (out / "complete.json").is_file()
    written = json.loads((out / "spec.json").read_text())
    assert written["batch_size"] == 128 and written["data"]["image_size"] == 64
    # The stated split: 80/20 per class, 8 + 8 of the 20 images trained on.
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["images"] == 16
    splits = build_data(spec.data)
    assert (len(splits.train), len(splits.test)) == (16, 4)
    assert sorted(splits.test.targets.tolist()) == [0, 0, 1, 1]


def test_train_help_shows_no_sphinx_markup(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    assert "TrainSpec" in text and "image_folder" in text and "docs/reference.md" in text
    for markup in ("``", ":class:", ":func:", "~transferlens"):
        assert markup not in text

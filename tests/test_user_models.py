"""A user's own model class by import path, in the library, `transferlens train`, `analyze`
and a study run by the local executor (spawned workers import it again); someone else's
checkpoint as P; an explicit module map naming the head P-T replaces."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from conftest import TINY_STUDY, merged
from transferlens.cli import main
from transferlens.errors import UserInputError
from transferlens.models import build_model, check_model_name, list_models
from transferlens.models.user_models import resolve_callable
from transferlens.models.weights import check_weights_file, load_weights_file
from transferlens.study.loading import load_study
from transferlens.study.runner import execute_plan, open_study
from transferlens.train import TrainSpec, load_model
from transferlens.train.init import initial_model
from transferlens.train.run_dir import load_state_dict

THEIRS = Path(__file__).resolve().parent / "user_models" / "cifar_resnet.py"
MODEL = "mypkg.models:CifarResNet"
# Written into the package beside THEIRS' code: a factory without num_classes, a class
# whose last nn.Linear is not its head, and callables that are not models.
EXTRA = """

def fixed_head():
    return CifarResNet(width=4)


class GatedNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)
        self.gate = nn.Linear(4, 4)

    def forward(self, x):
        pooled = self.stem(x).mean(dim=(2, 3))
        return self.head(pooled * torch.sigmoid(self.gate(pooled)))


def not_a_model(num_classes=10):
    return "a string"


NOT_CALLABLE = 3
"""
DATA = {"name": "synthetic", "image_size": 8, "train_size": 32, "test_size": 16}


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``mypkg/models.py`` (their CIFAR ResNet + :data:`EXTRA`) in the current directory,
    which is not on ``sys.path``, as for a console script; imports undone afterwards."""
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(THEIRS.read_text() + EXTRA)
    shutil.copy(THEIRS, tmp_path / "their_resnet.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path
    for name in [name for name in sys.modules if name.split(".")[0] == "mypkg"]:
        del sys.modules[name]


def theirs(attribute: str):
    """An attribute of the user's package, imported as the model is."""
    return resolve_callable(f"mypkg.models:{attribute}")


def test_a_class_by_module_path_and_a_factory_by_file_path(user_package):
    assert str(user_package) not in sys.path
    model = build_model(MODEL, 3, width=4)
    assert type(model).__name__ == "CifarResNet" and model.linear.out_features == 3
    assert sys.path[0] == str(user_package)  # the current directory, put there to import it
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    factory = build_model("their_resnet.py:resnet_tiny", 5)  # relative to the current folder
    assert factory.linear.out_features == 5
    assert build_model(f"{user_package}/their_resnet.py:CifarResNet", 2).linear.out_features == 2
    assert check_model_name(MODEL) == MODEL
    assert "module.path:Callable" in list_models()


def test_a_callable_without_num_classes_gets_a_fresh_head_of_that_size(user_package):
    torch.manual_seed(0)
    own = build_model("mypkg.models:fixed_head", 10)
    torch.manual_seed(0)
    CifarResNet = theirs("CifarResNet")
    reference = CifarResNet(width=4)
    assert all(
        torch.equal(a, b)
        for a, b in zip(own.state_dict().values(), reference.state_dict().values())
    )
    replaced = build_model("mypkg.models:fixed_head", 3)
    assert replaced.linear.out_features == 3 and replaced.linear.in_features == 16


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nopkg.models:CifarResNet", "module 'nopkg.models' not found"),
        ("mypkg.models:Missing", "mypkg.models has no attribute 'Missing'"),
        ("mypkg.models:NOT_CALLABLE", "NOT_CALLABLE is a int, not a class or function"),
        ("absent/file.py:Net", "file absent/file.py not found"),
        ("timmm:resnet18", "nor is 'timmm' a model family (hf, timm)"),
    ],
)
def test_an_import_path_that_does_not_resolve_is_refused_on_one_line(user_package, name, message):
    with pytest.raises(ValueError, match="^model ") as caught:
        check_model_name(name)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    study = {**TINY_STUDY, "model": {"name": name}}
    path = user_package / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(UserInputError, match="model.name"):
        load_study(path)


def test_what_a_callable_returns_and_takes_is_checked_when_built(user_package):
    with pytest.raises(UserInputError, match="returned a str, not a torch nn.Module"):
        build_model("mypkg.models:not_a_model", 3)
    with pytest.raises(
        UserInputError, match=r"unknown keyword argument 'depth' \(accepted: num_blocks, width\)"
    ):
        build_model(MODEL, 3, depth=3)
    study = {**TINY_STUDY, "model": {"name": "mypkg.models:not_a_model"}}
    (user_package / "study.yaml").write_text(yaml.safe_dump(study))
    with pytest.raises(UserInputError, match="study.yaml: model: .*not a torch nn.Module"):
        load_study(user_package / "study.yaml")


def test_registered_families_keep_precedence_over_import_paths(user_package):
    (user_package / "hf.py").write_text("raise RuntimeError('imported')\n")
    # Importing hf.py would fail: the name is the family's, nothing is imported.
    assert check_model_name("hf:some-model") == "hf:some-model"


def test_theirs_checkpoint_loads_weights_only_and_a_misfit_names_the_first_key(user_package):
    CifarResNet, save_like_them = theirs("CifarResNet"), theirs("save_like_them")

    torch.manual_seed(0)
    their_model = CifarResNet(width=4)
    for suffix in (".th", ".pt", ".pth"):
        save_like_them(their_model, user_package / f"resnet{suffix}")
        loaded = load_weights_file(user_package / f"resnet{suffix}")
        assert loaded.keys() == their_model.state_dict().keys()
        assert all(torch.equal(loaded[k], v) for k, v in their_model.state_dict().items())
    check_weights_file(user_package / "resnet.th", MODEL, {"width": 4})  # head `linear` left out
    with pytest.raises(UserInputError) as caught:
        check_weights_file(user_package / "resnet.th", MODEL, {"width": 8})
    assert str(caught.value) == (
        f"{user_package / 'resnet.th'}: does not fit model {MODEL!r}: key 'bn1.bias' has "
        "shape (4,), the model's (8,) (and 34 more)"
    )


def _train(out: Path, *flags: str) -> int:
    data = ["--data", "synthetic", "--image-size", "8", "--train-size", "32", "--test-size", "16"]
    return main(["train", "--out", str(out), "--model", MODEL, "--model-kwarg", "width=4",
                 *data, "--epochs", "1", "--batch-size", "16", "--lr", "0.05", "--device", "cpu",
                 "--no-progress", *flags])  # fmt: skip


def test_train_pt_and_analyze_a_class_named_by_import_path(user_package, capsys):
    source, pt = user_package / "p", user_package / "pt"
    assert _train(source, "--domain", "source") == 0
    assert _train(pt, "--domain", "real", "--init-run", str(source), "--seed", "1") == 0
    p_final, pt_init = load_state_dict(source, "final"), load_state_dict(pt, 0)
    changed = {k for k, v in pt_init.items() if k in p_final and not torch.equal(v, p_final[k])}
    assert changed == {"linear.weight", "linear.bias"}  # the head is `linear`: found, reset
    assert type(load_model(pt)).__name__ == "CifarResNet"
    out = user_package / "distance.csv"
    assert (
        main(["analyze", "distance", "--run", str(source), "--run", str(pt), "--out", str(out)])
        == 0
    )
    assert "linear" in pd.read_csv(out)["module"].tolist()


def test_modules_name_the_head_that_pt_replaces(user_package):
    torch.manual_seed(0)
    source = build_model("mypkg.models:GatedNet", 4)
    torch.save({"state_dict": source.state_dict()}, user_package / "gated.pt")
    base = {"model": "mypkg.models:GatedNet", "data": DATA | {"domain": "real"}, "epochs": 1,
            "lr": 0.1, "init": {"kind": "file", "path": str(user_package / "gated.pt")}}  # fmt: skip
    modules = ["stem", "gate", "head"]
    spec = TrainSpec.model_validate(base | {"model_modules": modules})
    model = initial_model(spec, 3)
    assert model.head.out_features == 3
    assert torch.equal(model.gate.weight, source.gate.weight)  # not the head: loaded from P
    # The flag's text is read as YAML; the field is out of the run id while unset.
    assert (
        TrainSpec.model_validate(base | {"model_modules": "[stem, gate, head]"}).model_modules
        == modules
    )
    assert "model_modules" not in TrainSpec.model_validate(base).comparable()
    assert spec.comparable()["model_modules"] == modules


def test_a_study_refuses_modules_that_miss_a_parameter(user_package):
    study = {**TINY_STUDY, "model": {"name": "mypkg.models:GatedNet", "modules": ["stem", "head"]}}
    (user_package / "study.yaml").write_text(yaml.safe_dump(study))
    with pytest.raises(UserInputError) as caught:
        load_study(user_package / "study.yaml")
    message = str(caught.value)
    assert "study.yaml: model.modules: " in message and "'gate.weight' is in no unit" in message
    study["model"]["modules"] = ["stem", "gate", "head"]
    (user_package / "study.yaml").write_text(yaml.safe_dump(study))
    assert load_study(user_package / "study.yaml").model.modules == ["stem", "gate", "head"]


def test_a_study_of_their_class_from_their_checkpoint_on_the_local_executor(user_package):
    CifarResNet, save_like_them = theirs("CifarResNet"), theirs("save_like_them")

    torch.manual_seed(0)
    their_model = CifarResNet(width=4)
    save_like_them(their_model, user_package / "resnet20.th")
    study = merged(TINY_STUDY, data_defaults={"options": {"target_classes": 3}})
    study["model"] = {"name": MODEL, "kwargs": {"width": 4}}
    study["source"] = {"weights": "resnet20.th"}  # someone else's P
    del study["training"]["pretrain"]
    (user_package / "study.yaml").write_text(yaml.safe_dump(study))
    plan, store = open_study(user_package / "study.yaml", out=user_package / "out")
    report = execute_plan(plan, store, devices="cpu", jobs=1, progress=False)  # spawned worker
    assert report.ok and report.complete == report.total == 2
    pt = plan.select(init="PT")[0]
    start = load_state_dict(store.run_dir(pt.run_id), 0)
    for key, value in their_model.state_dict().items():
        assert torch.equal(start[key], value) != key.startswith("linear."), key
    assert start["linear.weight"].shape == (3, 16)
    assert isinstance(load_model(store.run_dir(pt.run_id)), nn.Module)

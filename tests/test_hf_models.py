"""Hugging Face image classifiers as ``hf:<folder>``: a tiny ViT with random weights saved
with ``save_pretrained``, loaded back through build_model, `transferlens train` and a study
whose P-T starts from the checkpoint's weights (nothing is downloaded)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_STUDY, merged
from transferlens.cli import main
from transferlens.errors import UserInputError
from transferlens.models import build_model, check_model_name
from transferlens.study.runner import execute_plan, open_study
from transferlens.train import load_model
from transferlens.train.run_dir import load_state_dict
from transferlens.train.spec import PretrainedInit

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViT (32 px, patch 8, width 32, 2 layers, 2 heads, 5 labels), random weights."""
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hf") / "tiny-vit"
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    return folder


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's weights under the model's names (transformers 5 renames some keys
    when it saves and loads: the file's names are not the module's)."""
    auto = transformers.AutoModelForImageClassification
    return auto.from_pretrained(str(folder)).state_dict()


def test_random_weights_from_the_seed_and_a_tensor_out(vit_folder):
    name = f"hf:{vit_folder}"
    torch.manual_seed(3)
    model = build_model(name, 3)
    torch.manual_seed(3)
    again = build_model(name, 3)
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values())
    )
    assert model.training and model.classifier.out_features == 3
    saved = saved_weights(vit_folder)
    assert model.state_dict().keys() == saved.keys()  # HF's names, unchanged
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
    copied = copy.deepcopy(model).eval()  # the hook is a module-level function: copies work
    assert isinstance(copied(torch.randn(1, 3, 32, 32)), torch.Tensor)


def test_pretrained_is_the_checkpoints_weights_with_a_new_head(vit_folder):
    model = build_model(f"hf:{vit_folder}", 3, pretrained=True)
    saved = saved_weights(vit_folder)
    for key, value in model.state_dict().items():
        if key.startswith("classifier."):
            assert value.shape[0] == 3
        else:
            assert torch.equal(value, saved[key]), key
    assert model.training
    assert PretrainedInit(kind="pretrained").build_kwargs(f"hf:{vit_folder}") == {
        "pretrained": True
    }


def test_configuration_keywords_and_bad_input(vit_folder, tmp_path, monkeypatch):
    name = f"hf:{vit_folder}"
    assert build_model(name, 2, hidden_dropout_prob=0.25).config.hidden_dropout_prob == 0.25
    with pytest.raises(UserInputError, match="unknown keyword argument 'hidden_sise'"):
        build_model(name, 2, hidden_sise=3)
    with pytest.raises(UserInputError, match="pretrained must be true or false"):
        build_model(name, 2, pretrained="yes")
    with pytest.raises(UserInputError, match=f"folder {tmp_path / 'absent'} not found"):
        build_model(f"hf:{tmp_path / 'absent'}", 2)
    assert check_model_name(name) == name
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails
    with pytest.raises(UserInputError, match=r"pip install 'transferlens\[hf\]'"):
        build_model(name, 2)


def test_transferlens_train_on_an_hf_folder(vit_folder, tmp_path):
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--model", f"hf:{vit_folder}", "--data", "synthetic",
                 "--domain", "real", "--image-size", "32", "--train-size", "16", "--test-size", "8",
                 "--epochs", "1", "--batch-size", "8", "--lr", "0.01", "--device", "cpu",
                 "--init", "pretrained", "--no-progress"])  # fmt: skip
    assert code == 0
    start, saved = load_state_dict(out, 0), saved_weights(vit_folder)
    backbone = [key for key in saved if not key.startswith("classifier.")]
    assert backbone and all(torch.equal(start[key], saved[key]) for key in backbone)
    model = load_model(out)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, model.classifier.out_features)


def test_a_tiny_study_fine_tunes_from_the_checkpoint(vit_folder, tmp_path, study_file):
    study = merged(TINY_STUDY, data_defaults={"image_size": 32, "options": {"target_classes": 3}})
    study["model"] = f"hf:{vit_folder}"
    study["source"] = {"pretrained": True}
    del study["training"]["pretrain"]
    plan, store = open_study(study_file(study), out=tmp_path / "out")
    report = execute_plan(plan, store, devices="cpu", jobs=1, progress=False)
    assert report.ok and report.complete == report.total == 2
    pt, rit = plan.select(init="PT")[0], plan.select(init="RIT")[0]
    saved = saved_weights(vit_folder)
    pt_start = load_state_dict(store.run_dir(pt.run_id), 0)
    rit_start = load_state_dict(store.run_dir(rit.run_id), 0)
    backbone = [key for key in saved if not key.startswith("classifier.")]
    assert all(torch.equal(pt_start[key], saved[key]) for key in backbone)
    assert not all(torch.equal(rit_start[key], saved[key]) for key in backbone)
    assert pt_start["classifier.weight"].shape == (3, 32)

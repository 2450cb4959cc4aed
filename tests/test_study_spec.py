"""Study files: every kind of bad input is one line naming the key, exit code 2."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from conftest import DELETE, TINY_STUDY, merged, with_setting
from transferlens.cli import main
from transferlens.errors import UserInputError
from transferlens.study.loading import load_study, parse_study
from transferlens.study.plan import plan_study

STUDIES = Path(__file__).resolve().parents[1] / "studies"

TINY = merged(
    TINY_STUDY,
    block_shuffle={"targets": ["real"], "block_sizes": [None, 4, 0]},
    pretrain_checkpoints={"targets": ["real"], "epochs": [0, "final"]},
)


def _exit_and_line(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


BAD = [
    # (change, words the one-line message must contain)
    ((["seedz"], [0]), ["seedz", "unknown key"]),
    ((["training", "pt", "lrr"], 0.1), ["training.pt.lrr", "unknown key"]),
    ((["training", "rit", "epochs"], "ten"), ["training.rit.epochs"]),
    ((["seeds"], "zero"), ["seeds"]),
    ((["targets"], DELETE), ["targets", "Field required"]),
    ((["model", "name"], "resnet_9000"), ["model.name", "unknown model"]),
    ((["targets", 0, "data", "name"], "nodata"), ["targets.0.data.name", "unknown dataset"]),
    ((["block_shuffle", "block_sizes"], [None, 5]), ["block_shuffle.block_sizes", "5", "8"]),
    ((["block_shuffle", "block_sizes"], [-1]), ["block_shuffle.block_sizes"]),
    ((["block_shuffle", "targets"], ["sketchy"]), ["block_shuffle.targets", "sketchy"]),
    ((["pretrain_checkpoints", "epochs"], [0, 7]), ["pretrain_checkpoints.epochs", "7"]),
    ((["model", "kwargs"], {"stem": "tiny"}), ["model", "stem"]),
    ((["model", "kwargs"], {"depth": 3}), ["model", "depth"]),
    ((["training", "pretrain"], DELETE), ["training.pretrain"]),
    ((["analyses"], {"cka": {}, "telepathy": {}}), ["analyses", "telepathy", "known: reuse"]),
    ((["threads_per_run"], 0), ["threads_per_run", "0"]),
    ((["keep_checkpoints"], "some"), ["keep_checkpoints", "some"]),
    (
        (["analyses"], {"criticality": {"n_noize": 3}}),
        ["analyses.criticality.n_noize: unknown key"],
    ),
    ((["analyses"], {"criticality": {"n_noise": "x"}}), ["analyses.criticality.n_noise", "'x'"]),
    ((["source", "weights"], "w.safetensors"), ["source", "exactly one"]),
]


@pytest.mark.parametrize("change, words", BAD, ids=[" ".join(map(str, c[0])) for c, _ in BAD])
def test_bad_study_exits_2_with_one_line_naming_the_key(study_file, capsys, change, words):
    path = study_file(with_setting(TINY, *change))
    code, err = _exit_and_line(capsys, ["plan", str(path)])
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)


def test_missing_data_folder_is_bad_input_for_run(tmp_path, capsys, monkeypatch, study_file):
    monkeypatch.delenv("TRANSFERLENS_DATA", raising=False)
    study = copy.deepcopy(TINY)
    study["targets"] = [{"label": "photo", "data": {"name": "pacs", "domain": "photo"}}]
    study["block_shuffle"] = None
    study["pretrain_checkpoints"] = None
    path = study_file(study)
    code, err = _exit_and_line(capsys, ["run", str(path), "--out", str(tmp_path / "out")])
    assert code == 2 and len(err.splitlines()) == 1
    assert "targets.0.data.root" in err and "data folder" in err
    code, err = _exit_and_line(
        capsys,
        ["run", str(path), "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
    )
    assert code == 2 and "targets.0.data.root" in err and "nowhere" in err
    assert not (tmp_path / "out").exists()  # validated before any work


def test_missing_weights_file_is_bad_input(tmp_path, capsys, study_file):
    study = copy.deepcopy(TINY)
    study["source"] = {"weights": str(tmp_path / "absent.safetensors")}
    study["pretrain_checkpoints"] = None
    path = study_file(study)
    code, err = _exit_and_line(capsys, ["run", str(path), "--out", str(tmp_path / "out")])
    assert code == 2 and "source.weights" in err


def test_unreadable_yaml_and_missing_file(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n", encoding="utf-8")
    code, err = _exit_and_line(capsys, ["plan", str(path)])
    assert code == 2 and "not valid YAML" in err
    code, err = _exit_and_line(capsys, ["plan", str(tmp_path / "none.yaml")])
    assert code == 2 and "file not found" in err


def test_data_root_fills_and_joins_real_data_roots(tmp_path, monkeypatch):
    (tmp_path / "pacs_here").mkdir()
    study = copy.deepcopy(TINY)
    study["targets"] = [
        {"label": "photo", "data": {"name": "pacs", "domain": "photo"}},
        {"label": "sketch", "data": {"name": "pacs", "domain": "sketch", "root": "pacs_here"}},
    ]
    study["block_shuffle"] = study["pretrain_checkpoints"] = None
    monkeypatch.setenv("TRANSFERLENS_DATA", str(tmp_path))
    parsed = parse_study(study, "s.yaml")
    assert parsed.targets[0].data.root == str(tmp_path.resolve())
    assert parsed.targets[1].data.root == str((tmp_path / "pacs_here").resolve())
    assert parsed.source.data.root is None  # generated data needs no folder


def test_block_size_words_and_defaults_merge():
    study = copy.deepcopy(TINY)
    study["block_shuffle"]["block_sizes"] = ["none", "pixel", 2]
    parsed = parse_study(study, "s.yaml")
    assert parsed.block_shuffle.block_sizes == [None, 0, 2]
    assert parsed.targets[0].data.image_size == 8 and parsed.targets[0].data.name == "synthetic"
    assert parsed.source.data.train_size == 32


@pytest.mark.parametrize(
    "name", ["demo", "cifar10-pacs", "cifar10-pacs-vit", "domainnet", "chexpert"]
)
def test_ready_studies_validate_and_plan(name):
    study = load_study(STUDIES / f"{name}.yaml", require_paths=False)
    plan = plan_study(study)
    assert len(plan) > 0
    assert plan.source_run is not None and plan.source_run.meta.kind == "source"


def test_vit_study_plans_the_resnet_studys_protocol_on_a_vit():
    pytest.importorskip("timm")
    from transferlens.models import build_model, module_map

    vit = load_study(STUDIES / "cifar10-pacs-vit.yaml", require_paths=False)
    resnet = load_study(STUDIES / "cifar10-pacs.yaml", require_paths=False)
    assert [t.label for t in vit.targets] == [t.label for t in resnet.targets]
    assert vit.source.data.name == resnet.source.data.name == "cifar10"
    assert set(vit.analyses) == set(resnet.analyses)
    model = build_model(vit.model.name, 7, **vit.model.kwargs)
    units = module_map(model)
    assert units.family == "timm-vit" and units.prefix_tokens == 1
    assert units.unit_names == ["stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "norm",
                                "head"]  # fmt: skip


def test_domainnet_study_is_the_paper_protocol():
    study = load_study(STUDIES / "domainnet.yaml", require_paths=False)
    assert study.model.name == "fixup_resnet50"
    pt, rit = study.training.pt, study.training.rit
    assert (pt.lr, rit.lr, pt.batch_size, rit.batch_size) == (0.02, 0.1, 256, 256)
    assert pt.lr_milestones == rit.lr_milestones == [30, 60, 90]
    assert pt.epochs == rit.epochs == 100 and pt.mixup_alpha == rit.mixup_alpha == 0.7
    assert study.block_shuffle.augment is False
    assert study.block_shuffle.shuffle_seeds == [1234, 1235]
    assert study.pretrain_checkpoints.epochs == [0, 1, 2, 5, 10, 29, 30, 31, 59, 60, 61, 89, 90]
    plan = plan_study(study)
    targets, seeds, arms = 3, 2, 2
    blocks = 13  # 11 block sizes + unshuffled (224) + pixel shuffle
    checkpoints = 13
    # The checkpoint sweep's epoch 90 is the main P-T run: planned once.
    expected = (
        1
        + targets * seeds * arms
        + targets * blocks * seeds * arms
        + targets * (checkpoints - 1) * seeds
    )
    assert len(plan) == expected == 241


def test_chexpert_study_is_the_paper_protocol():
    study = load_study(STUDIES / "chexpert.yaml", require_paths=False)
    pt, rit = study.training.pt, study.training.rit
    assert (pt.epochs, rit.epochs, pt.batch_size, rit.batch_size) == (200, 400, 256, 256)
    assert not pt.lr_milestones and not rit.lr_milestones  # constant LR
    assert not pt.mixup_alpha and not rit.mixup_alpha


def test_user_input_error_from_python_api():
    with pytest.raises(UserInputError, match="training.pt.lrr"):
        parse_study(with_setting(TINY, ["training", "pt", "lrr"], 1.0), "s.yaml")

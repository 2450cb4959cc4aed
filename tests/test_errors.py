"""Bad input is one line naming the key, file or value, and exit 2 (issue #18, item 5):
misspelt keys with a suggestion, unwritable or absent paths, loaders of the wrong shape,
devices that are not there, and weights files that do not fit the study's model."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from conftest import TINY_STUDY, with_setting
from transferlens import analysis
from transferlens.cli import main, path_error
from transferlens.errors import UserInputError
from transferlens.models import build_model
from transferlens.study.spec import StudySpec
from transferlens.train import TrainSpec
from transferlens.validation import validate

# The tiny study's model: what a source weights file has to fit.
TINY_MODEL = {"stem": "cifar", "width": 4}


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def _message(spec_type: type, data: dict) -> str:
    with pytest.raises(UserInputError) as caught:
        validate(spec_type, data, "f.yaml")
    return str(caught.value)


# --- a misspelt key is named, with the key it stands for --------------------------------


def _renamed(study: dict, path: list, new_key: str) -> dict:
    """A copy of ``study`` whose key at ``path`` is spelt ``new_key``, value kept."""
    copy = with_setting(study, path, None)
    node = copy
    for key in path[:-1]:
        node = node[key]
    original = study
    for key in path:
        original = original[key]
    del node[path[-1]]
    node[new_key] = original
    return copy


@pytest.mark.parametrize(
    ("path", "given", "expected"),
    [
        # 'lrate' for 'lr': pydantic reports 'lr' missing first; the cause is 'lrate'
        # (and the missing 'lr' it explains is not counted as another problem).
        (["training", "pt", "lr"], "lrate", "training.pt.lrate: unknown key; did you mean 'lr'?"),
        (["name"], "nmae", "nmae: unknown key; did you mean 'name'?"),
        (["seeds"], "seed", "seed: unknown key; did you mean 'seeds'?"),
        (
            ["targets", 0, "data", "domain"],
            "domian",
            "targets.0.data.domian: unknown key; did you mean 'domain'?",
        ),
    ],
)
def test_a_misspelt_key_is_named_with_the_close_one(path, given, expected):
    assert _message(StudySpec, _renamed(TINY_STUDY, path, given)) == f"f.yaml: {expected}"


def test_analysis_settings_and_train_spec_suggest_too():
    study = {**TINY_STUDY, "analyses": {"criticality": {"n_noize": 3}}}
    assert _message(StudySpec, study).endswith(
        "analyses.criticality.n_noize: unknown key; did you mean 'n_noise'?"
    )
    train = {"model": "fixup_resnet10", "data": {"name": "synthetic"}, "epochs": 1}
    assert _message(TrainSpec, {**train, "learning_rate": 0.1}) == (
        "f.yaml: learning_rate: unknown key; did you mean 'lr'?"
    )
    # The branch of a tagged union (init.kind: file) is followed to its own keys.
    init = {"kind": "file", "paht": "w.pt"}
    assert _message(TrainSpec, {**train, "lr": 0.1, "init": init}) == (
        "f.yaml: init.file.paht: unknown key; did you mean 'path'?"
    )


def test_unknown_key_without_a_close_one_lists_the_valid_keys_and_counts_the_rest():
    study = {**TINY_STUDY, "zzz": 1}
    del study["seeds"]  # not required: still one problem
    message = _message(StudySpec, study)
    assert message.startswith("f.yaml: zzz: unknown key (valid keys: name, description,")
    both = {**TINY_STUDY, "zzz": 1, "training": {**TINY_STUDY["training"], "pt": {"epochs": 0}}}
    assert _message(StudySpec, both).endswith("[and 2 more problem(s)]")  # pt.epochs, pt.lr


def test_plan_names_the_misspelt_key(study_file, capsys):
    pt = {"epochs": 1, "lrate": 0.02, "batch_size": 16}
    path = study_file(training={**TINY_STUDY["training"], "pt": pt})
    assert main(["plan", str(path)]) == 2
    assert _one_line_error(capsys).endswith("training.pt.lrate: unknown key; did you mean 'lr'?")


# --- paths: unwritable --out, absent run folders -------------------------------------------


def test_out_below_a_file_is_bad_input_naming_the_path(study_file, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    out = blocker / "study"
    assert main(["run", str(study_file()), "--out", str(out), "--no-progress"]) == 2
    assert str(blocker) in _one_line_error(capsys)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_out_is_bad_input_naming_the_path(study_file, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert main(["run", str(study_file()), "--out", str(locked / "s"), "--no-progress"]) == 2
    finally:
        locked.chmod(0o700)
    assert str(locked / "s") in _one_line_error(capsys)


def _raising(error: Exception):
    def register(subparsers):
        parser = subparsers.add_parser("plan")
        parser.add_argument("study")
        parser.add_argument("--out")

        def handler(args):
            raise error

        parser.set_defaults(handler=handler)

    return register


@pytest.mark.parametrize(
    ("error", "code", "shown"),
    [
        # Refused by the file system: bad input wherever the path came from.
        (PermissionError(errno.EPERM, "Operation not permitted", "/srv/x"), 2, "/srv/x"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/s"), 2, "/mnt/ro/s"),
        # A path error on the path the user named (or inside it): bad input.
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/given/out/runs"), 2, "/given"),
        # The same error on a path nobody named is the program's failure.
        (FileNotFoundError(errno.ENOENT, "No such file", "/elsewhere/f"), 1, "FileNotFound"),
        (OSError(errno.ENOSPC, "No space left on device", "/given/out/x"), 1, "No space"),
    ],
)
def test_file_system_errors_map_to_exit_codes(monkeypatch, capsys, error, code, shown):
    import transferlens.commands.plan as plan_command

    monkeypatch.setattr(plan_command, "register", _raising(error))
    monkeypatch.delenv("TRANSFERLENS_DEBUG", raising=False)
    assert main(["plan", "study.yaml", "--out", "/given/out"]) == code
    assert shown in _one_line_error(capsys)


def test_path_error_names_the_file_and_reason():
    import argparse

    error = PermissionError(errno.EACCES, "Permission denied", "/data/study/results")
    assert path_error(error, argparse.Namespace()) == "/data/study/results: Permission denied"
    assert path_error(OSError("no file name"), argparse.Namespace()) is None


def test_analyze_on_a_run_folder_that_does_not_exist(tmp_path, capsys):
    absent = tmp_path / "no-such-run"
    assert main(["analyze", "cka", "--run", str(absent)]) == 2
    assert _one_line_error(capsys) == (
        f"transferlens: error: --run: run folder {absent} does not exist"
    )
    assert main(["analyze", "cka", "--run", str(tmp_path)]) == 2
    assert "not a run folder" in _one_line_error(capsys)


def test_analyze_refuses_an_unwritable_out_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    # runs.csv does not exist either: the --out check comes first, before any work.
    argv = ["analyze", "reuse", "--runs", str(tmp_path / "runs.csv")]
    assert main([*argv, "--out", str(blocker / "reuse.csv")]) == 2
    assert f"--out: cannot write {blocker / 'reuse.csv'}" in _one_line_error(capsys)
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    assert main([*argv, "--out", str(folder)]) == 2
    assert _one_line_error(capsys).endswith("is a folder, not a file")
    assert main([*argv, "--out", str(tmp_path / "new" / "reuse.csv")]) == 2
    assert "runs.csv: file not found" in _one_line_error(capsys)  # a new folder is fine


# --- loaders and devices: the analyses' own words ------------------------------------------


def _tiny_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return build_model("fixup_resnet10", 3, **TINY_MODEL), build_model(
        "fixup_resnet10", 3, **TINY_MODEL
    )


def test_cka_with_a_loader_of_dicts_says_what_it_needs():
    a, b = _tiny_models()
    batches = [{"image": torch.randn(8, 3, 8, 8), "label": torch.zeros(8, dtype=torch.long)}]
    expected = r"the data loader must yield \(inputs, targets\) pairs of tensors \(got dict\)"
    with pytest.raises(UserInputError, match=expected):
        analysis.cka(a, b, batches, n_bootstrap=0)
    with pytest.raises(UserInputError, match=expected):  # the same words as the others
        analysis.interpolation_curve(a, b, batches, "multiclass", lams=[0.0, 1.0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_bad_input_not_torchs_error(tmp_path, capsys):
    a, b = _tiny_models()
    batches = [(torch.randn(8, 3, 8, 8), torch.zeros(8, dtype=torch.long))]
    with pytest.raises(UserInputError, match="'cuda' requested but CUDA is not available"):
        analysis.cka(a, b, batches, n_bootstrap=0, device="cuda")
    config = tmp_path / "train.yaml"
    config.write_text(
        "model: fixup_resnet10\nmodel_kwargs: {stem: cifar, width: 4}\n"
        "data: {name: synthetic, image_size: 8, train_size: 16, test_size: 8}\n"
        "epochs: 1\nlr: 0.05\nbatch_size: 8\ndevice: cuda\n",
        encoding="utf-8",
    )
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "device: 'cuda' requested but CUDA is not available" in _one_line_error(capsys)


# --- a weights file named as the P-T source is checked before any training -----------------


def _weights_study(study_file, weights: Path) -> Path:
    return study_file({**TINY_STUDY, "source": {"weights": str(weights)}})


def test_plan_accepts_a_th_checkpoint_that_fits(study_file, tmp_path, capsys):
    state = build_model("fixup_resnet10", 7, **TINY_MODEL).state_dict()
    weights = tmp_path / "resnet.th"  # a DataParallel checkpoint, as CIFAR repositories save
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "best": 0.9}, weights)
    assert main(["plan", str(_weights_study(study_file, weights))]) == 0


def test_plan_refuses_weights_that_do_not_fit_naming_file_and_key(study_file, tmp_path, capsys):
    weights = tmp_path / "wide.pth"
    torch.save(build_model("fixup_resnet10", 7, stem="cifar", width=8).state_dict(), weights)
    path = _weights_study(study_file, weights)
    assert main(["plan", str(path)]) == 2
    error = _one_line_error(capsys)
    assert f"source.weights: {weights}: does not fit model 'fixup_resnet10'" in error
    assert "key 'conv1.weight' has shape (8, 3, 3, 3), the model's (4, 3, 3, 3)" in error
    # run refuses it before training anything (not minutes later, at the first P-T run).
    out = tmp_path / "study"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 2
    assert "does not fit model" in _one_line_error(capsys)
    assert not (out / "runs").exists()


def test_plan_refuses_a_weights_file_that_does_not_load(study_file, tmp_path, capsys):
    weights = tmp_path / "junk.pt"
    weights.write_bytes(b"not a checkpoint")
    assert main(["plan", str(_weights_study(study_file, weights))]) == 2
    assert f"source.weights: {weights}: cannot read weights" in _one_line_error(capsys)
    absent = _weights_study(study_file, tmp_path / "absent.pt")  # a note at plan, as data
    assert main(["plan", str(absent)]) == 0
    assert "absent.pt not found (needed by 'transferlens run')" in capsys.readouterr().out

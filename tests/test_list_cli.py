"""`transferlens list models | datasets | analyses`: every registered name, one a line."""

from __future__ import annotations

import pytest

from transferlens import cli
from transferlens.data import dataset_names
from transferlens.models import list_models
from transferlens.study.analyses.registry import ANALYSES


@pytest.fixture(autouse=True)
def list_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI with the ``list`` command (whether or not cli.COMMANDS names it yet)."""
    monkeypatch.setattr(cli, "COMMANDS", tuple(dict.fromkeys((*cli.COMMANDS, "list"))))


def listed(capsys: pytest.CaptureFixture[str], kind: str) -> dict[str, str]:
    assert cli.main(["list", kind]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[0]: line.split(maxsplit=1)[1] if " " in line else "" for line in lines}


def test_models_are_listed_with_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    found = listed(capsys, "models")
    assert list(found) == list_models()  # every name, in the registry's order
    assert "timm:<name>" in found
    assert "smallest" in found["fixup_resnet10"]  # its docstring's first line


def test_datasets_are_listed_with_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    found = listed(capsys, "datasets")
    assert list(found) == dataset_names()
    assert "class folders" in found["image_folder"]
    assert all(found[name] for name in ("synthetic", "cifar10", "pacs", "image_folder"))


def test_analyses_are_listed_in_run_order(capsys: pytest.CaptureFixture[str]) -> None:
    found = listed(capsys, "analyses")
    assert list(found) == list(ANALYSES)
    assert found["cka"] == ANALYSES["cka"].title


def test_an_unknown_kind_is_exit_2_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["list", "modles"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "modles" in error and "models" in error and "Traceback" not in error

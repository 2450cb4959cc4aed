"""What a training run is: :class:`TrainSpec` and the ways its weights can start.

Defaults follow the paper's protocol (SGD, momentum 0.9, weight decay 1e-4 on all
parameters, bias/scale parameters at lr/10). Initialisations (``init.kind``):

* ``random``: the model's own init, drawn from ``init.seed`` (default: derived from
  the run seed). Two runs with the same ``init.seed`` and different ``seed`` start from
  the same weights but see different data orders.
* ``run``: P-T from a run folder's checkpoint (``epoch``: an int, ``"final"`` or
  ``"best"``), ``file``: from a weights file (safetensors, or a PyTorch file read with
  ``weights_only=True``), ``pretrained``: from the model's own pre-trained weights
  (torchvision ``weights``/timm ``pretrained`` keyword arguments). For all three the
  head is re-initialised (its seed derived from the run seed) and every other weight
  is loaded: at epoch 0 a P-T model differs from P only in its head.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_serializer

from transferlens.data.spec import DataSpec
from transferlens.validation import StrictModel

ScalarValue = int | float | str | bool | None
# Families whose pre-trained weights a ``pretrained: true`` keyword loads.
PRETRAINED_FAMILIES = ("timm:", "hf:")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
# Fields that change where or how fast a run goes, never what it computes: a resumed
# run may differ in them from the run it continues (as may data.root, where the same
# data set happens to live).
EXECUTION_FIELDS = ("num_workers", "eval_batch_size", "device")
# Fields added after run folders existed, with the value that switches them off. At that
# value they are left out of a spec's identity and resume checks, so a folder written
# before the field existed still names (and resumes) the same run.
OFF_BY_DEFAULT: dict[str, Any] = {"warmup_epochs": 0, "grad_clip_norm": None, "model_modules": None}
# A module map a user gives: unit names or globs, or {stage: [names or globs]}.
ModulesValue = list[str] | dict[str, list[str]]


class RandomInit(StrictModel):
    """Random initialisation; ``seed`` None derives it from the run seed."""

    kind: Literal["random"] = "random"
    seed: int | None = Field(
        default=None, ge=0, description="seed of the random weights (default: from the run seed)"
    )


class RunInit(StrictModel):
    """Start from a checkpoint of another run folder (its head is replaced)."""

    kind: Literal["run"]
    run: str = Field(min_length=1, description="run folder to start from")
    epoch: int | Literal["final", "best"] = Field(
        default="final", description="checkpoint epoch, 'final' or 'best'"
    )

    # The folder a relative ``run`` lies in, given by whoever trains the spec (a study:
    # its runs folder, see TrainSpec.with_runs_dir). Not part of the spec: never dumped,
    # hashed into a run id or compared on resume, so the study folder can move.
    _runs_dir: Path | None = PrivateAttr(default=None)

    @field_validator("epoch")
    @classmethod
    def _non_negative(cls, epoch: int | str) -> int | str:
        if isinstance(epoch, int) and epoch < 0:
            raise ValueError("must be >= 0, 'final' or 'best'")
        return epoch

    def source_dir(self) -> Path:
        """The run folder to start from: ``run`` if absolute or no runs folder was given
        (then relative to the current folder, as typed on a command line), else
        ``<runs folder>/<run>``."""
        path = Path(self.run).expanduser()
        if path.is_absolute() or self._runs_dir is None:
            return path
        return self._runs_dir / path


class FileInit(StrictModel):
    """Start from a weights file (its head entries, if any, are ignored)."""

    kind: Literal["file"]
    path: str = Field(min_length=1, description="weights file to start from (P-T)")


class PretrainedInit(StrictModel):
    """Start from the model's own pre-trained weights (torchvision, timm or Hugging Face).

    ``kwargs`` are added to the model's keyword arguments when it is built; by default
    ``{"pretrained": true}`` for ``timm:`` and ``hf:`` models and ``{"weights": "DEFAULT"}``
    otherwise.
    """

    kind: Literal["pretrained"]
    kwargs: dict[str, ScalarValue] | None = Field(
        default=None, description="model keyword arguments that load pre-trained weights"
    )

    def build_kwargs(self, model: str) -> dict[str, Any]:
        if self.kwargs is not None:
            return dict(self.kwargs)
        if model.startswith(PRETRAINED_FAMILIES):
            return {"pretrained": True}
        return {"weights": "DEFAULT"}


InitSpec = Annotated[RandomInit | RunInit | FileInit | PretrainedInit, Field(discriminator="kind")]


class TrainSpec(StrictModel):
    """One training run: model, data, initialisation and the optimisation protocol."""

    model_config = ConfigDict(protected_namespaces=())  # allow the field name model_kwargs

    model: str = Field(
        min_length=1,
        description="model registry name, e.g. fixup_resnet10 (transferlens list models), "
        "timm:<name>, hf:<model id or folder>, or your own class or function as "
        "mypkg.models:CifarResNet or path/to/file.py:CifarResNet",
    )
    model_kwargs: dict[str, ScalarValue | list[int]] = Field(
        default_factory=dict, description="model keyword argument, e.g. stem=cifar"
    )
    model_modules: ModulesValue | None = Field(
        default=None,
        description="the model's units (module names or globs, input to output, head last; "
        "or {stage: [...]}): its head is the one P-T replaces (default: found by name)",
    )
    data: DataSpec = Field(description="the data set to train and evaluate on (data keys)")
    init: InitSpec = Field(default_factory=RandomInit, description="how the weights start")
    epochs: int = Field(ge=1, description="training epochs")
    batch_size: int = Field(default=128, ge=1, description="global batch (all processes)")
    lr: float = Field(gt=0, description="base learning rate (SGD)")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(
        default=1e-4, ge=0, description="SGD weight decay, on all parameters"
    )
    bias_scale_lr_factor: float = Field(default=0.1, gt=0, description="lr factor of bias/scale")
    lr_milestones: list[int] = Field(
        default_factory=list, description="epochs after which lr x gamma"
    )
    lr_gamma: float = Field(default=0.1, gt=0, description="lr factor at each milestone")
    warmup_epochs: int = Field(
        default=0, ge=0, description="epochs of linear per-step lr warm-up from 0"
    )
    grad_clip_norm: float | None = Field(
        default=None, gt=0, description="clip the global gradient norm to this; null = off"
    )
    mixup_alpha: float = Field(default=0.0, ge=0, description="0 = no mixup")
    eval_batch_size: int = Field(default=256, ge=1, description="batch of evaluation passes")
    seed: int = Field(default=0, ge=0, description="seed of the run's data order and init")
    num_workers: int = Field(default=0, ge=0, description="data loader worker processes")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N or mps")
    amp: Literal["auto"] | bool = Field(default="auto", description="bf16 autocast (auto: on CUDA)")
    channels_last: Literal["auto"] | bool = Field(
        default="auto", description="channels-last memory layout (auto: on CUDA)"
    )
    train_eval: bool = Field(default=True, description="evaluate the train split every epoch")
    train_eval_size: int | None = Field(
        default=None, ge=1, description="evaluate at most this many training images"
    )
    checkpoint_every: int = Field(default=1, ge=1, description="save a checkpoint every N epochs")

    @field_validator("lr_milestones")
    @classmethod
    def _increasing(cls, milestones: list[int]) -> list[int]:
        if any(m < 1 for m in milestones):
            raise ValueError("milestones must be epochs >= 1")
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError("milestones must be strictly increasing")
        return milestones

    @field_validator("model_modules", mode="before")
    @classmethod
    def _modules_from_text(cls, modules: Any) -> Any:
        # A command-line flag gives text: read it as YAML ("[conv1, layer*, linear]").
        if isinstance(modules, str):
            try:
                return yaml.safe_load(modules)
            except yaml.YAMLError:
                return modules
        return modules

    @model_serializer(mode="wrap")
    def _without_unset_modules(self, handler: Any) -> dict[str, Any]:
        # Unset, ``model_modules`` is not written at all: a spec.json written now is byte
        # for byte the one written before the field existed (provenance hashes the file).
        data = handler(self)
        if self.model_modules is None and isinstance(data, dict):
            data.pop("model_modules", None)
        return data

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not DEVICE_PATTERN.match(device):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return device

    @field_validator("model")
    @classmethod
    def _model_exists(cls, model: str) -> str:
        from transferlens.models import check_model_name

        return check_model_name(model)

    def with_runs_dir(self, runs_dir: str | os.PathLike) -> TrainSpec:
        """This spec, its relative ``init.run`` found in ``runs_dir`` (identity unchanged).

        A study's P-T specs name their source by run id; the executor that trains one
        says where the study's run folders are, explicitly.
        """
        if not isinstance(self.init, RunInit):
            return self
        init = self.init.model_copy()
        init._runs_dir = Path(runs_dir)
        return self.model_copy(update={"init": init})

    def comparable(self) -> dict[str, Any]:
        """The spec as JSON data that names its run (:func:`comparable_json`): what a
        resumed run must match, and what a study hashes into the run's id."""
        return comparable_json(self.model_dump(mode="json"))


def comparable_json(spec_json: dict[str, Any]) -> dict[str, Any]:
    """A spec's JSON without what may change between a run and its resumption.

    Drops :data:`EXECUTION_FIELDS`, ``data.root`` (where the same data happens to live)
    and :data:`OFF_BY_DEFAULT` fields at their off value.
    """
    data = {key: value for key, value in spec_json.items() if key not in EXECUTION_FIELDS}
    data = without_off_fields(data)
    if isinstance(data.get("data"), dict):
        data["data"] = {key: value for key, value in data["data"].items() if key != "root"}
    return data


def without_off_fields(spec_json: dict[str, Any]) -> dict[str, Any]:
    """``spec_json`` without the :data:`OFF_BY_DEFAULT` fields that hold their off value."""
    return {
        key: value
        for key, value in spec_json.items()
        if not (key in OFF_BY_DEFAULT and value == OFF_BY_DEFAULT[key])
    }

"""What a study is: one YAML file describing the paper's grid of runs and analyses.

A study names a source (a data set to pre-train on, a weights file, or a model's own
pre-trained weights), the targets to fine-tune on, the model, the training settings
of each arm (``pretrain`` = P, ``pt`` = P-T, ``rit`` = RI-T), the repeats (seeds) and
the two sweeps of the paper (block shuffling and pre-training checkpoints), plus the
analyses to run on the finished runs. :func:`load_study` validates everything before
any work starts: unknown keys, wrong types, unknown models or data sets, missing data
folders and block sizes that do not divide the image size are one-line
:class:`~transferlens.errors.UserInputError` s (exit code 2).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from transferlens.data.spec import DataSpec
from transferlens.errors import UserInputError
from transferlens.study.analyses.registry import ANALYSES
from transferlens.validation import StrictModel

# Data sets generated in memory: they need no data folder.
GENERATED_DATASETS = ("synthetic",)
DATA_ROOT_ENV = "TRANSFERLENS_DATA"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ScalarValue = int | float | str | bool | None


class ModelSettings(StrictModel):
    """The network every run of the study trains (``kwargs`` go to ``build_model``).

    ``name``: a registered model, ``timm:<name>``, ``hf:<model id or folder>``, or your
    own class or factory function as ``mypkg.models:CifarResNet`` or
    ``path/to/file.py:CifarResNet`` (imported from the current directory). ``modules``:
    the model's units for the module map (module names or globs from input to output,
    the head last, or ``{stage: [...]}``); default: derived from the model.
    """

    name: str = Field(min_length=1)
    kwargs: dict[str, ScalarValue | list[int]] = Field(default_factory=dict)
    modules: list[str] | dict[str, list[str]] | None = Field(
        default=None,
        description="the model's units: module names or globs from input to output, the "
        "head last, or {stage: [...]} (default: derived from the model)",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from transferlens.models import check_model_name

        return check_model_name(name)


class ArmSettings(StrictModel):
    """Training settings of one arm; unset optional fields keep TrainSpec's defaults.

    ``augment`` switches the training split's random crop and flip; the block-shuffle
    sweep overrides it with ``block_shuffle.augment`` (the paper's "noaug" configs).
    """

    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    batch_size: int | None = Field(default=None, ge=1)
    momentum: float | None = Field(default=None, ge=0, lt=1)
    weight_decay: float | None = Field(default=None, ge=0)
    bias_scale_lr_factor: float | None = Field(default=None, gt=0)
    lr_milestones: list[int] | None = None
    lr_gamma: float | None = Field(default=None, gt=0)
    warmup_epochs: int | None = Field(default=None, ge=0)
    grad_clip_norm: float | None = Field(default=None, gt=0)
    mixup_alpha: float | None = Field(default=None, ge=0)
    augment: bool = True
    eval_batch_size: int | None = Field(default=None, ge=1)
    num_workers: int | None = Field(default=None, ge=0)
    amp: Literal["auto"] | bool | None = None
    channels_last: Literal["auto"] | bool | None = None
    train_eval: bool | None = None
    train_eval_size: int | None = Field(default=None, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=1)

    def train_fields(self) -> dict[str, Any]:
        """The TrainSpec fields this arm sets (everything but ``augment``; unset left out)."""
        data = self.model_dump(exclude={"augment"}, exclude_none=True)
        return data


class TrainingSettings(StrictModel):
    """Settings per arm: P (``pretrain``), P-T (``pt``) and RI-T (``rit``)."""

    pretrain: ArmSettings | None = None
    pt: ArmSettings | None = None
    rit: ArmSettings


class SourceSettings(StrictModel):
    """Where P comes from: exactly one of ``data``, ``weights`` or ``pretrained``.

    ``data``: pre-train on this data set with ``training.pretrain`` (seed ``seed``);
    ``weights``: a weights file (safetensors, or a PyTorch file read with
    ``weights_only=True``); ``pretrained``: the model's own torchvision/timm weights,
    ``true`` for the default ones or a mapping of keyword arguments (e.g.
    ``{weights: IMAGENET1K_V2}``).
    """

    label: str = "source"
    data: DataSpec | None = None
    weights: str | None = None
    pretrained: bool | dict[str, ScalarValue] | None = None
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSettings:
        given = [key for key in ("data", "weights", "pretrained") if getattr(self, key)]
        if len(given) != 1:
            raise ValueError("give exactly one of data, weights or pretrained")
        return self


class TargetSettings(StrictModel):
    """A target data set and its label in tables (e.g. ``real``)."""

    label: str = Field(pattern=NAME_PATTERN)
    data: DataSpec


BlockSize = int | None


def _check_seeds(seeds: list[int]) -> list[int]:
    if len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        raise ValueError("seeds must be distinct integers >= 0")
    return seeds


Seeds = Annotated[list[int], Field(min_length=1), AfterValidator(_check_seeds)]


class BlockShuffleSweep(StrictModel):
    """The feature-reuse sweep: P-T and RI-T on block-shuffled copies of some targets.

    ``block_sizes``: integers (``0`` = pixel shuffle), ``null``/``"none"`` = unshuffled.
    ``seeds``: the repeats of the sweep (default: the study's ``seeds``); fewer repeats
    than the main grid keep a large sweep affordable. ``shuffle_seeds`` pair with those
    seeds (default ``1234 + i`` for the i-th seed, the paper's ``1234 + s``).
    """

    targets: list[str] = Field(min_length=1)
    block_sizes: list[BlockSize] = Field(min_length=1)
    seeds: Seeds | None = None
    shuffle_seeds: list[int] | None = None
    augment: bool = False

    @field_validator("block_sizes", mode="before")
    @classmethod
    def _words(cls, sizes: Any) -> Any:
        if not isinstance(sizes, list):
            return sizes
        words = {"none": None, "unshuffled": None, "pixel": 0}
        return [words.get(size.lower(), size) if isinstance(size, str) else size for size in sizes]

    @field_validator("block_sizes")
    @classmethod
    def _non_negative(cls, sizes: list[BlockSize]) -> list[BlockSize]:
        for size in sizes:
            if size is not None and size < 0:
                raise ValueError(f"block sizes are >= 0 (0 = pixel shuffle) or null (got {size})")
        return sizes


class PretrainCheckpointSweep(StrictModel):
    """P-T from several epochs of P's pre-training (``"final"`` = its last epoch).

    ``seeds``: the repeats of the sweep (default: the study's ``seeds``).
    """

    targets: list[str] = Field(min_length=1)
    epochs: list[int | Literal["final"]] = Field(min_length=1)
    seeds: Seeds | None = None

    @field_validator("epochs")
    @classmethod
    def _non_negative(cls, epochs: list[int | str]) -> list[int | str]:
        if any(isinstance(epoch, int) and epoch < 0 for epoch in epochs):
            raise ValueError("epochs are >= 0 or 'final'")
        return epochs


class SlurmResources(StrictModel):
    """Resources of one SLURM job (one run)."""

    partition: str | None = None
    time_minutes: int = Field(default=24 * 60, ge=1)
    cpus_per_task: int = Field(default=2, ge=1)
    gpus_per_task: int = Field(default=0, ge=0)
    mem_gb: float | None = Field(default=None, gt=0)
    additional: dict[str, str | int] = Field(default_factory=dict)


class SlurmSettings(SlurmResources):
    """SLURM defaults for every run, with an override for the pre-training run."""

    array_parallelism: int = Field(default=64, ge=1)
    pretrain: SlurmResources | None = None


def _defaults_if_null(settings: Any) -> Any:
    # ``cka:`` or ``cka: null`` in YAML asks for the analysis with its default settings.
    return {} if settings is None else settings


def _analyses_settings() -> type:
    """The ``analyses:`` mapping: each key optional, its value that analysis's settings
    model (:data:`~transferlens.study.analyses.ANALYSES`); unknown keys refused."""
    fields = {
        name: Annotated[analysis.settings, BeforeValidator(_defaults_if_null)]
        for name, analysis in ANALYSES.items()
    }
    mapping = TypedDict("AnalysesSettings", fields, total=False)  # type: ignore[operator]
    mapping.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    return mapping


AnalysesSettings = _analyses_settings()


class StudySpec(StrictModel):
    """A whole study (see the module docstring; ``studies/*.yaml`` are examples)."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    output: str | None = Field(default=None, description="study folder (default runs/<name>)")
    data_root: str | None = Field(default=None, description=f"default: ${DATA_ROOT_ENV}")
    model: ModelSettings
    source: SourceSettings
    targets: list[TargetSettings] = Field(min_length=1)
    training: TrainingSettings
    seeds: Seeds = [0]
    block_shuffle: BlockShuffleSweep | None = None
    pretrain_checkpoints: PretrainCheckpointSweep | None = None
    analyses: AnalysesSettings = Field(default_factory=dict)  # type: ignore[valid-type]
    devices: str | list[int | str] | None = None
    jobs: int | None = Field(default=None, ge=1)
    threads_per_run: int = Field(
        default=1,
        ge=1,
        description="CPU threads of each training process, on every machine and executor "
        "(the thread count changes a run's numbers; CPU jobs default to cores // this)",
    )
    keep_checkpoints: Literal["all", "needed"] = Field(
        default="all",
        description="'needed': keep only the checkpoints the analyses and sweeps read "
        "(epoch 0, the final one, the pre-training epochs fine-tuned from, every epoch "
        "of each target's first-seed main runs) and the latest while a run trains",
    )
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    @model_validator(mode="before")
    @classmethod
    def _merge_data_defaults(cls, data: Any) -> Any:
        """``data_defaults`` (a partial DataSpec) fills every source/target data entry."""
        if not isinstance(data, dict) or "data_defaults" not in data:
            return data
        data = dict(data)
        defaults = data.pop("data_defaults")
        if not isinstance(defaults, dict):
            return data  # left for the data entries' own validation to report
        source = data.get("source")
        if isinstance(source, dict) and isinstance(source.get("data"), dict):
            data["source"] = {**source, "data": {**defaults, **source["data"]}}
        targets = data.get("targets")
        if isinstance(targets, list):
            data["targets"] = [
                {**t, "data": {**defaults, **t["data"]}}
                if isinstance(t, dict) and isinstance(t.get("data"), dict)
                else t
                for t in targets
            ]
        return data

    @field_validator("analyses", mode="before")
    @classmethod
    def _known_analyses(cls, analyses: Any) -> Any:
        """An unknown analysis name is refused naming the known ones (order: run order)."""
        if isinstance(analyses, dict):
            for name in analyses:
                if name not in ANALYSES:
                    raise PydanticCustomError(
                        "unknown_analysis",
                        "unknown analysis {name} (known: {known})",
                        {"name": repr(name), "known": ", ".join(ANALYSES)},
                    )
        return analyses

    def target(self, label: str) -> TargetSettings:
        return next(target for target in self.targets if target.label == label)

    @property
    def pretrains(self) -> bool:
        """Whether the study pre-trains P itself (a source data set)."""
        return self.source.data is not None


def check_study(study: StudySpec, source: str) -> None:
    """The rules pydantic cannot see (cross-field, model keyword arguments); each error
    names its key."""
    _check_structure(study, source)
    _check_model_kwargs(study, source)


def _check_structure(study: StudySpec, source: str) -> None:
    """Cross-field rules pydantic cannot see; each error names its key."""
    labels = [target.label for target in study.targets]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise UserInputError(f"{source}: targets: duplicate label {duplicated[0]!r}")
    if study.pretrains and study.training.pretrain is None:
        raise UserInputError(f"{source}: training.pretrain: required when source.data is given")
    if study.training.pt is None:
        raise UserInputError(f"{source}: training.pt: required (the P-T arm's settings)")
    for sweep_name in ("block_shuffle", "pretrain_checkpoints"):
        sweep = getattr(study, sweep_name)
        for label in sweep.targets if sweep else []:
            if label not in labels:
                raise UserInputError(
                    f"{source}: {sweep_name}.targets: unknown target {label!r} "
                    f"(targets: {', '.join(labels)})"
                )
    if study.block_shuffle is not None:
        _check_block_sizes(study, source)
    if study.pretrain_checkpoints is not None:
        _check_checkpoint_epochs(study, source)


def _check_block_sizes(study: StudySpec, source: str) -> None:
    sweep = study.block_shuffle
    assert sweep is not None
    seeds = sweep.seeds or study.seeds
    if sweep.shuffle_seeds is not None and len(sweep.shuffle_seeds) != len(seeds):
        raise UserInputError(
            f"{source}: block_shuffle.shuffle_seeds: needs one seed per entry of "
            f"{'block_shuffle.seeds' if sweep.seeds else 'seeds'} ({len(seeds)}), "
            f"got {len(sweep.shuffle_seeds)}"
        )
    for label in sweep.targets:
        index = [target.label for target in study.targets].index(label)
        image_size = study.targets[index].data.image_size
        if image_size is None:
            raise UserInputError(
                f"{source}: targets.{index}.data.image_size: required for block shuffling"
            )
        for size in sweep.block_sizes:
            if size and image_size % size:
                raise UserInputError(
                    f"{source}: block_shuffle.block_sizes: {size} does not divide the image "
                    f"size {image_size} of target {label!r}"
                )


def _check_checkpoint_epochs(study: StudySpec, source: str) -> None:
    if not study.pretrains:
        raise UserInputError(
            f"{source}: pretrain_checkpoints: needs a source data set to pre-train on (source.data)"
        )
    pretrain = study.training.pretrain
    assert pretrain is not None
    every = pretrain.checkpoint_every or 1
    for epoch in study.pretrain_checkpoints.epochs:  # type: ignore[union-attr]
        if epoch == "final":
            continue
        if epoch > pretrain.epochs:
            raise UserInputError(
                f"{source}: pretrain_checkpoints.epochs: {epoch} is beyond the "
                f"{pretrain.epochs} pre-training epochs"
            )
        if epoch % every and epoch != pretrain.epochs:
            raise UserInputError(
                f"{source}: pretrain_checkpoints.epochs: epoch {epoch} is not saved "
                f"(training.pretrain.checkpoint_every is {every})"
            )


def _check_model_kwargs(study: StudySpec, source: str) -> None:
    """Build the model on the meta device: checks its keyword arguments, that it returns
    an ``nn.Module`` and that ``modules`` (when given) cover every parameter exactly
    once; allocates nothing."""
    import torch

    from transferlens.models import build_model
    from transferlens.models.module_map import module_map

    kwargs = dict(study.model.kwargs)
    if any(key in kwargs for key in ("weights", "pretrained")):
        return  # building would load weights; TrainSpec checks these when the run starts
    try:
        try:
            with torch.device("meta"):
                model = build_model(study.model.name, 2, **kwargs)
        except (NotImplementedError, RuntimeError):
            # A user's class that computes with its tensors while it is built: on the CPU.
            with torch.random.fork_rng(devices=[]):
                model = build_model(study.model.name, 2, **kwargs)
    except UserInputError as error:
        raise UserInputError(f"{source}: model: {error}") from None
    if study.model.modules is not None:
        try:
            module_map(model, study.model.modules)
        except UserInputError as error:
            raise UserInputError(f"{source}: model.modules: {error}") from None

"""What a data set is (:class:`DataSpec`) and what building one gives (:class:`DataSplits`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field, field_validator
from torch.utils.data import Dataset

from transferlens.metrics import Task
from transferlens.validation import StrictModel


class DataSpec(StrictModel):
    """A data set by registry name, with its options and the input shuffling of the paper.

    ``block_size``: ``None`` leaves images intact; ``0`` is the paper's pixel shuffle
    (one fixed permutation of all C*H*W values); ``b > 0`` cuts each image into b x b
    blocks (all channels moving together) and permutes the blocks. The permutation is
    fixed by ``shuffle_seed`` and shared by every image of every split (the paper's
    seeds are 1234 + s). ``per_image_permutation`` draws a fresh permutation per image
    instead (not the paper's protocol; off by default).
    """

    name: str = Field(
        description="registry name, e.g. synthetic, image_folder, cifar10, pacs, domainnet, chexpert"
    )
    domain: str | None = Field(
        default=None, description="domain of a multi-domain data set (synthetic, pacs, domainnet)"
    )
    root: str | None = Field(
        default=None, description="folder of the data on disk (real data sets)"
    )
    image_size: int | None = Field(default=None, gt=0, description="side in pixels after resizing")
    train_size: int | None = Field(
        default=None, gt=0, description="at most this many training images"
    )
    test_size: int | None = Field(default=None, gt=0, description="at most this many test images")
    split_seed: int = Field(
        default=0, description="seed of generated data and of splits the data set lacks"
    )
    augment: bool = Field(default=False, description="random crop and flip on the training split")
    block_size: int | None = Field(default=None, ge=0)
    shuffle_seed: int = 1234
    per_image_permutation: bool = False
    options: dict[str, int | float | str | bool | list[str]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        from transferlens.data.registry import dataset_names

        if name not in dataset_names():
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
        return name


@dataclass(frozen=True)
class DataSplits:
    """A built data set: train and test splits plus what a model and a loss need to know.

    Items of both splits are ``(image, target)``: ``image`` a float32 ``[C, H, W]``
    tensor, normalised (and shuffled, if asked); ``target`` an int64 class index for
    ``task == "multiclass"`` or a float32 multi-hot vector for ``"multilabel"``.
    """

    train: Dataset
    test: Dataset
    num_classes: int
    task: Task
    image_size: int
    channels: int = 3
    class_names: tuple[str, ...] = field(default_factory=tuple)
    # The training split without augmentation, for "train metric in evaluation mode".
    train_eval: Dataset | None = None

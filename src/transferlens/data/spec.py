"""What a data set is (:class:`DataSpec`) and what building one gives (:class:`DataSplits`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field, field_validator
from torch.utils.data import Dataset

from transferlens.data.normalisation import Normalisation
from transferlens.data.options import DataOptions
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
        description="registry name: synthetic, image_folder (your own class folders), cifar10, "
        "pacs, domainnet, chexpert (transferlens list datasets)"
    )
    domain: str | None = Field(
        default=None, description="domain of a multi-domain data set (synthetic, pacs, domainnet)"
    )
    root: str | None = Field(
        default=None,
        description="folder of the data on disk (image_folder: the folder of class folders)",
    )
    image_size: int | None = Field(
        default=None,
        gt=0,
        description="side in pixels after resizing (null: the data set's own; image_folder: "
        "the images' size, which must then be one square size)",
    )
    train_size: int | None = Field(
        default=None, gt=0, description="at most this many training images (null: all)"
    )
    test_size: int | None = Field(
        default=None, gt=0, description="at most this many test images (null: all)"
    )
    split_seed: int = Field(
        default=0, description="seed of generated data and of splits the data set lacks"
    )
    augment: bool = Field(default=False, description="random crop and flip on the training split")
    block_size: int | None = Field(
        default=None, ge=0, description="null: intact; 0: pixel shuffle; b: shuffled b x b blocks"
    )
    shuffle_seed: int = Field(default=1234, description="seed of the shuffling permutation")
    per_image_permutation: bool = Field(
        default=False, description="a fresh permutation per image (not the paper's protocol)"
    )
    options: DataOptions = Field(
        default_factory=dict,
        description=(
            "settings of the data set, e.g. test_fraction (default 0.2) of a folder without "
            "a split; normalisation: each data set states its mean and std (cifar10 and pacs: "
            "CIFAR-10's; image_folder, domainnet, chexpert: ImageNet's); normalize: auto "
            "(image_folder, cifar10, pacs: computed from the training split), imagenet or "
            "cifar10, or mean and std as [r, g, b] or 'r,g,b'"
        ),
    )

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
    # The mean and std the images were normalised with, and where they come from.
    normalisation: Normalisation | None = None

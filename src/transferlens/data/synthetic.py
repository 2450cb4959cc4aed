"""The embedded synthetic data set: a source domain and three target domains, no files.

``DataSpec(name="synthetic", domain=...)`` with ``domain`` one of

- ``source``: the pre-training domain (plays ImageNet): ``options.source_classes``
  glyph classes (default 40) drawn photo-like;
- ``real``, ``clipart``, ``quickdraw``: three target domains (play DomainNet) sharing
  one label set of ``options.target_classes`` glyph classes (default 10), disjoint
  from the source classes but built from the same primitives, drawn photo-like (as
  the source), as flat clipart, and as thin grey sketches.

The domains differ only in how images are drawn (``synthetic_styles``): the pipeline
is told nothing about them (one normalisation for all). Images are generated from
``split_seed`` (train and test from disjoint random streams) and are bit-identical for
the same spec; see ``synthetic_render``. Other options: ``world_seed`` (which glyphs
the classes are, default 0) and ``variation`` (intra-class variation, default 1.0).
"""

from __future__ import annotations

from functools import lru_cache

from torch import Tensor

from transferlens.data.normalisation import Normalisation
from transferlens.data.options import check_options, float_option, int_option
from transferlens.data.registry import register_dataset
from transferlens.data.shuffle import make_shuffle
from transferlens.data.spec import DataSpec, DataSplits
from transferlens.data.synthetic_glyphs import PRIMITIVES, Variation
from transferlens.data.synthetic_render import DOMAINS, World, generate_split, label_set
from transferlens.data.tensor_dataset import TensorImageDataset
from transferlens.errors import UserInputError

# Per-channel mean and std of the four domains pooled (3,000 images each, 32 px,
# split_seed 0; rounded), fixed once and used for every domain so that normalisation
# says nothing about the domain. Pooled rather than the source's alone: the white
# sketches would otherwise sit ~2 std above zero, which stalls a network trained from
# scratch without normalisation layers (RI-T) for hundreds of steps.
MEAN = (0.77, 0.77, 0.77)
STD = (0.23, 0.23, 0.23)
NORMALISATION = Normalisation(MEAN, STD, "the synthetic domains' pooled statistics (fixed)")

DEFAULT_IMAGE_SIZE = 32
# (train, test) images per domain; the three targets share one setting.
DEFAULT_SIZES = {"source": (20000, 2000), "target": (1000, 1000)}
OPTIONS = ("source_classes", "target_classes", "variation", "world_seed")
_MIN_IMAGE_SIZE = 8


def _world(spec: DataSpec) -> World:
    check_options("synthetic", spec.options, OPTIONS)
    source_classes = int_option(spec.options, "source_classes", World.source_classes)
    target_classes = int_option(spec.options, "target_classes", World.target_classes)
    variation = float_option(spec.options, "variation", 1.0)
    world_seed = int_option(spec.options, "world_seed", World.world_seed)
    for key, value in (("source_classes", source_classes), ("target_classes", target_classes)):
        if value < 2:
            raise UserInputError(f"synthetic: options.{key} must be at least 2 (got {value})")
    if not 0.0 <= variation <= 4.0:
        raise UserInputError(f"synthetic: options.variation must be in [0, 4] (got {variation})")
    return World(source_classes, target_classes, world_seed, Variation(jitter=variation))


@lru_cache(maxsize=8)
def _cached_split(
    domain: str, split: str, count: int, image_size: int, split_seed: int, world: World
) -> tuple[Tensor, Tensor]:
    # A study builds the same spec many times (every run, every analysis): draw it once.
    # The returned tensors are shared; TensorImageDataset never writes to them.
    return generate_split(domain, split, count, image_size, split_seed, world)


def class_names(domain: str, world: World) -> tuple[str, ...]:
    """``source_00``, ... or ``target_00``, ... (the classes are glyphs, not named things)."""
    labels = label_set(domain)
    count = world.source_classes if labels == "source" else world.target_classes
    return tuple(f"{labels}_{index:02d}" for index in range(count))


@register_dataset("synthetic")
def build_synthetic(spec: DataSpec) -> DataSplits:
    """Generate (or reuse from the in-process cache) the splits of ``spec`` (module doc)."""
    if spec.domain not in DOMAINS:
        raise UserInputError(
            f"synthetic: unknown domain {spec.domain!r} (known: {', '.join(DOMAINS)})"
        )
    world = _world(spec)
    image_size = spec.image_size or DEFAULT_IMAGE_SIZE
    if image_size < _MIN_IMAGE_SIZE:
        raise UserInputError(
            f"synthetic: image_size must be at least {_MIN_IMAGE_SIZE} (got {image_size})"
        )
    default_train, default_test = DEFAULT_SIZES[label_set(spec.domain)]
    train_size = spec.train_size or default_train
    test_size = spec.test_size or default_test
    train_images, train_labels = _cached_split(
        spec.domain, "train", train_size, image_size, spec.split_seed, world
    )
    test_images, test_labels = _cached_split(
        spec.domain, "test", test_size, image_size, spec.split_seed, world
    )
    names = class_names(spec.domain, world)
    shuffle = make_shuffle(spec.block_size, spec.shuffle_seed, spec.per_image_permutation)

    def dataset(images: Tensor, labels: Tensor, augment: bool) -> TensorImageDataset:
        return TensorImageDataset(
            images, labels, MEAN, STD, augment=augment, shuffle=shuffle, num_classes=len(names)
        )

    train = dataset(train_images, train_labels, spec.augment)
    return DataSplits(
        train=train,
        test=dataset(test_images, test_labels, False),
        num_classes=len(names),
        task="multiclass",
        image_size=image_size,
        channels=3,
        class_names=names,
        train_eval=dataset(train_images, train_labels, False) if spec.augment else train,
        normalisation=NORMALISATION,
    )


__all__ = ["DEFAULT_SIZES", "DOMAINS", "MEAN", "OPTIONS", "PRIMITIVES", "STD", "build_synthetic"]

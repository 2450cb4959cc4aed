"""``image_folder``: images in class folders, decoded once into memory (and cached on disk).

Layouts: ``root/<class>/<image>`` (no split: a seeded stratified split is made) or
``root/train/<class>/<image>`` + ``root/test/<class>/<image>`` (the official split).
With ``spec.domain`` set, ``root/<domain>`` is used instead of ``root``. Class names are
the sorted folder names; files are sorted by their path relative to their class folder.

The split (when the data has none) and the ``train_size`` / ``test_size`` subsamples
follow :mod:`transferlens.data.splits` with ``seed = spec.split_seed`` (option
``test_fraction``, default 0.2). Images are decoded with
:func:`transferlens.data.transforms.decode_image` to ``spec.image_size`` (default: the
native size, which must then be one square size) into a uint8 tensor, cached in
``$TRANSFERLENS_CACHE/images/<key>.safetensors`` where ``key`` hashes the absolute file
paths, their sizes and modification times, and the image size.

Normalisation (:mod:`transferlens.data.normalisation`): ImageNet's statistics unless
the options say otherwise (the presets pass their own: CIFAR-10's for ``cifar10`` and
``pacs``); the built data states what it uses (``DataSplits.normalisation``). With
``options.normalize: auto`` the mean and std are those of the training split's decoded
images (after ``train_size``), computed once and cached beside them as
``<key>.normalisation.json``.

Options: ``test_fraction``, ``normalize``, ``mean`` and ``std``.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS

from transferlens.data.locations import cache_dir
from transferlens.data.normalisation import (
    IMAGENET,
    NORMALIZATION_OPTIONS,
    Normalisation,
    channel_statistics,
    requested_normalisation,
)
from transferlens.data.options import check_options, float_option
from transferlens.data.registry import register_dataset
from transferlens.data.shuffle import block_permutation_index, make_shuffle
from transferlens.data.spec import DataSpec, DataSplits
from transferlens.data.splits import stratified_split, stratified_subsample
from transferlens.data.tensor_dataset import TensorImageDataset
from transferlens.data.transforms import decode_image
from transferlens.errors import UserInputError
from transferlens.io import atomic_save_safetensors, atomic_write_json

__all__ = [
    "FileList",
    "build_folder_splits",
    "load_images",
    "scan_class_folders",
    "training_normalisation",
]

CACHE_VERSION = "images-v1"  # bump when decoding changes, to invalidate old caches
STATISTICS_VERSION = "statistics-v1"  # bump when channel_statistics changes


@dataclass(frozen=True)
class FileList:
    """Image files with class indices into ``class_names``."""

    paths: tuple[Path, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]

    def select(self, indices: np.ndarray) -> FileList:
        return FileList(
            tuple(self.paths[i] for i in indices), self.labels[indices], self.class_names
        )


def _image_files(class_folder: Path) -> list[Path]:
    """Image files under ``class_folder`` (recursively), sorted by their relative POSIX path."""
    # os.walk reads the file types from the directory listing: no stat per file, which
    # matters for CIFAR-10's 60,000 files.
    found = []
    for folder, subfolders, names in os.walk(class_folder):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative = Path(folder).relative_to(class_folder).as_posix()
        prefix = "" if relative == "." else relative + "/"
        found += [
            prefix + name
            for name in names
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMG_EXTENSIONS
        ]
    return [class_folder / name for name in sorted(found)]


def scan_class_folders(folder: Path, class_names: tuple[str, ...] | None = None) -> FileList:
    """Every image under ``folder/<class>/`` (recursively), classes and files sorted.

    With ``class_names`` given, each class folder must be one of them (a test split
    uses the training split's classes).
    """
    if not folder.is_dir():
        raise UserInputError(f"{folder}: folder not found")
    found = sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not found:
        raise UserInputError(f"{folder}: no class folders (expected {folder}/<class>/<image>)")
    names = tuple(found) if class_names is None else class_names
    index = {name: i for i, name in enumerate(names)}
    paths: list[Path] = []
    labels: list[int] = []
    for name in found:
        if name not in index:
            raise UserInputError(
                f"{folder / name}: class {name!r} is not among the training classes"
            )
        files = _image_files(folder / name)
        paths.extend(files)
        labels.extend([index[name]] * len(files))
    if not paths:
        raise UserInputError(f"{folder}: no image files in its class folders")
    return FileList(tuple(paths), np.asarray(labels, dtype=np.int64), names)


def _cache_key(paths: tuple[Path, ...], image_size: int | None) -> str:
    digest = hashlib.sha256(f"{CACHE_VERSION}|{image_size}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"\n{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _cache_file(paths: tuple[Path, ...], image_size: int | None) -> Path:
    return cache_dir("images") / f"{_cache_key(paths, image_size)}.safetensors"


def _read_statistics(path: Path, channels: int) -> tuple[list[float], list[float]] | None:
    """Cached ``(mean, std)``, or ``None`` when absent, unreadable or of another version."""
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        mean, std = cached["mean"], cached["std"]
        if cached["version"] == STATISTICS_VERSION and len(mean) == len(std) == channels:
            return [float(value) for value in mean], [float(value) for value in std]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def training_normalisation(
    paths: tuple[Path, ...], image_size: int | None, images: torch.Tensor
) -> Normalisation:
    """``normalize: auto``: the statistics of ``images`` (decoded from ``paths``), cached.

    The cache entry sits beside the decoded images (same key), so it is computed once
    per set of files and image size; a constant channel (std 0) is a UserInputError.
    """
    stats_file = _cache_file(paths, image_size).with_suffix(".normalisation.json")
    cached = _read_statistics(stats_file, int(images.shape[1]))
    if cached is None:
        mean, std = channel_statistics(images)
        atomic_write_json(
            stats_file, {"version": STATISTICS_VERSION, "mean": list(mean), "std": list(std)}
        )
    else:
        mean, std = tuple(cached[0]), tuple(cached[1])
    if any(value <= 0 for value in std):
        raise UserInputError(
            f"options.normalize: auto: a channel of the {len(paths)} training images is "
            f"constant (std {tuple(std)}); give options.mean and options.std"
        )
    source = f"computed from the {len(paths)} training images (options.normalize: auto)"
    return Normalisation(tuple(mean), tuple(std), source)


def _decode_all(paths: tuple[Path, ...], image_size: int | None) -> torch.Tensor:
    # PIL releases the GIL while decoding, so threads overlap the work.
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda path: decode_image(path, image_size), paths, chunksize=64))
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        first = images[0].shape
        odd = next(i for i, image in enumerate(images) if image.shape != first)
        raise UserInputError(
            f"{paths[odd]}: size {tuple(images[odd].shape[1:])} differs from {paths[0]} "
            f"{tuple(first[1:])}; set data.image_size to resize all images to one size"
        )
    return torch.stack(images)


def load_images(paths: tuple[Path, ...], image_size: int | None) -> torch.Tensor:
    """uint8 ``[N, 3, S, S]`` images of ``paths``, decoded once and then read from the cache."""
    if not paths:
        raise UserInputError("no images to load (train_size/test_size or the split left none)")
    from safetensors.torch import load_file

    cache_file = _cache_file(paths, image_size)
    if cache_file.is_file():
        try:
            return load_file(str(cache_file))["images"]
        except Exception:  # a corrupt cache entry is rebuilt, never trusted
            cache_file.unlink(missing_ok=True)
    images = _decode_all(paths, image_size)
    atomic_save_safetensors({"images": images}, cache_file)
    return images


def _train_test_files(
    folder: Path, spec: DataSpec, test_fraction: float
) -> tuple[FileList, FileList]:
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        train = scan_class_folders(folder / "train")
        return train, scan_class_folders(folder / "test", train.class_names)
    files = scan_class_folders(folder)
    train_idx, test_idx = stratified_split(files.labels, test_fraction, spec.split_seed)
    return files.select(train_idx), files.select(test_idx)


def build_folder_splits(
    spec: DataSpec,
    folder: Path,
    *,
    default_image_size: int | None = None,
    default_normalisation: Normalisation = IMAGENET,
    extra_options: tuple[str, ...] = (),
) -> DataSplits:
    """:class:`DataSplits` of the class folders in ``folder`` (the rules of the module doc)."""
    check_options(
        spec.name, spec.options, ("test_fraction", *NORMALIZATION_OPTIONS, *extra_options)
    )
    test_fraction = float_option(spec.options, "test_fraction", 0.2)
    requested = requested_normalisation(
        spec.name, spec.options, default_normalisation, auto_allowed=True
    )
    train_files, test_files = _train_test_files(folder, spec, test_fraction)
    train_files = train_files.select(
        stratified_subsample(train_files.labels, spec.train_size, spec.split_seed)
    )
    test_files = test_files.select(
        stratified_subsample(test_files.labels, spec.test_size, spec.split_seed)
    )
    image_size = spec.image_size or default_image_size
    train_images = load_images(train_files.paths, image_size)
    test_images = load_images(test_files.paths, image_size)
    height, width = train_images.shape[-2:]
    if height != width or test_images.shape[1:] != train_images.shape[1:]:
        raise UserInputError(
            f"{folder}: images are {height}x{width} (train) and "
            f"{test_images.shape[-2]}x{test_images.shape[-1]} (test); set data.image_size"
        )
    if spec.block_size:  # fail at build time, not at the first batch
        block_permutation_index(spec.block_size, height, width, spec.shuffle_seed)
    normalisation = (
        training_normalisation(train_files.paths, image_size, train_images)
        if requested is None  # options.normalize: auto
        else requested
    )
    mean, std = normalisation.mean, normalisation.std
    shuffle = make_shuffle(spec.block_size, spec.shuffle_seed, spec.per_image_permutation)
    num_classes = len(train_files.class_names)

    def dataset(images: torch.Tensor, files: FileList, augment: bool) -> TensorImageDataset:
        targets = torch.from_numpy(files.labels)
        return TensorImageDataset(images, targets, mean, std, augment, shuffle, num_classes)

    train = dataset(train_images, train_files, spec.augment)
    return DataSplits(
        train=train,
        test=dataset(test_images, test_files, False),
        num_classes=num_classes,
        task="multiclass",
        image_size=int(height),
        channels=int(train_images.shape[1]),
        class_names=train_files.class_names,
        train_eval=train.with_options(augment=False) if spec.augment else train,
        normalisation=normalisation,
    )


@register_dataset("image_folder")
def build_image_folder(spec: DataSpec) -> DataSplits:
    """``image_folder``: ``spec.root`` (or ``spec.root/<spec.domain>``) holds class folders."""
    if not spec.root:
        raise UserInputError("image_folder: set data.root to the folder holding the class folders")
    folder = Path(spec.root).expanduser()
    if spec.domain:
        folder = folder / spec.domain
    if not folder.is_dir():
        raise UserInputError(f"image_folder: folder {folder} not found (data.root)")
    return build_folder_splits(spec, folder)

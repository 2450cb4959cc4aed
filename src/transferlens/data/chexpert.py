"""``chexpert``: CheXpert (Irvin et al. 2019) with the paper's labels and split.

Layout: ``<root>/train.csv`` (CheXpert-v1.0-small: a ``Path`` column and one column per
finding) with the images it lists; ``<root>/CheXpert-v1.0-small/train.csv`` is found
too. A ``Path`` whose first component is the CSV's folder name (the official
``CheXpert-v1.0-small/train/...``) is relative to that folder's parent, any other
relative to the CSV's folder.

Labels (the paper's policy): the 5 findings Cardiomegaly, Edema, Consolidation,
Atelectasis, Pleural Effusion as a float32 multi-hot vector; 1 -> 1, 0 -> 0, blank -> 0,
uncertain (-1) -> 1 for Edema and Atelectasis and -> 0 for the others.

Split (the authors' ``split_trainset.py``): the data rows are permuted with
``numpy.random.RandomState(1234).permutation(n)``; ``m = min(50000, n // 2)``;
train = the first ``m`` permuted rows, test = the next ``min(50000, n - m)``. For the
official file (n > 100k) that is the first and the second 50k; a small file splits in
halves. ``train_size`` / ``test_size`` keep the first rows of each part (already in
random order). Images are read lazily as grayscale, resized to ``spec.image_size``
(default 224) and repeated to 3 channels (:func:`transforms.chexpert_transform`),
normalised with ImageNet's statistics (or ``options.mean``/``std``/``normalize``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from transferlens.data.image_files import ImageFileDataset
from transferlens.data.locations import data_root
from transferlens.data.normalisation import IMAGENET, NORMALIZATION_OPTIONS, stated_normalisation
from transferlens.data.options import check_options
from transferlens.data.registry import register_dataset
from transferlens.data.shuffle import block_permutation_index, make_shuffle
from transferlens.data.spec import DataSpec, DataSplits
from transferlens.data.transforms import chexpert_transform
from transferlens.errors import UserInputError

__all__ = ["CHEXPERT_LABELS", "paper_split", "read_labels"]

CHEXPERT_LABELS = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")
UNCERTAIN_AS_POSITIVE = frozenset({"Edema", "Atelectasis"})
PAPER_SPLIT_SEED = 1234
PAPER_MAX_IMAGES = 50_000


def _label_value(text: str, column: str, where: str) -> float:
    text = text.strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise UserInputError(
            f"{where}: column {column!r}: expected 1, 0, -1 or blank (got {text!r})"
        ) from None
    if value == -1.0:
        return 1.0 if column in UNCERTAIN_AS_POSITIVE else 0.0
    if value in (0.0, 1.0):
        return value
    raise UserInputError(f"{where}: column {column!r}: expected 1, 0, -1 or blank (got {text!r})")


def read_labels(csv_file: Path) -> tuple[list[str], np.ndarray]:
    """``(image paths as written, labels float32 [n, 5])`` of a CheXpert CSV (module doc)."""
    with open(csv_file, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise UserInputError(f"{csv_file}: empty file")
        missing = [name for name in ("Path", *CHEXPERT_LABELS) if name not in header]
        if missing:
            raise UserInputError(f"{csv_file}: missing column {missing[0]!r}")
        path_column = header.index("Path")
        label_columns = [header.index(name) for name in CHEXPERT_LABELS]
        paths: list[str] = []
        labels: list[list[float]] = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise UserInputError(
                    f"{csv_file}:{line}: {len(row)} fields, header has {len(header)}"
                )
            where = f"{csv_file}:{line}"
            paths.append(row[path_column])
            labels.append(
                [_label_value(row[c], n, where) for c, n in zip(label_columns, CHEXPERT_LABELS)]
            )
    if not paths:
        raise UserInputError(f"{csv_file}: no data rows")
    return paths, np.asarray(labels, dtype=np.float32)


def paper_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, test)`` of the paper's split of ``n`` rows (module doc)."""
    order = np.random.RandomState(PAPER_SPLIT_SEED).permutation(n)
    train_count = min(PAPER_MAX_IMAGES, n // 2)
    test_count = min(PAPER_MAX_IMAGES, n - train_count)
    return order[:train_count], order[train_count : train_count + test_count]


def _find_csv(root: Path) -> Path:
    for candidate in (root / "train.csv", root / "CheXpert-v1.0-small" / "train.csv"):
        if candidate.is_file():
            return candidate
    raise UserInputError(
        f"chexpert: {root / 'train.csv'} not found (data.root or TRANSFERLENS_DATA)"
    )


def _resolve(csv_folder: Path, written: str) -> Path:
    relative = Path(written)
    if relative.is_absolute():
        raise UserInputError(f"{csv_folder / 'train.csv'}: absolute image path {written!r}")
    if relative.parts and relative.parts[0] == csv_folder.name:
        return csv_folder.parent / relative
    return csv_folder / relative


@register_dataset("chexpert")
def build_chexpert(spec: DataSpec) -> DataSplits:
    """CheXpert as a 5-label multilabel task with the paper's label policy and split."""
    check_options("chexpert", spec.options, NORMALIZATION_OPTIONS)
    if spec.domain:
        raise UserInputError(f"chexpert: has no domains (got data.domain={spec.domain!r})")
    csv_file = _find_csv(data_root(spec.root, "chexpert"))
    # Read lazily: no normalize: auto (it would read every training image first).
    normalisation = stated_normalisation("chexpert", spec.options, IMAGENET)
    mean, std = normalisation.mean, normalisation.std
    image_size = spec.image_size or 224
    if spec.block_size:
        block_permutation_index(spec.block_size, image_size, image_size, spec.shuffle_seed)
    shuffle = make_shuffle(spec.block_size, spec.shuffle_seed, spec.per_image_permutation)
    written, labels = read_labels(csv_file)
    train_rows, test_rows = paper_split(len(written))
    train_rows, test_rows = train_rows[: spec.train_size], test_rows[: spec.test_size]
    noaug = chexpert_transform(image_size, False, mean, std)

    def dataset(rows: np.ndarray, augment: bool) -> ImageFileDataset:
        transform = chexpert_transform(image_size, True, mean, std) if augment else noaug
        paths = [_resolve(csv_file.parent, written[i]) for i in rows]
        targets = torch.from_numpy(labels[rows])
        return ImageFileDataset(paths, targets, transform, shuffle, "L", len(CHEXPERT_LABELS))

    train = dataset(train_rows, spec.augment)
    return DataSplits(
        train=train,
        test=dataset(test_rows, False),
        num_classes=len(CHEXPERT_LABELS),
        task="multilabel",
        image_size=image_size,
        channels=3,
        class_names=CHEXPERT_LABELS,
        train_eval=train.with_transform(noaug) if spec.augment else train,
        normalisation=normalisation,
    )

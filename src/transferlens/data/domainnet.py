"""``domainnet``: DomainNet (Peng et al., ICCV 2019) with the official split files.

Layout (the official archives extracted into one folder, ``spec.root`` or
``$TRANSFERLENS_DATA``): ``<root>/<domain>/<class>/<image>.jpg`` and the split files
``<root>/<domain>_train.txt`` / ``<root>/<domain>_test.txt`` whose lines are
``<path relative to root> <label>``. 345 classes (option ``num_classes``).

The paper's rule, exactly: a split of ``n > 50,000`` images is subsampled to
``RandomState(2020).choice(n, 50000, replace=False)`` (in that order), separately for
train and test. ``train_size`` / ``test_size`` then keep a stratified subsample
(:func:`transferlens.data.splits.stratified_subsample`, ``spec.split_seed``).

Images are read lazily. Pipelines (the authors'): ``augment`` ->
RandomResizedCrop(224) + flip; otherwise ("noaug") Resize(256) + CenterCrop(224); then
ToTensor + Normalize (ImageNet's statistics, or ``options.mean``/``std``, or
``options.normalize: cifar10``); then the block/pixel shuffle.
``spec.image_size`` scales 224 (and 256 with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from transferlens.data.image_files import ImageFileDataset
from transferlens.data.locations import data_root
from transferlens.data.normalisation import IMAGENET, NORMALIZATION_OPTIONS, stated_normalisation
from transferlens.data.options import check_options, int_option
from transferlens.data.registry import register_dataset
from transferlens.data.shuffle import block_permutation_index, make_shuffle
from transferlens.data.spec import DataSpec, DataSplits
from transferlens.data.splits import stratified_subsample
from transferlens.data.transforms import domainnet_transform
from transferlens.errors import UserInputError

__all__ = [
    "DOMAINNET_DOMAINS",
    "download_domainnet",
    "paper_subsample",
    "read_split_file",
]

DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
NUM_CLASSES = 345
PAPER_MAX_IMAGES = 50_000
PAPER_SUBSAMPLE_SEED = 2020

# The official sources (http://ai.bu.edu/M3SDA/), as the authors' code downloads them.
_BASE_URL = "http://csr.bu.edu/ftp/visda/2019/multi-source"
DOMAIN_URLS = {
    "clipart": f"{_BASE_URL}/groundtruth/clipart.zip",
    "infograph": f"{_BASE_URL}/infograph.zip",
    "painting": f"{_BASE_URL}/groundtruth/painting.zip",
    "quickdraw": f"{_BASE_URL}/quickdraw.zip",
    "real": f"{_BASE_URL}/real.zip",
    "sketch": f"{_BASE_URL}/sketch.zip",
}
SPLIT_URL = f"{_BASE_URL}/domainnet/txt/{{domain}}_{{split}}.txt"


def paper_subsample(n: int, limit: int = PAPER_MAX_IMAGES) -> np.ndarray:
    """Indices kept of a split of ``n`` images: all if ``n <= limit``, else the paper's draw."""
    if n <= limit:
        return np.arange(n)
    return np.random.RandomState(PAPER_SUBSAMPLE_SEED).choice(n, limit, replace=False)


def read_split_file(split_file: Path) -> tuple[list[str], np.ndarray]:
    """``(relative paths, labels)`` of an official split file (``path label`` per line)."""
    paths: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise UserInputError(
                f"{split_file}:{number}: expected '<relative path> <label>' (got {line!r})"
            )
        paths.append(parts[0])
        labels.append(int(parts[1]))
    if not paths:
        raise UserInputError(f"{split_file}: no images listed")
    return paths, np.asarray(labels, dtype=np.int64)


def _class_names(paths: Sequence[str], labels: np.ndarray, num_classes: int) -> tuple[str, ...]:
    """Class names by label, read off the paths (``<domain>/<class>/<image>``)."""
    names = [f"class_{label}" for label in range(num_classes)]
    for path, label in zip(paths, labels):
        parts = Path(path).parts
        if len(parts) >= 3:
            names[int(label)] = parts[-2]
    return tuple(names)


def _split(
    root: Path, domain: str, split: str, size: int | None, seed: int, num_classes: int
) -> tuple[list[str], np.ndarray]:
    """One official split: the paper's 50k rule, then ``size`` (stratified, seeded)."""
    split_file = root / f"{domain}_{split}.txt"
    if not split_file.is_file():
        raise UserInputError(
            f"domainnet: split file {split_file} not found "
            "(transferlens.data.domainnet.download_domainnet fetches it)"
        )
    paths, labels = read_split_file(split_file)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise UserInputError(f"{split_file}: label {int(bad[0])} outside 0..{num_classes - 1}")
    keep = paper_subsample(len(paths))
    keep = keep[stratified_subsample(labels[keep], size, seed)]
    return [paths[i] for i in keep], labels[keep]


@register_dataset("domainnet")
def build_domainnet(spec: DataSpec) -> DataSplits:
    """One DomainNet domain with the paper's split rule (module doc)."""
    check_options("domainnet", spec.options, ("num_classes", *NORMALIZATION_OPTIONS))
    if spec.domain not in DOMAINNET_DOMAINS:
        raise UserInputError(
            "domainnet: data.domain must be one of "
            f"{', '.join(DOMAINNET_DOMAINS)} (got {spec.domain!r})"
        )
    root = data_root(spec.root, "domainnet")
    num_classes = int_option(spec.options, "num_classes", NUM_CLASSES)
    # Read lazily: no normalize: auto (it would read every training image first).
    normalisation = stated_normalisation("domainnet", spec.options, IMAGENET)
    mean, std = normalisation.mean, normalisation.std
    image_size = spec.image_size or 224
    if spec.block_size:
        block_permutation_index(spec.block_size, image_size, image_size, spec.shuffle_seed)
    shuffle = make_shuffle(spec.block_size, spec.shuffle_seed, spec.per_image_permutation)
    train_paths, train_labels = _split(
        root, spec.domain, "train", spec.train_size, spec.split_seed, num_classes
    )
    test_paths, test_labels = _split(
        root, spec.domain, "test", spec.test_size, spec.split_seed, num_classes
    )
    noaug = domainnet_transform(image_size, False, mean, std)

    def dataset(paths: list[str], labels: np.ndarray, augment: bool) -> ImageFileDataset:
        transform = domainnet_transform(image_size, True, mean, std) if augment else noaug
        files = [root / path for path in paths]
        return ImageFileDataset(
            files, torch.from_numpy(labels), transform, shuffle, "RGB", num_classes
        )

    train = dataset(train_paths, train_labels, spec.augment)
    return DataSplits(
        train=train,
        test=dataset(test_paths, test_labels, False),
        num_classes=num_classes,
        task="multiclass",
        image_size=image_size,
        channels=3,
        class_names=_class_names(
            train_paths + test_paths, np.concatenate([train_labels, test_labels]), num_classes
        ),
        train_eval=train.with_transform(noaug) if spec.augment else train,
        normalisation=normalisation,
    )


def download_domainnet(
    root: str | Path, domains: Sequence[str] = ("real", "clipart", "quickdraw")
) -> Path:
    """Download and extract the official DomainNet archives and split files into ``root``.

    Tens of GB over the network: never called by the tests or by ``build_data``.
    """
    from torchvision.datasets.utils import download_and_extract_archive, download_url

    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for domain in domains:
        if domain not in DOMAIN_URLS:
            raise UserInputError(
                f"domainnet: unknown domain {domain!r}; known: {', '.join(DOMAIN_URLS)}"
            )
        if not (root / domain).is_dir():
            download_and_extract_archive(
                DOMAIN_URLS[domain], download_root=str(root), remove_finished=True
            )
        for split in ("train", "test"):
            if not (root / f"{domain}_{split}.txt").is_file():
                download_url(SPLIT_URL.format(domain=domain, split=split), str(root))
    return root

"""``cifar10`` and ``pacs``: image folders at known places under the data root.

The data root is ``spec.root``, else ``$TRANSFERLENS_DATA``; each data set is either
extracted there or present as its tarball (extracted once into the cache folder, see
:mod:`transferlens.data.archives`), e.g. the ``shared/data`` folder as it is.

- ``cifar10``: ``<root>/cifar10/{train,test}/<class>/<nnnn>.jpg`` (or
  ``<root>/cifar10-jpg.tar.gz``), 10 classes, 32 px, the official split.
- ``pacs``: ``<root>/pacs64/<domain>/<class>/<name>.jpg`` (or ``<root>/pacs-64px.tar.gz``),
  domains photo, art_painting, cartoon, sketch; 7 classes; 64 px. No official split:
  the seeded stratified split of :mod:`transferlens.data.splits` (``spec.split_seed``,
  option ``test_fraction`` default 0.2).

Both normalise with CIFAR-10's training-set statistics unless the options say
otherwise: CIFAR-10 with its own; PACS because here it is the target of a CIFAR-10
pre-training, and the paper normalises a target with its source's statistics (see
:mod:`transferlens.data.normalisation`).
"""

from __future__ import annotations

from transferlens.data.archives import find_data_folder
from transferlens.data.image_folder import build_folder_splits
from transferlens.data.locations import data_root
from transferlens.data.normalisation import CIFAR10
from transferlens.data.registry import register_dataset
from transferlens.data.spec import DataSpec, DataSplits
from transferlens.errors import UserInputError

PACS_DOMAINS = ("photo", "art_painting", "cartoon", "sketch")


@register_dataset("cifar10")
def build_cifar10(spec: DataSpec) -> DataSplits:
    """CIFAR-10 from JPEG folders (official train/test split), 32 px by default."""
    if spec.domain:
        raise UserInputError(f"cifar10: has no domains (got data.domain={spec.domain!r})")
    folder = find_data_folder(
        data_root(spec.root, "cifar10"), "cifar10", "cifar10-jpg.tar.gz", "cifar10"
    )
    if not (folder / "train").is_dir() or not (folder / "test").is_dir():
        raise UserInputError(f"cifar10: {folder} lacks the train/ and test/ folders")
    return build_folder_splits(spec, folder, default_image_size=32, default_normalisation=CIFAR10)


@register_dataset("pacs")
def build_pacs(spec: DataSpec) -> DataSplits:
    """One PACS domain (``spec.domain``), 64 px by default, seeded stratified split."""
    if spec.domain not in PACS_DOMAINS:
        raise UserInputError(
            f"pacs: data.domain must be one of {', '.join(PACS_DOMAINS)} (got {spec.domain!r})"
        )
    folder = find_data_folder(data_root(spec.root, "pacs"), "pacs64", "pacs-64px.tar.gz", "pacs")
    domain_folder = folder / spec.domain
    if not domain_folder.is_dir():
        raise UserInputError(f"pacs: domain folder {domain_folder} not found")
    # CIFAR-10's statistics: the source's, as the paper's targets use ImageNet's (module doc).
    return build_folder_splits(
        spec, domain_folder, default_image_size=64, default_normalisation=CIFAR10
    )

"""The test images of a data set as they are stored: un-normalised, unshuffled uint8.

The study exports the images its report shows (the mistakes gallery) with these, so
that the report never has to rebuild a data set. Shuffling and normalisation happen
when an item is read, so the images a data set keeps are the raw ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from transferlens.data.registry import build_data
from transferlens.data.spec import DataSpec


class RawImagesUnavailable(RuntimeError):
    """The data set keeps no raw images this module knows how to read."""


def innermost_dataset(dataset: Any) -> tuple[Any, np.ndarray | None]:
    """The data set under ``Subset`` wrappers and the index map into it (None: identity)."""
    index_map = None
    while (
        not hasattr(dataset, "images")
        and not hasattr(dataset, "paths")
        and hasattr(dataset, "dataset")
    ):
        indices = np.asarray(dataset.indices)
        index_map = indices if index_map is None else indices[index_map]
        dataset = dataset.dataset
    return dataset, index_map


def raw_images(dataset: Any, indices: Sequence[int], image_size: int | None) -> np.ndarray:
    """uint8 ``[n, H, W, C]``: items ``indices`` of ``dataset`` before normalisation.

    In-memory sets keep ``images`` (uint8 ``[N, C, H, W]``); file-backed ones keep
    ``paths`` (and ``mode``), decoded and centre-cropped to ``image_size`` like the
    evaluation input.
    """
    dataset, index_map = innermost_dataset(dataset)
    wanted = np.asarray(list(indices), dtype=np.int64)
    if index_map is not None:
        wanted = index_map[wanted]
    images = getattr(dataset, "images", None)
    if images is not None:
        array = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
        return np.ascontiguousarray(array[wanted].transpose(0, 2, 3, 1))
    paths = getattr(dataset, "paths", None)
    if paths is not None:
        from transferlens.data.transforms import decode_image

        mode = getattr(dataset, "mode", "RGB")
        decoded = [decode_image(paths[int(i)], image_size, mode).numpy() for i in wanted]
        return np.ascontiguousarray(np.stack(decoded).transpose(0, 2, 3, 1))
    raise RawImagesUnavailable(f"the data set ({type(dataset).__name__}) keeps no raw images")


def raw_test_images(spec: DataSpec, indices: Sequence[int]) -> np.ndarray:
    """uint8 ``[n, H, W, C]``: test images ``indices`` (test-split order) of ``spec``'s data.

    Built with shuffling off, so the images are what a person would recognise whatever
    block shuffle ``spec`` names.
    """
    splits = build_data(spec.model_copy(update={"block_size": None}))
    return raw_images(splits.test, indices, splits.image_size)

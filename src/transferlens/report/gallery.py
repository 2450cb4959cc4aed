"""The gallery of real test images from each cell of the mistakes table.

``mistakes_examples.csv`` names, per target, pair and cell, the test-set indices of
example images with their label and the two models' predictions. The pixels come
from :func:`load_test_images`, a hook: by default it rebuilds the test split of one
of the target's runs (its ``spec.json`` ``data`` section, unshuffled) and reads the
un-normalised images; tests and other callers may pass their own loader with the
same signature to :func:`transferlens.report.build_report`.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferlens.errors import UserInputError

ImageLoader = Callable[[Path, str, Sequence[int]], np.ndarray]

CELL_ORDER = ("only_first_wrong", "only_second_wrong", "both_wrong")
MODEL_NAMES = {"PT": "P-T", "RIT": "RI-T", "P": "P"}
MAX_IMAGES_PER_CELL = 12
TILE_MIN_SIDE = 96


class ImagesUnavailable(RuntimeError):
    """The test images of a target cannot be loaded (the gallery says why instead)."""


def _pick_run(study_dir: Path, target: str) -> Path:
    """A run folder of ``target``, unshuffled runs first (from runs.csv, else any spec.json)."""
    import pandas as pd

    candidates: list[str] = []
    runs_csv = study_dir / "results" / "runs.csv"
    if runs_csv.is_file():
        runs = pd.read_csv(runs_csv, dtype={"run_id": str, "target": str, "kind": str})
        rows = runs[(runs["target"] == target) & (runs["kind"] == "target")]
        rows = rows.sort_values("block_size", na_position="first")
        candidates = [str(run_id) for run_id in rows["run_id"]]
    for run_id in candidates:
        if (study_dir / "runs" / run_id / "spec.json").is_file():
            return study_dir / "runs" / run_id
    raise ImagesUnavailable(f"no run folder with a spec.json for target {target!r}")


def _unwrap(dataset: Any) -> tuple[Any, np.ndarray | None]:
    """The innermost data set under ``Subset`` wrappers and the index map into it (or None)."""
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


def raw_test_images(test: Any, indices: Sequence[int], image_size: int | None) -> np.ndarray:
    """uint8 [n, H, W, C] of a test split before normalisation.

    In-memory sets keep ``images`` (uint8 [N, C, H, W]); file-backed ones keep ``paths``
    (and ``mode``), decoded and centre-cropped to ``image_size`` like the noaug input.
    """
    dataset, index_map = _unwrap(test)
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
    raise ImagesUnavailable(f"the test split ({type(dataset).__name__}) keeps no raw images")


def load_test_images(study_dir: str | Path, target: str, indices: Sequence[int]) -> np.ndarray:
    """Un-normalised test images of ``target`` at ``indices`` (test-set order): uint8 [n, H, W, C].

    Rebuilds the data of one of the target's runs (``runs/<run_id>/spec.json`` key
    ``data``, a :class:`transferlens.data.DataSpec`, with shuffling turned off) and
    reads the raw images of its test split (:func:`raw_test_images`). Raises
    :class:`ImagesUnavailable` when the images cannot be had.
    """
    from transferlens.data import DataSpec, build_data

    run_dir = _pick_run(Path(study_dir), target)
    spec = json.loads((run_dir / "spec.json").read_text(encoding="utf-8"))
    data = spec.get("data") if isinstance(spec, dict) else None
    if not isinstance(data, dict):
        raise ImagesUnavailable(f"{run_dir / 'spec.json'}: no 'data' section")
    try:
        splits = build_data(DataSpec(**{**data, "block_size": None}))
        return raw_test_images(splits.test, indices, getattr(splits, "image_size", None))
    except (UserInputError, ValueError, OSError, IndexError) as error:
        raise ImagesUnavailable(
            f"cannot rebuild the test images of {run_dir.name}: {error}"
        ) from None


def model_names(pair: str) -> tuple[str, str]:
    """``("P-T", "RI-T")`` for ``PT-RIT``."""
    first, _, second = pair.partition("-")
    return MODEL_NAMES.get(first, first), MODEL_NAMES.get(second, second)


def cell_title(pair: str, cell: str) -> str:
    first, second = model_names(pair)
    return {
        "only_first_wrong": f"{first} wrong, {second} right",
        "only_second_wrong": f"{first} right, {second} wrong",
        "both_wrong": "both wrong (common mistakes)",
    }.get(cell, cell)


def check_images(images: np.ndarray, count: int, target: str) -> np.ndarray:
    """Validate a loader's answer: ``count`` uint8 images [n, H, W, C] with C in (1, 3, 4)."""
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[0] != count or array.shape[-1] not in (1, 3, 4):
        raise ImagesUnavailable(
            f"image loader gave shape {array.shape} for {count} images of {target!r};"
            " expected [n, H, W, C]"
        )
    if array.dtype != np.uint8:
        raise ImagesUnavailable(f"image loader gave dtype {array.dtype}; expected uint8")
    return array


def tile_png(image: np.ndarray, min_side: int = TILE_MIN_SIDE) -> bytes:
    """One image as PNG, enlarged by an integer factor (nearest neighbour: no invented detail)
    until its shorter side reaches ``min_side``."""
    from PIL import Image

    pixels = image[..., 0] if image.shape[-1] == 1 else image
    tile = Image.fromarray(np.ascontiguousarray(pixels))
    factor = max(1, math.ceil(min_side / max(1, min(tile.size))))
    if factor > 1:
        tile = tile.resize((tile.width * factor, tile.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    tile.save(buffer, format="PNG")
    return buffer.getvalue()

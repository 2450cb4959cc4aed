"""The gallery of real test images from each cell of the mistakes table.

``mistakes_examples.csv`` names, per target, pair and cell, the test-set indices of
example images with their label and the two models' predictions. The pixels come
from :func:`load_test_images`, a hook: by default it reads the PNGs the study layer
saved under ``results/images/<target>/<index>.png``
(:func:`transferlens.results.image_path`); tests and other callers may pass their
own loader with the same signature to :func:`transferlens.report.build_report`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from transferlens.results import RESULTS_DIR, image_path

# (study folder, target, test-set indices) -> uint8 [n, H, W, C]
ImageLoader = Callable[[Path, str, Sequence[int]], np.ndarray]

CELL_ORDER = ("only_first_wrong", "only_second_wrong", "both_wrong")
MAX_IMAGES_PER_CELL = 12
TILE_MIN_SIDE = 96
_KEPT_MODES = ("L", "RGB", "RGBA")  # other modes (palette, 16-bit) are shown as RGB


class ImagesUnavailable(RuntimeError):
    """The test images of a target cannot be loaded (the gallery says why instead)."""


def _read_png(path: Path) -> np.ndarray:
    """One saved image as uint8 [H, W, C] (C = 1 for grey)."""
    try:
        with Image.open(path) as image:
            image = image if image.mode in _KEPT_MODES else image.convert("RGB")
            pixels = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise ImagesUnavailable(f"{path} is missing") from None
    except (OSError, UnidentifiedImageError) as error:
        raise ImagesUnavailable(f"{path}: not a readable image ({error})") from None
    return pixels[..., None] if pixels.ndim == 2 else pixels


def load_test_images(study_dir: str | Path, target: str, indices: Sequence[int]) -> np.ndarray:
    """Un-normalised test images of ``target`` at ``indices`` (test-set order): uint8 [n, H, W, C].

    Reads ``<study_dir>/results/images/<target>/<index>.png``, which the study layer
    saves for every row of ``mistakes_examples.csv``. Raises :class:`ImagesUnavailable`
    when one is missing or unreadable, or when they differ in shape.
    """
    results_dir = Path(study_dir) / RESULTS_DIR
    images = [_read_png(image_path(results_dir, target, index)) for index in indices]
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ImagesUnavailable(f"the saved images of {target!r} differ in shape: {sorted(shapes)}")
    return np.stack(images) if images else np.zeros((0, 1, 1, 3), dtype=np.uint8)


def cell_title(first: str, second: str, cell: str) -> str:
    """The heading of one cell of a pair's 2 x 2 table, with the two models' names
    (``first``, ``second``: e.g. ``P-T seed 0`` and ``P-T seed 1``)."""
    if first == second:  # same name (seeds unknown): say which is which by position
        first, second = f"first {first}", f"second {second}"
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
    pixels = image[..., 0] if image.shape[-1] == 1 else image
    tile = Image.fromarray(np.ascontiguousarray(pixels))
    factor = max(1, math.ceil(min_side / max(1, min(tile.size))))
    if factor > 1:
        tile = tile.resize((tile.width * factor, tile.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    tile.save(buffer, format="PNG")
    return buffer.getvalue()

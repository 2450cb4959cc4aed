"""Deterministic generation of synthetic image arrays (no files, no network).

``generate_split`` draws ``count`` uint8 images ``[N, 3, H, W]`` of one domain and
split, with labels ``i % num_classes`` (balanced). Work is done in chunks of
:data:`CHUNK` images; chunk ``k`` has its own random streams derived by hashing
(world seed, split, split seed, k, ...), so train and test never share a stream and
nothing depends on the thread count or on the machine.

Two streams per chunk: the *geometry* stream (which glyph instance, where) depends on
the label set (``source`` or ``target``) but not on the domain, and the *style* stream
depends on the domain. The three target domains therefore draw the very same glyph
instances, and differ only in how they are drawn.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from transferlens.data.synthetic_glyphs import (
    Parts,
    Variation,
    make_glyphs,
    part_distances,
    place_instances,
)
from transferlens.data.synthetic_styles import render_clipart, render_photo, render_sketch

DOMAINS = ("source", "real", "clipart", "quickdraw")
CHUNK = 1024
# Bump when the drawing changes, so that nothing cached under the old drawing is reused.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class World:
    """What fixes the classes and the intra-class variation (shared by every domain)."""

    source_classes: int = 40
    target_classes: int = 10
    world_seed: int = 0
    variation: Variation = Variation()


def label_set(domain: str) -> str:
    """``source`` for the pre-training domain, ``target`` for the three target domains."""
    return "source" if domain == "source" else "target"


def stream_seed(*key: object) -> int:
    """A 63-bit seed from a key, identical on every machine and Python run."""
    digest = hashlib.blake2b(repr(key).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _generator(*key: object) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(GENERATOR_VERSION, *key))


@lru_cache(maxsize=8)
def class_glyphs(labels: str, count: int, world_seed: int) -> Parts:
    """The glyphs of the ``source`` or ``target`` classes (independent streams)."""
    return make_glyphs(count, _generator("glyphs", labels, world_seed))


def num_classes(domain: str, world: World) -> int:
    return world.source_classes if label_set(domain) == "source" else world.target_classes


def render_chunk(
    domain: str,
    labels: Tensor,
    image_size: int,
    world: World,
    geometry: torch.Generator,
    style: torch.Generator,
) -> Tensor:
    """Float64 images ``[N, 3, H, W]`` in [0, 1] of ``labels`` in ``domain``'s style."""
    glyphs = class_glyphs(label_set(domain), num_classes(domain, world), world.world_seed)
    instances = place_instances(glyphs.select(labels), world.variation, geometry)
    if domain == "quickdraw":
        return render_sketch(
            lambda warp: part_distances(instances, image_size, warp),
            labels.shape[0],
            image_size,
            style,
        )
    distances = part_distances(instances, image_size)
    if domain == "clipart":
        return render_clipart(distances, style)
    return render_photo(distances, style)


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats -> uint8 by rounding half up (the same on every machine)."""
    return torch.floor(images.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)


def generate_split(
    domain: str, split: str, count: int, image_size: int, split_seed: int, world: World
) -> tuple[Tensor, Tensor]:
    """``count`` images (uint8 ``[N, 3, H, W]``) and labels (int64 ``[N]``, ``i % classes``)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {domain!r}")
    classes = num_classes(domain, world)
    labels = torch.arange(count, dtype=torch.int64) % classes
    images = torch.empty((count, 3, image_size, image_size), dtype=torch.uint8)
    variation = world.variation
    for chunk, start in enumerate(range(0, count, CHUNK)):
        stop = min(start + CHUNK, count)
        common = (split, split_seed, chunk, world.world_seed, image_size)
        geometry = _generator("geometry", label_set(domain), classes, variation, *common)
        style = _generator("style", domain, *common)
        rendered = render_chunk(domain, labels[start:stop], image_size, world, geometry, style)
        images[start:stop] = to_uint8(rendered)
    return images, labels

"""Glyph classes of the synthetic domains: shapes built from signed-distance primitives.

A class is a *glyph*: a few parts, each a primitive (blob, bar, ring, triangle, cross)
with a fixed place, size, angle and aspect in the glyph's own frame. An *instance* of
a class is that glyph rotated, scaled and moved in the image, with every part jittered
a little (intra-class variation). Rendering (see ``synthetic_styles``) sees only the
per-part signed distances computed here, so every domain draws the very same geometry.

Coordinates: the image spans [-1, 1] on both axes (x right, y down); distances are
returned in pixels so that stroke widths are easy to state. Everything is float64 so
that rounding to uint8 at the end gives the same bytes on any machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

PRIMITIVES = ("blob", "bar", "ring", "triangle", "cross")
PARTS_PER_GLYPH = 3
DTYPE = torch.float64

# Aspect range per primitive: blob = minor/major axis, bar = width/length,
# ring = line width/radius, triangle = unused, cross = arm width/arm length.
_ASPECT_RANGE = {
    "blob": (0.45, 0.9),
    "bar": (0.18, 0.35),
    "ring": (0.18, 0.32),
    "triangle": (1.0, 1.0),
    "cross": (0.22, 0.35),
}


@dataclass(frozen=True)
class Parts:
    """Parts of a batch of glyphs or instances; every tensor is ``[N, P, ...]`` (P parts each).

    ``kind`` indexes :data:`PRIMITIVES`; ``center`` ``[N, P, 2]``, ``size`` (half extent),
    ``angle`` (radians) and ``aspect`` ``[N, P]`` in the frame where the value applies
    (the glyph frame for a class, the image frame for an instance).
    """

    kind: Tensor
    center: Tensor
    size: Tensor
    angle: Tensor
    aspect: Tensor

    def select(self, index: Tensor) -> Parts:
        """The glyphs at ``index`` (e.g. one row per image from class labels)."""
        return Parts(
            self.kind[index],
            self.center[index],
            self.size[index],
            self.angle[index],
            self.aspect[index],
        )


@dataclass(frozen=True)
class Variation:
    """How much instances of one class differ (the same for every domain).

    ``rotation`` is the largest rotation (radians) of the whole glyph; ``scale`` the
    range of its size in image half-widths; ``shift`` the largest move of its centre;
    ``jitter`` multiplies the per-part perturbations (place, size, angle, aspect).
    """

    rotation: float = math.pi / 3
    scale: tuple[float, float] = (0.75, 1.0)
    shift: float = 0.12
    jitter: float = 1.0


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen, dtype=DTYPE)


def make_glyphs(count: int, gen: torch.Generator) -> Parts:
    """``count`` class glyphs: one part near the centre, the others around it."""
    shape = (count, PARTS_PER_GLYPH)
    kind = torch.randint(len(PRIMITIVES), shape, generator=gen)
    radius = _uniform(gen, shape, 0.28, 0.55)
    radius[:, 0] *= 0.3  # the first part sits near the middle and anchors the glyph
    direction = _uniform(gen, shape, -math.pi, math.pi)
    center = torch.stack([radius * torch.cos(direction), radius * torch.sin(direction)], dim=-1)
    size = _uniform(gen, shape, 0.22, 0.42)
    angle = _uniform(gen, shape, -math.pi, math.pi)
    return Parts(kind, center, size, angle, _aspects(kind, gen))


def _aspects(kind: Tensor, gen: torch.Generator) -> Tensor:
    unit = torch.rand(kind.shape, generator=gen, dtype=DTYPE)
    low = torch.tensor([_ASPECT_RANGE[name][0] for name in PRIMITIVES], dtype=DTYPE)[kind]
    high = torch.tensor([_ASPECT_RANGE[name][1] for name in PRIMITIVES], dtype=DTYPE)[kind]
    return low + (high - low) * unit


def scatter_parts(n: int, count: int, size: tuple[float, float], gen: torch.Generator) -> Parts:
    """``count`` loose primitives per image anywhere in it (background clutter), image units."""
    shape = (n, count)
    kind = torch.randint(len(PRIMITIVES), shape, generator=gen)
    center = _uniform(gen, (*shape, 2), -0.95, 0.95)
    return Parts(
        kind,
        center,
        _uniform(gen, shape, *size),
        _uniform(gen, shape, -math.pi, math.pi),
        _aspects(kind, gen),
    )


def place_instances(glyphs: Parts, variation: Variation, gen: torch.Generator) -> Parts:
    """Jitter each part of ``glyphs`` (one row per image) and place the glyph in the image.

    Part jitter (glyph frame): centre + N(0, 0.06 j), size x exp(N(0, 0.12 j)),
    angle + N(0, 0.3 j), aspect x exp(N(0, 0.1 j)) with j = ``variation.jitter``.
    Placement: rotate by U(-r, r), scale by U(scale), shift by U(-shift, shift)^2.
    """
    n = glyphs.kind.shape[0]
    shape = (n, PARTS_PER_GLYPH)
    j = variation.jitter
    center = glyphs.center + 0.06 * j * torch.randn((*shape, 2), generator=gen, dtype=DTYPE)
    size = glyphs.size * torch.exp(0.12 * j * torch.randn(shape, generator=gen, dtype=DTYPE))
    angle = glyphs.angle + 0.3 * j * torch.randn(shape, generator=gen, dtype=DTYPE)
    aspect = glyphs.aspect * torch.exp(0.1 * j * torch.randn(shape, generator=gen, dtype=DTYPE))

    rotation = _uniform(gen, (n, 1), -variation.rotation, variation.rotation)
    scale = _uniform(gen, (n, 1), *variation.scale)
    shift = _uniform(gen, (n, 1, 2), -variation.shift, variation.shift)
    cos, sin = torch.cos(rotation), torch.sin(rotation)
    rotated = torch.stack(
        [cos * center[..., 0] - sin * center[..., 1], sin * center[..., 0] + cos * center[..., 1]],
        dim=-1,
    )
    return Parts(
        glyphs.kind, scale[..., None] * rotated + shift, scale * size, angle + rotation, aspect
    )


def pixel_grid(image_size: int) -> Tensor:
    """Pixel centres ``[H*W, 2]`` (x, y) in [-1, 1], row-major."""
    axis = (torch.arange(image_size, dtype=DTYPE) + 0.5) * (2.0 / image_size) - 1.0
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1)


def _box(x: Tensor, y: Tensor, half_x: Tensor, half_y: Tensor) -> Tensor:
    dx = x.abs() - half_x
    dy = y.abs() - half_y
    outside = torch.sqrt(dx.clamp(min=0) ** 2 + dy.clamp(min=0) ** 2)
    return outside + torch.maximum(dx, dy).clamp(max=0)


def _triangle(x: Tensor, y: Tensor, r: Tensor) -> Tensor:
    # Exact distance to an equilateral triangle of half-side r (Quilez' form).
    k = math.sqrt(3.0)
    x = x.abs() - r
    y = y + r / k
    fold = (x + k * y) > 0
    x, y = torch.where(fold, (x - k * y) / 2, x), torch.where(fold, (-k * x - y) / 2, y)
    x = x - torch.minimum(torch.maximum(x, -2 * r), torch.zeros_like(x))
    return -torch.sqrt(x * x + y * y) * torch.sign(y)


def _primitive_distance(name: str, x: Tensor, y: Tensor, size: Tensor, aspect: Tensor) -> Tensor:
    """Signed distance of local points ``(x, y)`` ``[M, K]`` to primitive ``name``.

    The primitive is centred at the origin, unrotated, of half extent ``size`` ``[M]``.
    """
    size, aspect = size[:, None], aspect[:, None]
    if name == "blob":
        # Ellipse, approximately: radial distance in the stretched frame times the minor axis.
        minor = size * aspect
        return (torch.sqrt((x / size) ** 2 + (y / minor) ** 2) - 1.0) * minor
    if name == "bar":
        return _box(x, y, size, size * aspect)
    if name == "ring":
        return (torch.sqrt(x * x + y * y) - size).abs() - size * aspect
    if name == "triangle":
        return _triangle(x, y, size * 0.8)
    if name == "cross":
        return torch.minimum(_box(x, y, size, size * aspect), _box(x, y, size * aspect, size))
    raise ValueError(f"unknown primitive {name!r}")


def part_distances(parts: Parts, image_size: int, warp: Tensor | None = None) -> Tensor:
    """Signed distance in pixels from every pixel to every part: ``[N, P, H, W]``.

    Negative inside a part. ``warp`` (``[N, H*W, 2]``, image units) displaces the sample
    points per image, which makes hand-drawn-looking wobbly strokes.
    """
    n, count = parts.kind.shape
    # Parts sorted by primitive so that each primitive works on one contiguous slice.
    order = torch.argsort(parts.kind.reshape(-1), stable=True)
    per_kind = torch.bincount(parts.kind.reshape(-1), minlength=len(PRIMITIVES)).tolist()
    center = parts.center.reshape(-1, 2)[order]
    size = parts.size.reshape(-1)[order]
    aspect = parts.aspect.reshape(-1)[order]
    angle = parts.angle.reshape(-1)[order]
    grid = pixel_grid(image_size)
    if warp is None:
        gx, gy = grid[None, :, 0], grid[None, :, 1]
    else:
        warped = grid[None] + warp
        image_of_part = order // count
        gx, gy = warped[image_of_part, :, 0], warped[image_of_part, :, 1]
    ox = gx - center[:, 0:1]
    oy = gy - center[:, 1:2]
    cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    # Rotate the offsets by -angle into each part's own frame.
    x = cos * ox + sin * oy
    y = cos * oy - sin * ox
    sorted_out = torch.empty_like(x)
    start = 0
    for name, amount in zip(PRIMITIVES, per_kind):
        part = slice(start, start + amount)
        if amount:
            sorted_out[part] = _primitive_distance(name, x[part], y[part], size[part], aspect[part])
        start += amount
    out = torch.empty_like(sorted_out)
    out[order] = sorted_out
    pixels_per_unit = image_size / 2.0
    return (out * pixels_per_unit).reshape(n, count, image_size, image_size)

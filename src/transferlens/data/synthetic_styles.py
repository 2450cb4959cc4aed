"""How each synthetic domain draws a glyph: the only place where the domains differ.

Every style turns per-part signed distances ``[N, P, H, W]`` (pixels, negative inside;
see ``synthetic_glyphs``) into RGB images ``[N, 3, H, W]`` in [0, 1], float64:

- ``photo`` (source and ``real``): a darker, textured and shaded object on a lighter,
  smoothly varying background with faint clutter shapes and sensor noise;
- ``clipart``: parts filled with flat colours from a small palette, thick dark
  outlines, a plain white or pastel background, no noise;
- ``sketch`` (``quickdraw``): thin grey strokes along every part's outline, wobbling
  like a hand drawing, on white; no colour.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from transferlens.data.synthetic_glyphs import DTYPE, part_distances, pixel_grid, scatter_parts

# Anti-aliasing: coverage falls from 1 to 0 over about one pixel around an edge.
_EDGE_SOFTNESS_PX = 0.45

# Flat clipart colours: saturated primaries and secondaries, all far from white.
_CLIPART_PALETTE = torch.tensor(
    [
        [0.86, 0.16, 0.16],
        [0.16, 0.55, 0.86],
        [0.18, 0.70, 0.25],
        [0.98, 0.78, 0.10],
        [0.60, 0.25, 0.75],
        [0.98, 0.50, 0.10],
        [0.10, 0.70, 0.70],
        [0.90, 0.35, 0.60],
    ],
    dtype=DTYPE,
)


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen, dtype=DTYPE)


def coverage(distance: Tensor) -> Tensor:
    """Anti-aliased inside-ness of a signed distance in pixels: 1 inside, 0 outside."""
    return torch.sigmoid(-distance / _EDGE_SOFTNESS_PX)


def smooth_field(gen: torch.Generator, n: int, channels: int, cells: int, size: int) -> Tensor:
    """Low-frequency noise ``[n, channels, size, size]`` in [-1, 1]: a cells x cells
    grid of uniform values, bilinearly upsampled."""
    coarse = _uniform(gen, (n, channels, cells, cells), -1.0, 1.0)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def hsv_to_rgb(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    """``[N]`` hue (turns), saturation, value in [0, 1] -> ``[N, 3]`` RGB (the usual hexcone)."""
    k = (torch.tensor([5.0, 3.0, 1.0], dtype=DTYPE) + hue[:, None] * 6.0) % 6.0
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value[:, None] * (1.0 - saturation[:, None] * ramp)


def _linear_ramp(gen: torch.Generator, n: int, size: int) -> Tensor:
    """A plane ``[n, 1, H, W]`` of slope <= 1 in a random direction (light falling off)."""
    direction = _uniform(gen, (n,), -math.pi, math.pi)
    strength = _uniform(gen, (n,), 0.0, 1.0)
    grid = pixel_grid(size)
    plane = (
        grid[:, 0][None] * torch.cos(direction)[:, None]
        + grid[:, 1][None] * torch.sin(direction)[:, None]
    )
    return (strength[:, None] * plane).reshape(n, 1, size, size)


def _over(image: Tensor, color: Tensor, alpha: Tensor) -> Tensor:
    """Paint ``color`` (``[N, 3]`` or ``[N, 3, H, W]``) over ``image`` with ``alpha [N, 1, H, W]``."""
    if color.dim() == 2:
        color = color[:, :, None, None]
    return image * (1.0 - alpha) + color * alpha


def render_photo(distances: Tensor, gen: torch.Generator) -> Tensor:
    """Photo-like: textured, shaded, darker object over a lighter cluttered background."""
    n, parts, size, _ = distances.shape
    background = hsv_to_rgb(
        _uniform(gen, (n,), 0.0, 1.0),
        _uniform(gen, (n,), 0.0, 0.35),
        _uniform(gen, (n,), 0.62, 0.95),
    )[:, :, None, None]
    background = background + 0.10 * smooth_field(gen, n, 3, 4, size)
    background = background * (1.0 + 0.18 * _linear_ramp(gen, n, size))

    # Clutter: faint loose primitives, so that "any edge" is not "the object's edge".
    clutter = scatter_parts(n, 4, (0.1, 0.25), gen)
    clutter_alpha = coverage(part_distances(clutter, size).min(dim=1).values)[:, None]
    clutter_shade = _uniform(gen, (n, 1, 1, 1), 0.55, 0.85)
    background = _over(background, background * clutter_shade, 0.8 * clutter_alpha)

    color = hsv_to_rgb(
        _uniform(gen, (n,), 0.0, 1.0),
        _uniform(gen, (n,), 0.3, 0.9),
        _uniform(gen, (n,), 0.12, 0.45),
    )[:, :, None, None]
    # Texture: stripes of random frequency and direction plus fine mottling.
    grid = pixel_grid(size)
    direction = _uniform(gen, (n, 1), -math.pi, math.pi)
    frequency = _uniform(gen, (n, 1), 1.5, 5.0) * math.pi
    phase = _uniform(gen, (n, 1), -math.pi, math.pi)
    along = grid[:, 0][None] * torch.cos(direction) + grid[:, 1][None] * torch.sin(direction)
    stripes = torch.sin(frequency * along + phase).reshape(n, 1, size, size)
    texture = 1.0 + 0.25 * stripes + 0.2 * smooth_field(gen, n, 1, 8, size)
    shading = 1.0 + 0.35 * _linear_ramp(gen, n, size)
    # Each part a slightly different tone, as parts of a real object are.
    part_tone = 1.0 + _uniform(gen, (n, parts, 1, 1), -0.15, 0.15)
    part_alpha = coverage(distances)
    tone = (part_alpha * part_tone).sum(1, keepdim=True) / part_alpha.sum(1, keepdim=True).clamp(
        min=1e-6
    )
    obj = color * texture * shading * tone
    alpha = coverage(distances.min(dim=1).values)[:, None]
    image = _over(background, obj, alpha)

    # Sensor noise, uniform (cheaper to draw than Gaussian) with std 0.015 to 0.05.
    noise_level = _uniform(gen, (n, 1, 1, 1), 0.015, 0.05) * 3.0**0.5
    image = image + noise_level * _uniform(gen, tuple(image.shape), -1.0, 1.0)
    return image.clamp(0.0, 1.0)


def render_clipart(distances: Tensor, gen: torch.Generator) -> Tensor:
    """Clipart: flat palette fills, thick dark outlines, plain light background."""
    n, parts, size, _ = distances.shape
    white = torch.rand((n,), generator=gen, dtype=DTYPE) < 0.5
    pastel = hsv_to_rgb(
        _uniform(gen, (n,), 0.0, 1.0), _uniform(gen, (n,), 0.05, 0.3), _uniform(gen, (n,), 0.9, 1.0)
    )
    background = torch.where(white[:, None], torch.ones_like(pastel), pastel)
    image = background[:, :, None, None].expand(n, 3, size, size).clone()
    fills = _CLIPART_PALETTE[torch.randint(len(_CLIPART_PALETTE), (n, parts), generator=gen)]
    ink = _uniform(gen, (n, 1), 0.0, 0.15).expand(n, 3)
    width = _uniform(gen, (n, 1, 1), 1.3, 2.2)  # outline width in pixels
    # Painter's order: each part's fill, then its outline, over what is there.
    for part in range(parts):
        distance = distances[:, part]
        image = _over(image, fills[:, part], coverage(distance)[:, None])
        image = _over(image, ink, coverage(distance.abs() - width / 2)[:, None])
    return image.clamp(0.0, 1.0)


def render_sketch(
    parts_distance: Callable[[Tensor | None], Tensor], n: int, size: int, gen: torch.Generator
) -> Tensor:
    """Sketch: thin wobbly grey outlines of every part on white, one grey level per image.

    ``parts_distance(warp)`` gives the part distances with sample points displaced by
    ``warp`` (the hand's wobble), so strokes bend instead of the image being blurred.
    """
    wobble = 0.045 * smooth_field(gen, n, 2, 3, size)  # image units; 1 px = 2 / size
    distances = parts_distance(wobble.permute(0, 2, 3, 1).reshape(n, size * size, 2))
    width = _uniform(gen, (n, 1, 1, 1), 1.0, 1.6)  # stroke width in pixels
    stroke = coverage(distances.abs() - width / 2).amax(dim=1, keepdim=True)
    ink = _uniform(gen, (n, 1, 1, 1), 0.0, 0.25)
    gray = 1.0 - (1.0 - ink) * stroke
    return gray.expand(n, 3, size, size).clamp(0.0, 1.0)

"""The embedded synthetic domains: determinism, splits, shapes, balance and domain styles."""

from __future__ import annotations

import math

import pytest
import torch

from transferlens.data import DataSpec, build_data
from transferlens.data.synthetic import MEAN, STD
from transferlens.data.synthetic_glyphs import (
    PRIMITIVES,
    Parts,
    Variation,
    make_glyphs,
    part_distances,
    place_instances,
)
from transferlens.data.synthetic_render import World, generate_split, stream_seed
from transferlens.errors import UserInputError

TARGETS = ("real", "clipart", "quickdraw")
SMALL = {"image_size": 16, "train_size": 40, "test_size": 20}


def spec(domain: str, **fields) -> DataSpec:
    return DataSpec(name="synthetic", domain=domain, **{**SMALL, **fields})


def raw(domain: str, count: int = 60, size: int = 24, seed: int = 0) -> torch.Tensor:
    return generate_split(domain, "train", count, size, seed, World())[0]


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("domain", ["source", *TARGETS])
def test_same_spec_gives_identical_images(domain: str) -> None:
    first = generate_split(domain, "train", 30, 16, 7, World())
    second = generate_split(domain, "train", 30, 16, 7, World())
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


def test_different_split_seed_gives_different_images() -> None:
    assert not torch.equal(raw("real", 20, 16, seed=0), raw("real", 20, 16, seed=1))


def test_train_and_test_come_from_different_streams() -> None:
    world = World()
    train = generate_split("clipart", "train", 30, 16, 0, world)[0]
    test = generate_split("clipart", "test", 30, 16, 0, world)[0]
    # Not one test image equals any training image.
    flat_train = train.reshape(30, -1)
    flat_test = test.reshape(30, -1)
    assert not (flat_test[:, None, :] == flat_train[None, :, :]).all(-1).any()


def test_stream_seed_is_a_stable_hash() -> None:
    assert stream_seed(1, "train", 0) == stream_seed(1, "train", 0)
    assert stream_seed(1, "train", 0) != stream_seed(1, "test", 0)
    assert 0 <= stream_seed("x") < 2**63


def test_target_domains_draw_the_same_glyph_instances() -> None:
    # Same geometry stream for the three targets: the dark/ink pixels of a sketch lie
    # on the outline of the clipart object, so the object masks overlap heavily.
    clip = raw("clipart", 20, 32).float().mean(1)
    sketch = raw("quickdraw", 20, 32).float().mean(1)
    clip_mask = (clip - clip[:, :1, :1]).abs() > 40  # differs from the corner (background)
    ink = sketch < 200
    on_object = (ink & clip_mask).sum() / ink.sum()
    assert on_object > 0.8


# ---------------------------------------------------------------- the built splits


def test_build_returns_splits_with_the_promised_shapes() -> None:
    splits = build_data(spec("real"))
    assert splits.num_classes == 10
    assert splits.task == "multiclass"
    assert splits.image_size == 16 and splits.channels == 3
    assert len(splits.class_names) == 10 and splits.class_names[0] == "target_00"
    assert len(splits.train) == 40 and len(splits.test) == 20
    image, target = splits.train[3]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert target.dtype == torch.int64 and 0 <= int(target) < 10
    # Normalisation is (x / 255 - mean) / std with the fixed constants.
    stored = splits.train.images[3].float() / 255
    expected = (stored - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    assert torch.allclose(image, expected, atol=1e-5)
    assert splits.train_eval is splits.train


def test_uint8_images_and_balanced_labels() -> None:
    images, labels = generate_split("source", "train", 85, 16, 0, World(source_classes=17))
    assert images.dtype == torch.uint8 and images.shape == (85, 3, 16, 16)
    assert torch.equal(torch.bincount(labels), torch.full((17,), 5))


def test_source_classes_option_and_class_names() -> None:
    splits = build_data(spec("source", options={"source_classes": 12}))
    assert splits.num_classes == 12
    assert splits.class_names[-1] == "source_11"
    assert int(splits.train.targets.max()) == 11


def test_augment_keeps_an_unaugmented_train_eval_split() -> None:
    splits = build_data(spec("clipart", augment=True))
    assert splits.train.augment and not splits.train_eval.augment
    assert splits.train_eval.images is splits.train.images


def test_block_shuffle_is_passed_to_the_datasets() -> None:
    plain = build_data(spec("real"))
    shuffled = build_data(spec("real", block_size=4))
    a, b = plain.test[0][0], shuffled.test[0][0]
    assert not torch.equal(a, b)
    # A block shuffle moves values, it does not change them.
    assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)


def test_repeated_builds_reuse_the_generated_arrays() -> None:
    first = build_data(spec("quickdraw", split_seed=3))
    second = build_data(spec("quickdraw", split_seed=3))
    assert first.train.images is second.train.images


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"domain": "sketch"}, "known: source, real, clipart, quickdraw"),
        ({"domain": None}, "unknown domain None"),
        ({"options": {"colour": 1}}, "options.colour"),
        ({"options": {"source_classes": 1}}, "options.source_classes"),
        ({"options": {"variation": -1.0}}, "options.variation"),
        ({"image_size": 4}, "image_size"),
    ],
)
def test_bad_input_is_a_one_line_user_error(fields: dict, fragment: str) -> None:
    base = {"domain": "real", **fields}
    with pytest.raises(UserInputError) as error:
        build_data(spec(**base))
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- geometry


def test_primitive_distances_match_closed_forms() -> None:
    # One part per primitive, centred, unrotated, half extent 0.5, aspect 0.25.
    count = len(PRIMITIVES)
    parts = Parts(
        kind=torch.arange(count)[:, None],
        center=torch.zeros(count, 1, 2, dtype=torch.float64),
        size=torch.full((count, 1), 0.5, dtype=torch.float64),
        angle=torch.zeros(count, 1, dtype=torch.float64),
        aspect=torch.full((count, 1), 0.25, dtype=torch.float64),
    )
    size = 64
    d = part_distances(parts, size)[:, 0] / (size / 2)  # back to image units
    axis = (torch.arange(size, dtype=torch.float64) + 0.5) * 2 / size - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    r = torch.sqrt(x**2 + y**2)
    by_name = dict(zip(PRIMITIVES, d))
    # Ring: | |p| - 0.5 | - 0.125.
    assert torch.allclose(by_name["ring"], (r - 0.5).abs() - 0.125)
    # Bar: exact box distance of half extents (0.5, 0.125).
    dx, dy = x.abs() - 0.5, y.abs() - 0.125
    box = torch.sqrt(dx.clamp(min=0) ** 2 + dy.clamp(min=0) ** 2) + torch.maximum(dx, dy).clamp(
        max=0
    )
    assert torch.allclose(by_name["bar"], box)
    # Blob: zero on the ellipse (x/0.5)^2 + (y/0.125)^2 = 1, negative inside.
    inside = (x / 0.5) ** 2 + (y / 0.125) ** 2 < 1
    assert torch.equal(by_name["blob"] < 0, inside)
    # Triangle of half side 0.4: the centroid is inside, the corners of the image are not.
    assert by_name["triangle"][size // 2, size // 2] < 0
    assert (by_name["triangle"][[0, 0, -1, -1], [0, -1, 0, -1]] > 0).all()
    # Cross: the union of the bar and the same bar turned by 90 degrees (the transpose).
    assert torch.equal(by_name["cross"] < 0, (box < 0) | (box.T < 0))


def test_rotating_a_part_rotates_its_distance_field() -> None:
    gen = torch.Generator().manual_seed(0)
    glyph = make_glyphs(1, gen)
    quarter = Parts(
        glyph.kind,
        torch.stack([-glyph.center[..., 1], glyph.center[..., 0]], -1),
        glyph.size,
        glyph.angle + math.pi / 2,
        glyph.aspect,
    )
    d = part_distances(glyph, 32)
    d_rot = part_distances(quarter, 32)
    # Rotating points by +90 deg in (x right, y down) is a transpose + flip of the grid.
    assert torch.allclose(torch.rot90(d, k=-1, dims=(2, 3)), d_rot, atol=1e-9)


def test_zero_variation_places_every_instance_of_a_class_alike() -> None:
    gen = torch.Generator().manual_seed(1)
    glyphs = make_glyphs(3, gen)
    still = Variation(rotation=0.0, scale=(0.8, 0.8), shift=0.0, jitter=0.0)
    placed = place_instances(glyphs.select(torch.tensor([2, 2, 2])), still, gen)
    assert torch.allclose(placed.center[0], placed.center[1])
    assert torch.allclose(placed.size, 0.8 * glyphs.size[[2, 2, 2]])


def test_target_classes_differ_from_source_classes() -> None:
    from transferlens.data.synthetic_render import class_glyphs

    source = class_glyphs("source", 40, 0)
    target = class_glyphs("target", 10, 0)
    same = (source.center[None] - target.center[:, None]).abs().amax((-1, -2)) < 1e-6
    assert not same.any()
    # Built from the same primitives.
    assert set(source.kind.unique().tolist()) >= set(target.kind.unique().tolist())


# ---------------------------------------------------------------- styles


def _distinct_colour_share(images: torch.Tensor, top: int) -> float:
    """Mean over images of the share of pixels covered by the image's ``top`` colours."""
    shares = []
    for image in images:
        colours = image.reshape(3, -1).T
        _, counts = torch.unique(colours, dim=0, return_counts=True)
        shares.append(counts.sort(descending=True).values[:top].sum().item() / colours.shape[0])
    return sum(shares) / len(shares)


def test_quickdraw_is_grey_strokes_on_mostly_white() -> None:
    images = raw("quickdraw")
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])
    white = (images[:, 0] >= 250).float().mean()
    assert white > 0.7
    assert images.amin(dim=(1, 2, 3)).float().mean() < 120  # every sketch has dark ink


def test_clipart_has_few_colours_and_a_plain_background() -> None:
    clip, photo = raw("clipart"), raw("real")
    # Flat fills: six colours cover most pixels (the rest are anti-aliased edges);
    # in a noisy photo-like image six colours cover almost nothing.
    assert _distinct_colour_share(clip, 6) > 0.6
    assert _distinct_colour_share(photo, 6) < 0.1
    corners = clip[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    # Plain background: the four corners share one colour (unless the object reaches one).
    plain = (corners == corners[:, :, :1]).all(dim=2).all(dim=1)
    assert plain.float().mean() > 0.9


def test_real_is_noisy_and_colourful_like_the_source() -> None:
    source, real = raw("source").float(), raw("real").float()
    for images in (source, real):
        channel_spread = (images.amax(1) - images.amin(1)).mean()
        assert channel_spread > 10  # coloured, not grey
        # Noise: neighbouring background pixels differ even away from edges.
        roughness = (images[..., 1:] - images[..., :-1]).abs().median()
        assert roughness >= 2
    assert abs(source.mean() - real.mean()) < 10  # one style: similar brightness


def test_objects_contrast_with_their_background() -> None:
    # In each style the object's pixels differ clearly from the background's.
    world = World()
    for domain in ("real", "clipart", "quickdraw"):
        images = generate_split(domain, "train", 40, 32, 0, world)[0].float().mean(1)
        centre = images[:, 12:20, 12:20].mean((1, 2))
        border = torch.cat([images[:, :3].flatten(1), images[:, -3:].flatten(1)], 1).mean(1)
        assert (border - centre).mean() > 15, domain


def test_images_do_not_depend_on_the_thread_count() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = raw("real", 30, 16, seed=5)
        torch.set_num_threads(2)
        two = raw("real", 30, 16, seed=5)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)

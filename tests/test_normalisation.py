"""Each data set states its statistics; options override them as lists or text, or `auto`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from transferlens.cli import main
from transferlens.data import DataSpec, build_data
from transferlens.data import image_folder as image_folder_module
from transferlens.data.normalisation import CIFAR10, IMAGENET, channel_statistics
from transferlens.data.synthetic import MEAN as SYNTHETIC_MEAN
from transferlens.data.synthetic import STD as SYNTHETIC_STD
from transferlens.errors import UserInputError
from transferlens.validation import validate


@pytest.fixture(autouse=True)
def _isolated_cache(isolated_cache: Path) -> Path:
    return isolated_cache


def _write_flat_images(folder: Path, colours: dict[str, list[tuple[int, int, int]]]) -> None:
    """PNG (lossless) class folders of flat 8 px images of the given RGB colours."""
    for name, values in colours.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index, colour in enumerate(values):
            array = np.empty((8, 8, 3), dtype=np.uint8)
            array[:] = colour
            Image.fromarray(array, "RGB").save(folder / name / f"{index:03d}.png")


COLOURS = {
    "a": [(10, 200, 30), (60, 90, 250), (0, 255, 128), (33, 66, 99)],
    "b": [(250, 20, 40), (120, 120, 120), (5, 180, 75), (200, 10, 160)],
}
GREY = (100, 150, 200)


def _expected(colour: tuple[int, int, int], mean, std) -> torch.Tensor:
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, mean, std)])


def _first_pixel(dataset, index: int) -> torch.Tensor:
    return dataset[index][0][:, 0, 0]


# ----------------------------------------------------------------------------------------
# Each data set states its statistics


def test_presets_use_their_own_statistics_and_say_so(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _write_flat_images(root / "cifar10" / "train", {"cat": [GREY] * 2, "dog": [GREY] * 2})
    _write_flat_images(root / "cifar10" / "test", {"cat": [GREY], "dog": [GREY]})
    for domain in ("photo", "sketch"):
        _write_flat_images(root / "pacs64" / domain, {name: [GREY] * 5 for name in "abcdefg"})
    _write_flat_images(tmp_path / "folder", {"x": [GREY] * 5, "y": [GREY] * 5})

    cifar = build_data(DataSpec(name="cifar10", root=str(root)))
    pacs = build_data(DataSpec(name="pacs", domain="sketch", root=str(root), image_size=8))
    folder = build_data(DataSpec(name="image_folder", root=str(tmp_path / "folder")))
    for splits, statistics in ((cifar, CIFAR10), (pacs, CIFAR10), (folder, IMAGENET)):
        assert (splits.normalisation.mean, splits.normalisation.std) == (
            statistics.mean,
            statistics.std,
        )
        torch.testing.assert_close(
            _first_pixel(splits.test, 0), _expected(GREY, statistics.mean, statistics.std)
        )
    # CIFAR-10's published training-set statistics (not ImageNet's, not the per-image std).
    assert CIFAR10.mean == (0.4914, 0.4822, 0.4465) and CIFAR10.std == (0.2470, 0.2435, 0.2616)
    assert "CIFAR-10" in str(cifar.normalisation) and "ImageNet" in str(folder.normalisation)
    # The built data says what it uses: its repr shows the numbers.
    assert "0.4914" in repr(cifar) and "0.4850" in repr(folder.train)


def test_synthetic_statistics_are_unchanged() -> None:
    splits = build_data(
        DataSpec(name="synthetic", domain="real", image_size=8, train_size=8, test_size=8)
    )
    assert SYNTHETIC_MEAN == (0.77, 0.77, 0.77) and SYNTHETIC_STD == (0.23, 0.23, 0.23)
    assert (splits.train.mean, splits.train.std) == (SYNTHETIC_MEAN, SYNTHETIC_STD)
    assert splits.normalisation.mean == SYNTHETIC_MEAN
    stored = splits.test.images[0].double() / 255
    expected = (stored - 0.77) / 0.23
    torch.testing.assert_close(splits.test[0][0].double(), expected, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------
# options.mean / options.std / options.normalize


def _folder_spec(tmp_path: Path, yaml_options: str) -> DataSpec:
    data = yaml.safe_load(f"name: image_folder\nroot: {tmp_path / 'folder'}\n{yaml_options}")
    return validate(DataSpec, data, "train.yaml")


def test_mean_and_std_as_lists_or_text_give_the_same_images(tmp_path: Path) -> None:
    _write_flat_images(tmp_path / "folder", COLOURS)
    as_lists = _folder_spec(tmp_path, "options: {mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 1]}")
    as_text = _folder_spec(tmp_path, "options: {mean: '0.5,0.4,0.3', std: '0.2, 0.25, 1'}")
    lists, text = build_data(as_lists), build_data(as_text)
    assert lists.normalisation.mean == text.normalisation.mean == (0.5, 0.4, 0.3)
    assert lists.normalisation.std == text.normalisation.std == (0.2, 0.25, 1.0)
    assert torch.equal(lists.train[0][0], text.train[0][0])
    torch.testing.assert_close(
        _first_pixel(lists.train, 0),
        _expected(tuple(lists.train.images[0, :, 0, 0].tolist()), (0.5, 0.4, 0.3), (0.2, 0.25, 1)),
    )
    assert "options.mean" in lists.normalisation.source
    named = build_data(_folder_spec(tmp_path, "options: {normalize: cifar10}"))
    assert (named.normalisation.mean, named.normalisation.std) == (CIFAR10.mean, CIFAR10.std)


@pytest.mark.parametrize(
    ("yaml_options", "fragment"),
    [
        ("options: {mean: [0.5, 0.5], std: [0.2, 0.2, 0.2]}", r"options\.mean: expected 3"),
        ("options: {mean: '0.5,0.5,0.5', std: '0.2,0.2,0.2,0.2'}", r"options\.std: expected 3"),
        ("options: {mean: [0.5, 0.5, 0.5], std: [0.2, 0, 0.2]}", r"options\.std: .*positive"),
        ("options: {mean: 'a,b,c', std: '1,1,1'}", r"options\.mean: expected 3 numbers"),
        ("options: {mean: [0.5, 0.5, 0.5]}", r"options\.mean needs options\.std"),
        ("options: {normalize: auto, std: [1, 1, 1]}", r"options\.normalize or options\.mean"),
        ("options: {normalize: imagenett}", r"options\.normalize must be one of .*auto"),
    ],
)
def test_bad_statistics_are_one_line_naming_the_key(
    tmp_path: Path, yaml_options: str, fragment: str
) -> None:
    _write_flat_images(tmp_path / "folder", COLOURS)
    with pytest.raises(UserInputError, match=fragment) as caught:
        build_data(_folder_spec(tmp_path, yaml_options))
    assert "\n" not in str(caught.value) and str(caught.value).startswith("image_folder: ")


def test_a_bad_option_value_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(UserInputError) as caught:
        _folder_spec(tmp_path, "options: {mean: [0.5, [1], 0.5], std: '1,1,1'}")
    message = str(caught.value)
    assert message.startswith("train.yaml: options: key 'mean'") and "\n" not in message
    assert "more problem" not in message


def test_lazy_data_sets_refuse_auto(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="domainnet cannot compute its own"):
        build_data(
            DataSpec(
                name="domainnet", domain="real", root=str(tmp_path), options={"normalize": "auto"}
            )
        )


def test_cli_exits_2_with_one_line_on_bad_statistics(tmp_path: Path, capsys) -> None:
    _write_flat_images(tmp_path / "folder", COLOURS)
    config = {
        "model": "fixup_resnet10",
        "model_kwargs": {"stem": "cifar", "width": 4},
        "data": {
            "name": "image_folder",
            "root": str(tmp_path / "folder"),
            "options": {"mean": [0.5, 0.5], "std": [0.5, 0.5]},
        },
        "epochs": 1,
        "batch_size": 4,
        "lr": 0.01,
        "device": "cpu",
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["train", str(path), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "options.mean: expected 3 numbers" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------------------
# normalize: auto


def _reference_statistics(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    values = images.double().div(255).permute(1, 0, 2, 3).reshape(images.shape[1], -1)
    return values.mean(dim=1).numpy(), values.std(dim=1, unbiased=False).numpy()


def test_channel_statistics_are_exact() -> None:
    images = torch.randint(0, 256, (7, 3, 5, 4), generator=torch.Generator().manual_seed(1))
    mean, std = channel_statistics(images.to(torch.uint8))
    reference_mean, reference_std = _reference_statistics(images)
    np.testing.assert_allclose(mean, reference_mean, rtol=1e-12)
    np.testing.assert_allclose(std, reference_std, rtol=1e-12)
    # The same numbers however the images are ordered (exact integer moments).
    assert channel_statistics(images.flip(0).to(torch.uint8)) == (mean, std)


def test_auto_uses_the_training_split_and_is_cached(
    tmp_path: Path, _isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_flat_images(tmp_path / "folder", COLOURS)
    spec = _folder_spec(tmp_path, "options: {normalize: auto}\nsplit_seed: 2")
    splits = build_data(spec)
    reference_mean, reference_std = _reference_statistics(splits.train.images)
    np.testing.assert_allclose(splits.normalisation.mean, reference_mean, rtol=1e-12)
    np.testing.assert_allclose(splits.normalisation.std, reference_std, rtol=1e-12)
    assert "computed from the 6 training images" in splits.normalisation.source
    # Normalised by its own statistics, the training split has mean 0 and std 1.
    batch = torch.stack([splits.train[i][0] for i in range(len(splits.train))]).double()
    per_channel = batch.permute(1, 0, 2, 3).reshape(3, -1)
    float32 = {"atol": 1e-5, "rtol": 0}  # the items are float32
    torch.testing.assert_close(per_channel.mean(dim=1), torch.zeros(3).double(), **float32)
    torch.testing.assert_close(
        per_channel.std(dim=1, unbiased=False), torch.ones(3).double(), **float32
    )
    # Cached beside the decoded images: a second build reads it, computes nothing.
    cached = list((_isolated_cache / "images").glob("*.normalisation.json"))
    assert len(cached) == 1
    assert json.loads(cached[0].read_text())["mean"] == list(splits.normalisation.mean)

    def refuse(images: torch.Tensor) -> None:
        raise AssertionError("statistics recomputed although cached")

    monkeypatch.setattr(image_folder_module, "channel_statistics", refuse)
    again = build_data(spec)
    assert again.normalisation == splits.normalisation
    assert torch.equal(again.train[0][0], splits.train[0][0])
    # Another training split (another seed) has its own statistics.
    monkeypatch.undo()
    monkeypatch.setenv("TRANSFERLENS_CACHE", str(_isolated_cache))
    other = build_data(spec.model_copy(update={"split_seed": 5}))
    assert other.normalisation.mean != splits.normalisation.mean


def test_auto_refuses_a_constant_channel(tmp_path: Path) -> None:
    _write_flat_images(tmp_path / "folder", {"a": [(0, 10, 20)] * 3, "b": [(0, 30, 40)] * 3})
    with pytest.raises(UserInputError, match="constant"):
        build_data(_folder_spec(tmp_path, "options: {normalize: auto}"))

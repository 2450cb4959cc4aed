"""Real-data loaders on tiny generated trees: layouts, splits, caching, archives, label rules."""

from __future__ import annotations

import csv
import io
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from transferlens.data import DataSpec, TensorImageDataset, block_shuffle, build_data
from transferlens.data import image_folder as image_folder_module
from transferlens.data.chexpert import paper_split, read_labels
from transferlens.data.domainnet import paper_subsample
from transferlens.data.splits import stratified_split, stratified_subsample
from transferlens.data.tensor_dataset import crop_padding
from transferlens.errors import UserInputError

# Each generated image is one flat grey level, so it can be identified after JPEG coding.
LEVEL_STEP = 8


@pytest.fixture(autouse=True)
def _isolated_cache(isolated_cache: Path) -> Path:
    return isolated_cache


def _write_image(
    path: Path, level: int, size: int | tuple[int, int] = 8, mode: str = "RGB"
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = (size, size) if isinstance(size, int) else size
    channels = 1 if mode == "L" else 3
    array = np.full((height, width, channels), level, dtype=np.uint8).squeeze(
        -1 if mode == "L" else ()
    )
    Image.fromarray(array, mode).save(path, quality=95)


def _write_class_tree(
    folder: Path, counts: dict[str, int], size: int = 8, start: int = 0
) -> list[int]:
    """Class folders of flat images with distinct levels; returns the levels in file order."""
    levels = []
    level = start
    for name, count in counts.items():
        for k in range(count):
            _write_image(folder / name / f"{k:04d}.jpg", level * LEVEL_STEP % 256, size)
            levels.append(level)
            level += 1
    return levels


def _image_ids(dataset: TensorImageDataset) -> list[int]:
    """Identify each stored image by its (flat) grey level."""
    return [
        round(float(level) / LEVEL_STEP) for level in dataset.images.float().mean(dim=(1, 2, 3))
    ]


# ----------------------------------------------------------------------------------------
# TensorImageDataset


def test_items_are_normalised_then_shuffled() -> None:
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    targets = torch.arange(6) % 3
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    plain = TensorImageDataset(images, targets, mean, std)
    expected = (
        images.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1).double()
    ) / torch.tensor(std).view(1, 3, 1, 1).double()
    for i in range(6):
        image, target = plain[i]
        assert image.dtype == torch.float32 and target == targets[i]
        torch.testing.assert_close(image.double(), expected[i], rtol=0, atol=1e-5)
    from transferlens.data import make_shuffle

    shuffled = TensorImageDataset(images, targets, mean, std, shuffle=make_shuffle(2, 1234))
    torch.testing.assert_close(shuffled[4][0], block_shuffle(plain[4][0][None], 2, 1234)[0])
    batch = shuffled.__getitems__([5, 0, 3])
    for (image, target), i in zip(batch, [5, 0, 3]):
        torch.testing.assert_close(image, shuffled[i][0])
        assert target == targets[i]
    assert plain.num_classes == 3


def _reference_crops(image: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every crop of the reflect-padded image, flipped or not (brute force)."""
    _, h, w = image.shape
    padded = F.pad(image[None].float(), (pad, pad, pad, pad), mode="reflect")[0]
    crops = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            crops += [crop, crop.flip(-1)]
    return crops


def test_augmentation_is_a_reflect_padded_crop_and_flip_seeded_by_torch() -> None:
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    dataset = TensorImageDataset(
        images, torch.zeros(16, dtype=torch.long), (0.0,) * 3, (1 / 255,) * 3, augment=True
    )
    assert crop_padding(32) == 4 and crop_padding(16) == 2 and crop_padding(64) == 8
    torch.manual_seed(0)
    batch = torch.stack([x for x, _ in dataset.__getitems__(list(range(16)))])
    torch.manual_seed(0)
    again = torch.stack([x for x, _ in dataset.__getitems__(list(range(16)))])
    assert torch.equal(batch, again)
    changed = 0
    for i in range(16):
        crops = _reference_crops(images[i], crop_padding(16))
        assert any(torch.allclose(batch[i], crop, atol=1e-3) for crop in crops)
        changed += not torch.allclose(batch[i], images[i].float(), atol=1e-3)
    assert changed > 8  # almost every image is moved or flipped
    single = dataset[3][0]
    assert any(torch.allclose(single, crop, atol=1e-3) for crop in _reference_crops(images[3], 2))


def test_dataloader_batches_through_getitems() -> None:
    images = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8)
    targets = torch.arange(300) % 10
    dataset = TensorImageDataset(images, targets, (0.5,) * 3, (0.5,) * 3)
    loader = DataLoader(dataset, batch_size=128, shuffle=False)
    batches = list(loader)
    assert [len(x) for x, _ in batches] == [128, 128, 44]
    x, y = batches[1]
    assert (
        x.shape == (128, 3, 8, 8) and x.dtype == torch.float32 and torch.equal(y, targets[128:256])
    )
    torch.testing.assert_close(x[0], dataset[128][0])


# ----------------------------------------------------------------------------------------
# Split rules


def test_stratified_split_and_subsample_rules() -> None:
    labels = np.repeat([0, 1, 2], [10, 7, 5])
    train, test = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(labels)
    assert Counter(labels[test].tolist()) == {0: 2, 1: 1, 2: 1}
    again = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=4)[1], test)
    # The documented rule, written out.
    rng = np.random.RandomState(3)
    expected = []
    for label in range(3):
        members = np.flatnonzero(labels == label)
        order = members[rng.permutation(len(members))]
        expected += list(order[: int(np.floor(0.2 * len(members) + 0.5)) or 1])
    assert np.array_equal(test, np.sort(expected))
    chosen = stratified_subsample(np.repeat([0, 1], [60, 30]), 30, seed=0)
    assert len(chosen) == 30 and Counter(np.repeat([0, 1], [60, 30])[chosen].tolist()) == {
        0: 20,
        1: 10,
    }
    with pytest.raises(UserInputError, match="test_fraction"):
        stratified_split(labels, 1.5, seed=0)


# ----------------------------------------------------------------------------------------
# image_folder


def test_image_folder_split_is_deterministic_stratified_and_disjoint(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    levels = _write_class_tree(root, {"b_cat": 10, "a_dog": 7, "c_eel": 5})
    spec = DataSpec(name="image_folder", root=str(root), split_seed=3)
    splits = build_data(spec)
    assert splits.class_names == ("a_dog", "b_cat", "c_eel") and splits.num_classes == 3
    assert splits.image_size == 8 and splits.task == "multiclass"
    train_ids, test_ids = _image_ids(splits.train), _image_ids(splits.test)
    assert set(train_ids).isdisjoint(test_ids) and sorted(train_ids + test_ids) == sorted(levels)
    assert Counter(splits.test.targets.tolist()) == {0: 1, 1: 2, 2: 1}
    # Labels follow the sorted class names: b_cat's images (levels 0..9) are class 1.
    for image_id, target in zip(train_ids, splits.train.targets.tolist()):
        assert target == (1 if image_id < 10 else 0 if image_id < 17 else 2)
    # The same split on every build (and through the cache), another one for another seed.
    again = build_data(spec)
    assert _image_ids(again.test) == test_ids and torch.equal(
        again.train.images, splits.train.images
    )
    other = build_data(spec.model_copy(update={"split_seed": 4}))
    assert _image_ids(other.test) != test_ids
    # Subsampling keeps the proportions.
    small = build_data(spec.model_copy(update={"train_size": 9}))
    assert len(small.train) == 9 and set(_image_ids(small.train)) <= set(train_ids)
    assert Counter(small.train.targets.tolist()) == {0: 3, 1: 4, 2: 2}


def test_image_folder_cache_is_reused_and_invalidated(
    tmp_path: Path, _isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "folder"
    _write_class_tree(root, {"x": 4, "y": 4})
    spec = DataSpec(name="image_folder", root=str(root), image_size=4)
    first = build_data(spec)
    assert first.train[0][0].shape == (3, 4, 4)
    assert len(list((_isolated_cache / "images").glob("*.safetensors"))) == 2
    calls = []
    real_decode = image_folder_module.decode_image
    monkeypatch.setattr(
        image_folder_module, "decode_image", lambda *a: calls.append(a) or real_decode(*a)
    )
    second = build_data(spec)
    assert calls == [] and torch.equal(second.train.images, first.train.images)
    touched = next((root / "x").iterdir())
    os.utime(touched, ns=(1, 1))
    build_data(spec)
    assert calls  # a changed file invalidates the cached tensor


def test_image_folder_official_split_augment_and_shuffle(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    _write_class_tree(root / "train", {"a": 3, "b": 3}, size=8)
    _write_class_tree(root / "test", {"a": 2, "b": 1}, size=8, start=10)
    spec = DataSpec(name="image_folder", root=str(root), augment=True, block_size=4, shuffle_seed=9)
    splits = build_data(spec)
    assert (len(splits.train), len(splits.test)) == (6, 3)
    assert splits.train.augment and not splits.train_eval.augment and not splits.test.augment
    assert splits.train_eval.images is splits.train.images
    assert splits.train_eval.shuffle is splits.train.shuffle is splits.test.shuffle
    plain = build_data(spec.model_copy(update={"block_size": None, "augment": False}))
    torch.testing.assert_close(splits.test[1][0], block_shuffle(plain.test[1][0][None], 4, 9)[0])
    with pytest.raises(UserInputError, match="block_size 3 .*8x8"):
        build_data(spec.model_copy(update={"block_size": 3}))
    with pytest.raises(UserInputError, match="options.colour"):
        build_data(spec.model_copy(update={"options": {"colour": "red"}}))


def test_image_folder_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="data.root"):
        build_data(DataSpec(name="image_folder"))
    with pytest.raises(UserInputError, match="not found"):
        build_data(DataSpec(name="image_folder", root=str(tmp_path / "nowhere")))
    _write_image(tmp_path / "mixed" / "a" / "0.jpg", 10, 8)
    _write_image(tmp_path / "mixed" / "a" / "1.jpg", 20, (8, 6))
    _write_image(tmp_path / "mixed" / "b" / "0.jpg", 30, 8)
    _write_image(tmp_path / "mixed" / "b" / "1.jpg", 40, 8)
    with pytest.raises(UserInputError, match="image_size"):
        build_data(DataSpec(name="image_folder", root=str(tmp_path / "mixed"), test_size=1))
    resized = build_data(DataSpec(name="image_folder", root=str(tmp_path / "mixed"), image_size=6))
    assert resized.image_size == 6


# ----------------------------------------------------------------------------------------
# cifar10 / pacs presets and archives

PACS_COUNTS = {
    "dog": 5,
    "elephant": 5,
    "giraffe": 5,
    "guitar": 5,
    "horse": 5,
    "house": 5,
    "person": 5,
}


def _write_pacs(root: Path) -> None:
    for domain in ("photo", "sketch"):
        _write_class_tree(root / "pacs64" / domain, PACS_COUNTS, size=16)


def test_cifar10_and_pacs_presets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    _write_class_tree(root / "cifar10" / "train", {"airplane": 3, "cat": 3}, size=32)
    _write_class_tree(root / "cifar10" / "test", {"airplane": 1, "cat": 2}, size=32)
    _write_pacs(root)
    cifar = build_data(DataSpec(name="cifar10", root=str(root)))
    assert (len(cifar.train), len(cifar.test), cifar.image_size) == (6, 3, 32)
    assert cifar.class_names == ("airplane", "cat")
    monkeypatch.setenv("TRANSFERLENS_DATA", str(root))  # the environment works as the root
    pacs = build_data(DataSpec(name="pacs", domain="sketch"))
    assert pacs.num_classes == 7 and pacs.class_names == tuple(sorted(PACS_COUNTS))
    assert (len(pacs.train), len(pacs.test)) == (28, 7) and pacs.image_size == 64  # resized
    assert Counter(pacs.test.targets.tolist()) == dict.fromkeys(range(7), 1)
    with pytest.raises(UserInputError, match="photo, art_painting, cartoon, sketch"):
        build_data(DataSpec(name="pacs", domain="clipart"))
    with pytest.raises(UserInputError, match="photo, art_painting, cartoon, sketch"):
        build_data(DataSpec(name="pacs"))


def test_missing_root_names_both_ways_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="data.root.*TRANSFERLENS_DATA"):
        build_data(DataSpec(name="cifar10"))
    with pytest.raises(UserInputError, match=r"cifar10-jpg\.tar\.gz.*TRANSFERLENS_DATA"):
        build_data(DataSpec(name="cifar10", root=str(tmp_path)))
    with pytest.raises(UserInputError, match="nowhere.*TRANSFERLENS_DATA"):
        build_data(DataSpec(name="pacs", domain="photo", root=str(tmp_path / "nowhere")))


def test_presets_read_the_tarball_via_the_cache(tmp_path: Path, _isolated_cache: Path) -> None:
    tree = tmp_path / "tree"
    _write_pacs(tree)
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / "pacs-64px.tar.gz", "w:gz") as tar:
        tar.add(tree / "pacs64", arcname="pacs64")
    splits = build_data(DataSpec(name="pacs", domain="photo", root=str(root)))
    assert len(splits.train) + len(splits.test) == 35
    assert sorted(path.name for path in root.iterdir()) == ["pacs-64px.tar.gz"]  # root untouched
    extracted = list((_isolated_cache / "extracted").glob("pacs-64px-*/pacs64/photo"))
    assert len(extracted) == 1
    before = extracted[0].stat().st_mtime_ns
    build_data(DataSpec(name="pacs", domain="photo", root=str(root)))
    assert extracted[0].stat().st_mtime_ns == before  # extracted once


def test_unsafe_tarball_members_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / "cifar10-jpg.tar.gz", "w:gz") as tar:
        payload = b"evil"
        member = tarfile.TarInfo("cifar10/../../escaped.txt")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    with pytest.raises(UserInputError, match="unsafe member"):
        build_data(DataSpec(name="cifar10", root=str(root)))
    assert not (tmp_path / "escaped.txt").exists()


# ----------------------------------------------------------------------------------------
# DomainNet


def _write_domainnet(root: Path) -> tuple[list[str], list[str]]:
    classes = ["aircraft_carrier", "bee", "zebra"]
    train_lines, test_lines = [], []
    for label, name in enumerate(classes):
        for k in range(4):
            relative = f"clipart/{name}/clipart_{label:03d}_{k:06d}.jpg"
            _write_image(root / relative, 40 * label + 10 * k, (20, 12))
            (train_lines if k < 3 else test_lines).append(f"{relative} {label}")
    (root / "clipart_train.txt").write_text("\n".join(train_lines) + "\n")
    (root / "clipart_test.txt").write_text("\n".join(test_lines) + "\n")
    return train_lines, test_lines


def test_domainnet_parsing_transforms_and_shuffle(tmp_path: Path) -> None:
    root = tmp_path / "domainnet"
    train_lines, test_lines = _write_domainnet(root)
    spec = DataSpec(name="domainnet", domain="clipart", root=str(root), image_size=8)
    splits = build_data(spec)
    assert (len(splits.train), len(splits.test), splits.num_classes) == (9, 3, 345)
    assert splits.class_names[:3] == ("aircraft_carrier", "bee", "zebra")
    assert splits.train.targets.tolist() == [int(line.split()[1]) for line in train_lines]
    assert [p.relative_to(root).as_posix() for p in splits.test.paths] == [
        line.split()[0] for line in test_lines
    ]
    image, target = splits.train[4]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and target == 1
    # noaug: Resize(round(8 * 256 / 224) = 9) then CenterCrop(8) of a flat image -> flat.
    expected_level = (40 * 1 + 10 * 1) / 255
    torch.testing.assert_close(
        image[0], torch.full((8, 8), (expected_level - 0.485) / 0.229), atol=0.05, rtol=0
    )
    shuffled = build_data(spec.model_copy(update={"block_size": 0, "shuffle_seed": 5}))
    torch.testing.assert_close(
        shuffled.test[2][0],
        torch.stack([splits.test[2][0]])
        .flatten(1)[:, torch.randperm(192, generator=torch.Generator().manual_seed(5))]
        .reshape(3, 8, 8),
    )
    augmented = build_data(spec.model_copy(update={"augment": True}))
    assert augmented.train[0][0].shape == (3, 8, 8)
    torch.testing.assert_close(augmented.train_eval[4][0], image)
    small = build_data(spec.model_copy(update={"train_size": 3}))
    assert sorted(small.train.targets.tolist()) == [0, 1, 2]
    with pytest.raises(UserInputError, match="clipart, infograph"):
        build_data(spec.model_copy(update={"domain": "photo"}))
    with pytest.raises(UserInputError, match="real_train.txt"):
        build_data(spec.model_copy(update={"domain": "real"}))


def test_domainnet_keeps_the_papers_50k_subsample(tmp_path: Path) -> None:
    assert np.array_equal(paper_subsample(50_000), np.arange(50_000))
    expected = np.random.RandomState(2020).choice(60_001, 50_000, replace=False)
    assert np.array_equal(paper_subsample(60_001), expected)
    root = tmp_path / "domainnet"
    root.mkdir()
    lines = [f"real/c{i % 7}/real_{i:06d}.jpg {i % 7}" for i in range(50_003)]
    (root / "real_train.txt").write_text("\n".join(lines) + "\n")
    (root / "real_test.txt").write_text("\n".join(lines[:10]) + "\n")
    splits = build_data(DataSpec(name="domainnet", domain="real", root=str(root)))
    chosen = np.random.RandomState(2020).choice(50_003, 50_000, replace=False)
    assert len(splits.train) == 50_000 and len(splits.test) == 10
    names = [path.name for path in splits.train.paths]
    assert names == [f"real_{i:06d}.jpg" for i in chosen]
    assert splits.train.targets.tolist() == (chosen % 7).tolist()


# ----------------------------------------------------------------------------------------
# CheXpert

CHEXPERT_HEADER = [
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
# Per row: Cardiomegaly, Edema, Consolidation, Atelectasis, Pleural Effusion; expected labels.
CHEXPERT_ROWS = [
    (("1.0", "0.0", "", "-1.0", "-1.0"), (1, 0, 0, 1, 0)),
    (("-1.0", "-1.0", "-1.0", "", "1.0"), (0, 1, 0, 0, 1)),
    (("", "", "", "", ""), (0, 0, 0, 0, 0)),
    (("0.0", "1.0", "1.0", "1.0", "0.0"), (0, 1, 1, 1, 0)),
    (("1.0", "", "0.0", "0.0", "-1.0"), (1, 0, 0, 0, 0)),
    (("0.0", "-1.0", "", "1.0", ""), (0, 1, 0, 1, 0)),
    (("", "0.0", "-1.0", "-1.0", "1.0"), (0, 0, 0, 1, 1)),
]


def _write_chexpert(root: Path) -> Path:
    folder = root / "CheXpert-v1.0-small"
    columns = {
        name: CHEXPERT_HEADER.index(name)
        for name in ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")
    }
    rows = []
    for k, (values, _) in enumerate(CHEXPERT_ROWS):
        relative = f"CheXpert-v1.0-small/train/patient{k:05d}/study1/view1_frontal.jpg"
        _write_image(root / relative, 30 * k, (10, 14), mode="L")
        row = [""] * len(CHEXPERT_HEADER)
        row[0], row[1], row[2], row[3], row[4] = relative, "Female", "60", "Frontal", "AP"
        for value, column in zip(values, columns.values()):
            row[column] = value
        rows.append(row)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CHEXPERT_HEADER)
        writer.writerows(rows)
    return folder


def test_chexpert_labels_split_and_images(tmp_path: Path) -> None:
    folder = _write_chexpert(tmp_path)
    paths, labels = read_labels(folder / "train.csv")
    assert labels.dtype == np.float32
    assert labels.tolist() == [list(map(float, expected)) for _, expected in CHEXPERT_ROWS]
    # The authors permute the CSV's lines with RandomState(1234): the same order.
    lines = (folder / "train.csv").read_text().splitlines()[1:]
    authors = np.random.RandomState(seed=1234).permutation(lines)
    train_rows, test_rows = paper_split(len(lines))
    assert [lines[i] for i in np.concatenate([train_rows, test_rows])] == list(authors[:7])
    assert (len(train_rows), len(test_rows)) == (3, 4)
    big_train, big_test = paper_split(120_000)
    assert (len(big_train), len(big_test)) == (50_000, 50_000)
    assert np.array_equal(
        np.concatenate([big_train, big_test]),
        np.random.RandomState(1234).permutation(120_000)[:100_000],
    )

    spec = DataSpec(
        name="chexpert",
        root=str(tmp_path),
        image_size=8,
        options={"mean": "0.5,0.5,0.5", "std": "0.5,0.5,0.5"},
    )
    splits = build_data(spec)
    assert splits.task == "multilabel" and splits.num_classes == 5
    assert splits.class_names == (
        "Cardiomegaly",
        "Edema",
        "Consolidation",
        "Atelectasis",
        "Pleural Effusion",
    )
    assert torch.equal(splits.test.targets, torch.tensor(labels[test_rows]))
    image, target = splits.train[1]
    assert image.shape == (3, 8, 8) and target.dtype == torch.float32 and target.shape == (5,)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # grey -> 3 channels
    level = 30 * int(train_rows[1]) / 255
    torch.testing.assert_close(image[0], torch.full((8, 8), (level - 0.5) / 0.5), atol=0.05, rtol=0)
    small = build_data(spec.model_copy(update={"root": str(folder), "train_size": 2}))
    assert torch.equal(small.train.targets, torch.tensor(labels[train_rows[:2]]))
    (folder / "train.csv").write_text("Path,Edema\nx.jpg,1.0\n")
    with pytest.raises(UserInputError, match="missing column 'Cardiomegaly'"):
        build_data(spec)


# ----------------------------------------------------------------------------------------
# Real data (../shared/data)


@pytest.mark.realdata
def test_real_pacs_and_cifar10(shared_data: Path, shared_data_cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("TRANSFERLENS_CACHE", str(shared_data_cache))
    pacs = build_data(
        DataSpec(name="pacs", domain="photo", root=str(shared_data), train_size=140, test_size=70)
    )
    assert pacs.class_names == ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
    assert (len(pacs.train), len(pacs.test), pacs.image_size) == (140, 70, 64)
    assert len(set(pacs.train.targets.tolist())) == 7
    full = build_data(DataSpec(name="pacs", domain="photo", root=str(shared_data), test_size=1))
    photo_counts = [189, 202, 182, 186, 199, 280, 432]  # per class, 1,670 in all
    expected_train = [n - int(np.floor(0.2 * n + 0.5)) for n in photo_counts]
    assert Counter(full.train.targets.tolist()) == dict(enumerate(expected_train))
    cifar = build_data(
        DataSpec(name="cifar10", root=str(shared_data), train_size=200, test_size=100)
    )
    assert cifar.num_classes == 10 and cifar.image_size == 32
    assert Counter(cifar.train.targets.tolist()) == dict.fromkeys(range(10), 20)
    x, y = next(iter(DataLoader(cifar.train, batch_size=64)))
    assert x.shape == (64, 3, 32, 32) and abs(float(x.mean())) < 1.5

"""Image decoding and the torchvision pipelines of the paper's real data sets.

In-memory data sets decode each file once with :func:`decode_image` (RGB, shorter side
resized to ``size`` with antialiased bilinear resampling, then centre-cropped to a
``size x size`` square; square images are simply resized). Lazy data sets (DomainNet,
CheXpert) use the torchvision pipelines below on PIL images, as the authors' code does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from transferlens.data.normalisation import IMAGENET
from transferlens.errors import UserInputError

# ImageNet's statistics as plain tuples (which data set uses which: data.normalisation).
IMAGENET_MEAN = IMAGENET.mean
IMAGENET_STD = IMAGENET.std

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "center_crop_resize",
    "chexpert_transform",
    "decode_image",
    "domainnet_transform",
    "open_image",
]


def open_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Open an image file as a PIL image of ``mode``; an unreadable file is a UserInputError."""
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, ValueError) as error:
        raise UserInputError(f"{path}: cannot read image ({error.__class__.__name__})") from None


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` (antialiased bilinear), then the centre ``size x size`` square."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def decode_image(path: str | Path, size: int | None, mode: str = "RGB") -> torch.Tensor:
    """One image file as a uint8 ``[C, H, W]`` tensor, resized as the module doc says."""
    image = open_image(path, mode)
    if size is not None:
        image = center_crop_resize(image, size)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def domainnet_transform(
    image_size: int, augment: bool, mean: Sequence[float], std: Sequence[float]
) -> transforms.Compose:
    """The authors' DomainNet pipelines (224 px: pre-crop 256 = 224 * 8 / 7).

    augment: RandomResizedCrop(size) + RandomHorizontalFlip; otherwise ("noaug"):
    Resize(round(size * 8 / 7)) + CenterCrop(size). Then ToTensor + Normalize.
    """
    if augment:
        geometry = [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()]
    else:
        pre_crop = round(image_size * 256 / 224)
        geometry = [transforms.Resize(pre_crop), transforms.CenterCrop(image_size)]
    return transforms.Compose([*geometry, transforms.ToTensor(), transforms.Normalize(mean, std)])


def chexpert_transform(
    image_size: int, augment: bool, mean: Sequence[float], std: Sequence[float]
) -> transforms.Compose:
    """Grayscale X-ray (PIL mode "L") -> 3 equal channels, ``image_size`` square, normalised.

    Resized to ``image_size x image_size`` without keeping the aspect ratio (as the
    authors' loader does). ``augment`` adds the authors' random affine (rotation up to
    15 degrees, shift up to 5%, scale 0.95-1.05, grey fill) before resizing.
    """
    steps: list = []
    if augment:
        steps.append(
            transforms.RandomAffine(
                degrees=15, translate=(0.05, 0.05), scale=(0.95, 1.05), fill=128
            )
        )
    steps += [
        transforms.Resize((image_size, image_size)),
        transforms.Grayscale(num_output_channels=3),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ]
    return transforms.Compose(steps)

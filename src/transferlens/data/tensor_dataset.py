"""An in-memory image data set served from one uint8 tensor, batched without per-item work.

Each item goes through: optional augmentation (random crop with reflect padding of 4 px
per 32 px of side, then a horizontal flip with probability 1/2; the paper's CIFAR-style
augmentation) -> normalisation ``(x / 255 - mean) / std`` -> optional shuffle (the
paper's block or pixel shuffle, applied after normalisation).

Augmentation draws from torch's global RNG, so a training loop that seeds or restores
``torch.random`` state reproduces it exactly. ``__getitems__`` (used by
``torch.utils.data.DataLoader`` for batched fetching) does the whole batch in a few
tensor operations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from transferlens.data.shuffle import InputShuffle
from transferlens.errors import UserInputError

__all__ = ["TensorImageDataset", "crop_padding"]


def crop_padding(side: int) -> int:
    """Reflect padding of the random crop: 4 px for a 32 px side, proportional otherwise."""
    return max(1, round(side * 4 / 32))


def _reflect(index: Tensor, size: int) -> Tensor:
    # Reflect padding without repeating the edge pixel (torch's "reflect" mode):
    # -1 -> 1, size -> size - 2.
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


class TensorImageDataset(Dataset):
    """Images ``uint8 [N, C, H, W]`` and targets, served as ``(float32 [C, H, W], target)``.

    ``shuffle`` maps a batch ``[B, C, H, W]`` to a batch; an :class:`InputShuffle` is
    also given the data-set indices of the images (its per-image mode keys each image's
    permutation on them, so an image is shuffled the same way however it is batched).
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = False,
        shuffle: Callable[..., Tensor] | None = None,
        num_classes: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W] (got {images.dtype} {tuple(images.shape)})"
            )
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise UserInputError(
                f"mean/std need one value per channel ({channels}); got {len(mean)} and {len(std)}"
            )
        if any(float(s) <= 0 for s in std):
            raise UserInputError(f"std values must be positive (got {list(std)})")
        self.images = images
        self.targets = targets
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = augment
        self.shuffle = shuffle
        if num_classes is None and targets.numel():
            if targets.dim() == 1 and not targets.is_floating_point():
                num_classes = int(targets.max()) + 1
            elif targets.dim() == 2:
                num_classes = int(targets.shape[1])
        self.num_classes = num_classes
        # (x / 255 - mean) / std == x * scale + shift, one fused pass.
        std_t = torch.tensor(self.std, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
        self._shift = (-torch.tensor(self.mean, dtype=torch.float32) / std_t).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        shape = "x".join(str(side) for side in self.images.shape[1:])
        mean = ", ".join(f"{value:.4f}" for value in self.mean)
        std = ", ".join(f"{value:.4f}" for value in self.std)
        return (
            f"{type(self).__name__}({len(self)} images {shape}, mean=({mean}), std=({std}), "
            f"augment={self.augment}, shuffle={self.shuffle!r})"
        )

    def with_options(
        self, augment: bool | None = None, shuffle: Callable[..., Tensor] | None = None
    ) -> TensorImageDataset:
        """The same images and targets (shared, not copied) with other options."""
        return TensorImageDataset(
            self.images,
            self.targets,
            self.mean,
            self.std,
            augment=self.augment if augment is None else augment,
            shuffle=self.shuffle if shuffle is None else shuffle,
            num_classes=self.num_classes,
        )

    def _augment(self, batch: Tensor) -> Tensor:
        """Random reflect-padded crop and horizontal flip of each image (global torch RNG)."""
        n, _, h, w = batch.shape
        pad_h, pad_w = crop_padding(h), crop_padding(w)
        offsets_y = torch.randint(0, 2 * pad_h + 1, (n, 1))
        offsets_x = torch.randint(0, 2 * pad_w + 1, (n, 1))
        flips = torch.rand(n, 1) < 0.5
        rows = _reflect(offsets_y - pad_h + torch.arange(h), h)  # [n, h]
        cols = offsets_x - pad_w + torch.arange(w)
        cols = torch.where(flips, offsets_x - pad_w + torch.arange(w - 1, -1, -1), cols)
        cols = _reflect(cols, w)  # [n, w]
        flat_index = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w)
        flat = batch.reshape(n, batch.shape[1], h * w)
        return flat.gather(2, flat_index.expand(-1, batch.shape[1], -1)).reshape(batch.shape)

    def transform_batch(self, batch: Tensor, image_ids: Sequence[int] | Tensor) -> Tensor:
        """uint8 images -> augmented, normalised, shuffled float32 images."""
        if self.augment:
            batch = self._augment(batch)
        out = torch.addcmul(self._shift, batch.float(), self._scale)
        if isinstance(self.shuffle, InputShuffle):
            out = self.shuffle(out, image_ids)
        elif self.shuffle is not None:
            out = self.shuffle(out)
        return out

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        index = range(len(self))[int(index)]  # negative indices; IndexError past the end
        image = self.transform_batch(self.images[index : index + 1], [index])[0]
        return image, self.targets[index]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.transform_batch(self.images.index_select(0, index), index)
        targets = self.targets.index_select(0, index)
        # default_collate stacks these pairs back; unbind returns views (no copies).
        return list(zip(images.unbind(0), targets.unbind(0)))

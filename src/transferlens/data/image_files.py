"""A lazy data set of image files (for data sets too large to decode into memory)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from transferlens.data.shuffle import InputShuffle
from transferlens.data.transforms import open_image

__all__ = ["ImageFileDataset"]


class ImageFileDataset(Dataset):
    """Items ``(shuffle(transform(PIL image)), target)``, read from disk on each access.

    ``transform`` maps a PIL image (opened in ``mode``) to a float32 ``[C, H, W]``
    tensor; ``shuffle`` (the paper's block or pixel shuffle) is applied after it, with
    the item's index as its image id (so per-image permutations do not depend on
    batching). Random transforms draw from torch's global RNG (DataLoader workers
    seed it per worker).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        targets: Tensor,
        transform: Callable[[object], Tensor],
        shuffle: Callable[..., Tensor] | None = None,
        mode: str = "RGB",
        num_classes: int | None = None,
    ) -> None:
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} paths but {len(targets)} targets")
        self.paths = [Path(path) for path in paths]
        self.targets = targets
        self.transform = transform
        self.shuffle = shuffle
        self.mode = mode
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.paths)

    def with_transform(self, transform: Callable[[object], Tensor]) -> ImageFileDataset:
        """The same files and targets with another transform."""
        return ImageFileDataset(
            self.paths, self.targets, transform, self.shuffle, self.mode, self.num_classes
        )

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        index = int(index)
        image = self.transform(open_image(self.paths[index], self.mode))
        if isinstance(self.shuffle, InputShuffle):
            image = self.shuffle(image, image_ids=[index])
        elif self.shuffle is not None:
            image = self.shuffle(image.unsqueeze(0))[0]
        return image, self.targets[index]

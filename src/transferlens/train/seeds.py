"""One run seed -> every random stream of a run, and the global RNG states of a process.

Each stream (initialisation, head, data order, augmentation, mixup, loader workers) gets
its own seed ``derive_seed(seed, purpose, ...)``, a hash of the run seed and the
purpose, so that streams are independent and changing one (say, the number of
epochs) never shifts another. Per-epoch streams also hash the epoch: the randomness
of epoch k is a pure function of ``(seed, k)``, which is what makes a resumed run
bit-identical to an uninterrupted one without replaying earlier epochs.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch


def derive_seed(seed: int, *purpose: object) -> int:
    """A 63-bit seed from the run seed and a purpose, e.g. ``derive_seed(0, "mixup", 3)``."""
    text = ":".join(str(part) for part in (seed, *purpose))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def seed_global_rngs(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy's legacy global RNG and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed NumPy and ``random`` from the worker's torch seed.

    PyTorch seeds each worker's torch RNG with ``base_seed + worker_id``, where the
    base seed comes from the loader's generator; the other two RNGs follow from it.
    """
    seed = torch.initial_seed()
    np.random.seed(seed % 2**32)
    random.seed(seed)


def capture_rng_states() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The global RNG states as tensors (for safetensors) plus JSON-able extras."""
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    kind, keys, position, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, python_state, gauss_next = random.getstate()
    tensors["rng.python"] = torch.tensor(python_state, dtype=torch.int64)
    extras = {
        "numpy": [kind, int(position), int(has_gauss), float(cached)],
        "python": [int(version), gauss_next],
    }
    return tensors, extras


def restore_rng_states(tensors: dict[str, torch.Tensor], extras: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_states`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = sorted(name for name in tensors if name.startswith("rng.cuda."))
    if cuda_states and torch.cuda.is_available():
        for name in cuda_states[: torch.cuda.device_count()]:
            torch.cuda.set_rng_state(tensors[name], device=int(name.rsplit(".", 1)[1]))
    kind, position, has_gauss, cached = extras["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, position, has_gauss, cached))
    version, gauss_next = extras["python"]
    python_state = tuple(int(value) for value in tensors["rng.python"].tolist())
    random.setstate((version, python_state, gauss_next))

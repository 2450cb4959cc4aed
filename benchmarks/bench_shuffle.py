"""Block shuffle of whole batches against the authors' per-image unfold / fold.

The authors' transform (``RandomBlockShuffle`` of the paper's code) runs once per
image: ``nn.Unfold`` cuts the image into blocks, the block axis is indexed by the
permutation, ``nn.Fold`` puts the blocks back. Ours
(``transferlens.data.block_shuffle``) works on the whole batch at once: one gather
(of values, or of block rows from b = 8), or for large blocks one strided copy per
block (``transferlens.data.shuffle_kernels``). Each is timed returning a new tensor and writing into a reused one. The baseline
here uses the permutation our module documents (``torch.randperm`` of the block count
from a CPU generator seeded with ``seed``), so both must give the identical tensor.

    python benchmarks/bench_shuffle.py [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from common import (
    Comparison,
    machine_load,
    measure_run_memory,
    print_lines,
    report_worker_result,
    run_worker,
    time_interleaved,
)
from torch import nn

IMAGE_SIZE = 224
BATCH = 128
BLOCK_SIZES = (4, 16, 56)
SEED = 1234
SPEEDUP = 10.0


def unfold_fold_per_image(images: torch.Tensor, block_size: int, seed: int) -> torch.Tensor:
    """The authors' pattern: one unfold / index / fold per image, images stacked after."""
    size = images.shape[-1]
    n_blocks = (size // block_size) ** 2
    perm = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed))
    unfold = nn.Unfold(kernel_size=block_size, stride=block_size)
    fold = nn.Fold(output_size=size, kernel_size=block_size, stride=block_size)
    out = []
    for image in images:
        blocks = unfold(image.unsqueeze(0))  # [1, C * b * b, n_blocks], row-major blocks
        out.append(fold(blocks[..., perm]).squeeze(0))
    return torch.stack(out)


def ours(images: torch.Tensor, block_size: int, seed: int) -> torch.Tensor:
    from transferlens.data.shuffle import block_shuffle

    return block_shuffle(images, block_size, seed)


_BUFFERS: dict[tuple, torch.Tensor] = {}


def ours_into_buffer(images: torch.Tensor, block_size: int, seed: int) -> torch.Tensor:
    """Ours writing into one buffer reused across calls (``out=``), as a loader would."""
    from transferlens.data.shuffle import block_shuffle

    key = (tuple(images.shape), images.dtype)
    if key not in _BUFFERS:
        _BUFFERS.clear()
        _BUFFERS[key] = torch.empty_like(images)
    return block_shuffle(images, block_size, seed, out=_BUFFERS[key])


PEER = "per-image unfold/fold"
CONTENDERS = {"ours": ours, "ours out=": ours_into_buffer, PEER: unfold_fold_per_image}


def make_images(batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


def _runner(name: str, images: torch.Tensor, block_size: int):
    return lambda: lambda: CONTENDERS[name](images, block_size, SEED)


def worker(name: str, block_size: int, batch: int, threads: int) -> None:
    torch.set_num_threads(threads)
    images = make_images(batch)
    CONTENDERS[name](images[:2], block_size, SEED)  # imports and index caches: set-up
    report_worker_result(measure_run_memory(_runner(name, images, block_size)()))


def compare(batch: int, repeats: int, threads: int, measure_memory: bool = True):
    torch.set_num_threads(threads)
    images = make_images(batch)
    comparisons = []
    for block_size in BLOCK_SIZES:
        contenders = {name: _runner(name, images, block_size) for name in CONTENDERS}
        times = time_interleaved(contenders, repeats + 1)  # the first repeat warms up
        for timed in times.values():
            timed.times, timed.cpu_times = timed.times[1:], timed.cpu_times[1:]
        peer = times[PEER]
        peaks = {}
        if measure_memory:
            for name in CONTENDERS:
                args = ["--contender", name, "--block-size", str(block_size)]
                args += ["--batch", str(batch), "--threads", str(threads)]
                peaks[name] = run_worker(Path(__file__), args)
        for name in ("ours", "ours out="):
            mine = times[name]
            identical = torch.equal(mine.value, peer.value)
            ratio = peer.median / mine.median
            buffer = " into a reused buffer (out=)" if name != "ours" else ""
            comparisons.append(
                Comparison(
                    f"block shuffle b={block_size} [{batch},3,{IMAGE_SIZE},{IMAGE_SIZE}]{buffer}",
                    PEER,
                    ours_seconds=mine.median,
                    peer_seconds=peer.median,
                    ours_cpu_seconds=mine.cpu_median,
                    peer_cpu_seconds=peer.cpu_median,
                    best_ratio=peer.best / mine.best,
                    diff=float((mine.value - peer.value).abs().max()),
                    ours_peak_mib=peaks.get(name, {}).get("peak_mib"),
                    ours_extra_mib=peaks.get(name, {}).get("extra_mib"),
                    peer_peak_mib=peaks.get(PEER, {}).get("peak_mib"),
                    peer_extra_mib=peaks.get(PEER, {}).get("extra_mib"),
                    target=f">= {SPEEDUP:g}x & identical",
                    met=ratio >= SPEEDUP and identical,
                    note="identical" if identical else "OUTPUTS DIFFER",
                )
            )
    return comparisons


def run(quick: bool = False, threads: int = 2) -> list[Comparison]:
    return compare(BATCH, repeats=3 if quick else 5, threads=threads, measure_memory=not quick)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three repeats, no memory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--block-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.contender, args.block_size, args.batch, args.threads)
        return
    print(f"# block shuffle: {machine_load()}, {args.threads} threads", flush=True)
    repeats = 3 if args.quick else 5
    print_lines(compare(args.batch, repeats, args.threads, measure_memory=not args.quick))


if __name__ == "__main__":
    sys.exit(main())

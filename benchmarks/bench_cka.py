"""CKA: ours against pytorch-cka, torch-cka, ckatorch and a float64 NumPy evaluation.

Task: two ResNet-18s (torchvision layout, seeds 0 and 1, eval mode), every pair of
8 block outputs (``layer1.0`` ... ``layer4.1``), an 8 x 8 matrix, on 2,048 and 8,192
images of 32 px in batches of 256. The estimator is the minibatch CKA of Nguyen,
Raghu & Kornblith (2021): per batch the unbiased HSIC_1 of Song et al. (2012) of the
linear Grams, summed over batches, then ``CKA_ij = S_ij / sqrt(S_ii S_jj)``.

Contenders, each fed by the same loader (batches generated from a seed, so memory does
not grow with the number of images):

* ``forward only``: the two models' forward passes, nothing else (the floor);
* ``forward only, channels-last``: the same on channels-last batches, the layout ours
  runs CPU image batches in (faster forwards); shown for information;
* ``ours``: ``transferlens.analysis.cka_matrix(..., n_bootstrap=0)``;
* ``numpy float64``: this file's evaluation of the estimator from its formula, in
  float64 NumPy, on features captured by plain hooks (the reference values);
* ``pytorch-cka``: ``cka.compute_cka(..., device=...)`` (it picks CUDA if not told);
* ``torch-cka``: ``torch_cka.CKA`` on fresh model copies (it never removes its hooks),
  rows and columns re-ordered from its hook order to ours;
* ``ckatorch``: its model-level ``CKA`` (fails on 4-D conv outputs: reported), and its
  batched ``hsic1`` streamed over batches by this file, where it runs.

    python benchmarks/bench_cka.py [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from common import (
    Comparison,
    Timed,
    add_peers_to_path,
    machine_load,
    max_abs_diff,
    measure_run_memory,
    print_lines,
    report_worker_result,
    run_worker,
    time_interleaved,
)
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

add_peers_to_path()

LAYERS = (
    "layer1.0",
    "layer1.1",
    "layer2.0",
    "layer2.1",
    "layer3.0",
    "layer3.1",
    "layer4.0",
    "layer4.1",
)
IMAGE_SIZE = 32
CHANNELS_LAST = torch.channels_last
BATCH = 256
TOLERANCE = 1e-5  # ours against the float64 reference
FORWARD_FACTOR = 1.1  # ours may take at most this times the forward passes alone
MEMORY_TOLERANCE = 0.10  # peak at 8,192 images within 10% of the peak at 2,048


class GeneratedBatches(Dataset):
    """Item ``i`` is a whole batch ``(images, labels)`` drawn from the seed ``(seed, i)``.

    Smooth images (8 x 8 noise upsampled, plus fine noise) so that the features are
    spatially correlated, as those of real images are. Nothing is kept in memory.
    """

    def __init__(
        self,
        n_images: int,
        batch: int = BATCH,
        size: int = IMAGE_SIZE,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.n_images, self.batch, self.size, self.seed = n_images, batch, size, seed
        self.device = torch.device(device)

    def __len__(self) -> int:
        return math.ceil(self.n_images / self.batch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        count = min(self.batch, self.n_images - index * self.batch)
        device = self.device
        generator = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + index)
        coarse = torch.randn(count, 3, 8, 8, generator=generator, device=device)
        images = F.interpolate(coarse, size=self.size, mode="bilinear", align_corners=False)
        fine = torch.randn(count, 3, self.size, self.size, generator=generator, device=device)
        labels = torch.randint(0, 10, (count,), generator=generator, device=device)
        return images + 0.25 * fine, labels

    def __repr__(self) -> str:
        return f"GeneratedBatches(n_images={self.n_images}, batch={self.batch})"


def make_loader(n_images: int, size: int = IMAGE_SIZE, device: str = "cpu") -> DataLoader:
    """Batches made where they are used (on a GPU: no host-to-device copy to time)."""
    dataset = GeneratedBatches(n_images, size=size, device=device)
    return DataLoader(dataset, batch_size=None, shuffle=False)


def make_models(device: str = "cpu") -> tuple[nn.Module, nn.Module]:
    from transferlens.models import build_model

    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(build_model("resnet18", 10).eval().to(device))
    return models[0], models[1]


# -- the float64 reference: the estimator written from its formula ------------------


def hsic1_matrix(grams: np.ndarray) -> np.ndarray:
    """``[T, T]`` unbiased HSIC_1 of every pair of ``[T, n, n]`` float64 Gram matrices.

    ``HSIC_1(K, L) = [tr(~K ~L) + (1'~K1)(1'~L1) / ((n-1)(n-2)) - 2/(n-2) 1'~K~L1]
    / (n (n-3))`` with ``~K`` = ``K`` with a zero diagonal (Song et al. 2012, eq. 5).
    """
    n = grams.shape[1]
    tilde = grams.copy()
    index = np.arange(n)
    tilde[:, index, index] = 0.0
    trace = np.einsum("aij,bij->ab", tilde, tilde)  # tr(~K ~L) for symmetric ~K, ~L
    row_sums = tilde.sum(axis=2)  # ~K 1
    totals = row_sums.sum(axis=1)  # 1' ~K 1
    middle = np.outer(totals, totals) / ((n - 1) * (n - 2))
    cross = row_sums @ row_sums.T  # 1' ~K ~L 1
    return (trace + middle - 2.0 / (n - 2) * cross) / (n * (n - 3))


class Hooks:
    """Plain forward hooks that keep the last output of each layer, removed on exit."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.model, self.layers, self.outputs = model, list(layers), {}
        self.handles: list = []

    def __enter__(self) -> Hooks:
        for layer in self.layers:
            module = self.model.get_submodule(layer)
            self.handles.append(module.register_forward_hook(self._store(layer)))
        return self

    def _store(self, layer: str):
        def hook(module, inputs, output):
            self.outputs[layer] = output.detach()

        return hook

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def features(self) -> list[torch.Tensor]:
        return [self.outputs[layer].flatten(1) for layer in self.layers]


def stream_features(model_a: nn.Module, model_b: nn.Module, loader: DataLoader):
    """Yield the 16 flattened float32 feature tensors (8 of a, then 8 of b) of each batch."""
    with Hooks(model_a, LAYERS) as hooks_a, Hooks(model_b, LAYERS) as hooks_b:
        for images, _ in loader:
            with torch.inference_mode():  # around the forwards only, not the consumer
                model_a(images)
                model_b(images)
            yield hooks_a.features() + hooks_b.features()


def cka_block(hsic_sum: np.ndarray) -> np.ndarray:
    """``[8, 8]`` CKA of a's layers (rows) against b's (columns) from a ``[16, 16]`` HSIC sum."""
    diagonal = np.diag(hsic_sum)
    cka = hsic_sum / np.sqrt(np.outer(diagonal, diagonal))
    size = len(LAYERS)
    return cka[:size, size:]


def numpy_float64(model_a: nn.Module, model_b: nn.Module, loader: DataLoader) -> np.ndarray:
    total = np.zeros((2 * len(LAYERS), 2 * len(LAYERS)))
    for features in stream_features(model_a, model_b, loader):
        matrices = [f.cpu().numpy().astype(np.float64) for f in features]
        total += hsic1_matrix(np.stack([x @ x.T for x in matrices]))
    return cka_block(total)


def torch_float64(model_a: nn.Module, model_b: nn.Module, loader: DataLoader) -> np.ndarray:
    """The same float64 evaluation with the Grams made by torch where the features are.

    On a GPU the float64 NumPy Grams of 224 px features would take minutes; the
    U-statistic itself still runs in NumPy, from the float64 Grams.
    """
    total = np.zeros((2 * len(LAYERS), 2 * len(LAYERS)))
    for features in stream_features(model_a, model_b, loader):
        grams = torch.stack([x.double() @ x.double().T for x in features])
        total += hsic1_matrix(grams.cpu().numpy())
    return cka_block(total)


# -- contenders -------------------------------------------------------------------------


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def forward_only(model_a: nn.Module, model_b: nn.Module, loader: DataLoader) -> None:
    device = device_of(model_a)
    with torch.inference_mode():
        for images, _ in loader:
            images = images.to(device)
            model_a(images)
            model_b(images)


def forward_channels_last(model_a: nn.Module, model_b: nn.Module, loader: DataLoader) -> None:
    """The forwards as ours runs them on a CPU: image batches in channels-last layout."""
    batches = ((images.contiguous(memory_format=CHANNELS_LAST), y) for images, y in loader)
    forward_only(model_a, model_b, batches)


def ours(model_a: nn.Module, model_b: nn.Module, loader: DataLoader) -> np.ndarray:
    from transferlens.analysis import cka_matrix

    result = cka_matrix(model_a, model_b, loader, list(LAYERS), list(LAYERS), n_bootstrap=0)
    return np.asarray(result.matrix)


def pytorch_cka(model_a: nn.Module, model_b: nn.Module, loader: DataLoader) -> np.ndarray:
    from cka import compute_cka

    # device given explicitly: without it pytorch-cka moves both models to CUDA if any.
    device = str(device_of(model_a))
    matrices = compute_cka(
        model_a, model_b, loader, layers=list(LAYERS), device=device, progress=False
    )
    return matrices[0].double().cpu().numpy()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence a peer's progress bars (torch imports tqdm before any setting) and warnings."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def torch_cka(model_a: nn.Module, model_b: nn.Module, loader: DataLoader) -> np.ndarray:
    from torch_cka import CKA

    with quiet():
        engine = CKA(
            model_a,
            model_b,
            model1_name="a",
            model2_name="b",
            model1_layers=list(LAYERS),
            model2_layers=list(LAYERS),
            device=str(device_of(model_a)),
        )
        engine.compare(loader, loader)
    # Its rows/columns follow the order its hooks fired in (its feature dicts), while
    # it labels them in named_modules() order: re-order by the hook order.
    rows = [list(engine.model1_features).index(layer) for layer in LAYERS]
    cols = [list(engine.model2_features).index(layer) for layer in LAYERS]
    return engine.hsic_matrix.double().cpu().numpy()[np.ix_(rows, cols)]


def ckatorch_model(model_a: nn.Module, model_b: nn.Module, loader: DataLoader) -> np.ndarray:
    from ckatorch import CKA

    with quiet():
        engine = CKA(model_a, model_b, layers=list(LAYERS), device=device_of(model_a))
        matrix = engine(loader, epochs=1, f_extract=lambda batch: {"x": batch[0]}, f_args={})
    return matrix.double().cpu().numpy()


def ckatorch_hsic1(model_a: nn.Module, model_b: nn.Module, loader: DataLoader) -> np.ndarray:
    """ckatorch's own batched ``hsic1`` (float64, as its ``cka_batch``), streamed by us."""
    from ckatorch import hsic1

    size = len(LAYERS)
    cross, self_a, self_b = 0.0, 0.0, 0.0
    for features in stream_features(model_a, model_b, loader):
        grams = torch.stack([x.double() @ x.double().T for x in features])
        grams_a, grams_b = grams[:size], grams[size:]
        pairs_a = grams_a.repeat_interleave(size, dim=0)
        pairs_b = grams_b.repeat(size, 1, 1)
        cross = cross + hsic1(pairs_a, pairs_b).reshape(size, size)
        self_a = self_a + hsic1(grams_a, grams_a)
        self_b = self_b + hsic1(grams_b, grams_b)
    return (cross / torch.sqrt(self_a[:, None] * self_b[None, :])).cpu().numpy()


CONTENDERS: dict[str, Callable] = {
    "forward only": forward_only,
    "forward only, channels-last": forward_channels_last,
    "ours": ours,
    "numpy float64": numpy_float64,
    "pytorch-cka 1.1.3": pytorch_cka,
    "torch-cka 0.21": torch_cka,
    "ckatorch 1.0.3 CKA": ckatorch_model,
    "ckatorch 1.0.3 hsic1": ckatorch_hsic1,
}
REFERENCE = "numpy float64"
# The floors: the plain forwards (the target), and the forwards in the layout ours uses.
FORWARDS = ("forward only", "forward only, channels-last")
# Peers that leave hooks behind get fresh copies of the models for every run.
NEEDS_COPIES = {"torch-cka 0.21", "ckatorch 1.0.3 CKA"}


def prepared(
    name: str,
    models: tuple[nn.Module, nn.Module],
    loader: DataLoader,
    contenders: Mapping[str, Callable] = CONTENDERS,
):
    """The untimed preparation of one run (fresh model copies where needed) -> the run."""

    def prepare() -> Callable[[], object]:
        model_a, model_b = models
        if name in NEEDS_COPIES:
            model_a, model_b = copy.deepcopy(model_a), copy.deepcopy(model_b)
        return lambda: contenders[name](model_a, model_b, loader)

    return prepare


def worker(name: str, n_images: int, threads: int) -> None:
    """One run of one contender in this fresh process: its time and peak memory."""
    torch.set_num_threads(threads)
    models, loader = make_models(), make_loader(n_images)
    run = prepared(name, models, loader)()
    try:
        report_worker_result(measure_run_memory(run))
    except Exception as error:
        report_worker_result({"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"})


def memory(name: str, n_images: int, threads: int) -> dict:
    return run_worker(
        Path(__file__), ["--contender", name, "--images", str(n_images), "--threads", str(threads)]
    )


def compare(sizes: Sequence[int], repeats: int, threads: int, measure_memory: bool = True):
    """Time every contender on each size (in this process) and return the comparisons."""
    torch.set_num_threads(threads)
    models = make_models()
    forward_only(*models, make_loader(BATCH))  # warm-up: first-call costs of the kernels
    comparisons: list[Comparison] = []
    peaks: dict[tuple[str, int], dict] = {}
    for index, n_images in enumerate(sizes):
        loader = make_loader(n_images)
        times = time_interleaved(
            {name: prepared(name, models, loader) for name in CONTENDERS},
            repeats if index == 0 else 1,
        )
        if measure_memory:
            for name in CONTENDERS:
                peaks[(name, n_images)] = memory(name, n_images, threads)
        comparisons += comparisons_for(n_images, times, peaks)
    if measure_memory and len(sizes) > 1:
        comparisons.append(memory_comparison(sizes[0], sizes[-1], peaks))
    return comparisons


def comparisons_for(
    n_images: int,
    times: dict[str, Timed],
    peaks: dict[tuple[str, int], dict],
    reference_name: str = REFERENCE,
) -> list[Comparison]:
    """One comparison per contender other than ours, at ``n_images`` images."""
    reference = times[reference_name].value
    mine = times["ours"]
    ours_diff = max_abs_diff(mine.value, reference)
    ours_peak = peaks.get(("ours", n_images), {})
    label = f"cka {n_images} images"
    lines = []
    for name, timed in times.items():
        if name == "ours":
            continue
        peak = peaks.get((name, n_images), {})
        common = {
            "ours_seconds": mine.median,
            "ours_cpu_seconds": mine.cpu_median,
            "peer_cpu_seconds": timed.cpu_median if timed.cpu_times else None,
            "best_ratio": timed.best / mine.best if timed.times else None,
            "diff": ours_diff,
            "ours_peak_mib": ours_peak.get("peak_mib"),
            "ours_extra_mib": ours_peak.get("extra_mib"),
            "peer_peak_mib": peak.get("peak_mib"),
            "peer_extra_mib": peak.get("extra_mib"),
        }
        if timed.error is not None:
            lines.append(
                Comparison(
                    label,
                    name,
                    peer_seconds=float("nan"),
                    target="faster",
                    met=None,
                    note=f"peer fails: {timed.error}",
                    **common,
                )
            )
            continue
        if name in FORWARDS:
            limit = FORWARD_FACTOR
            met = mine.median <= limit * timed.median and ours_diff <= TOLERANCE
            target = f"ours <= {limit}x forward & |diff| <= {TOLERANCE:g}"
            if name != "forward only":
                # What the CKA adds to its own forwards: shown, not the target.
                met, target = None, f"information (target is against {FORWARDS[0]!r})"
            lines.append(
                Comparison(
                    label,
                    name,
                    peer_seconds=timed.median,
                    ratio_label="forward/ours time",
                    target=target,
                    met=met,
                    **common,
                )
            )
            continue
        peer_diff = None if name == reference_name else max_abs_diff(timed.value, reference)
        met = timed.median > mine.median and ours_diff <= TOLERANCE
        lines.append(
            Comparison(
                label,
                name,
                peer_seconds=timed.median,
                peer_diff=peer_diff,
                target="faster & |diff| <= 1e-05",
                met=met,
                **common,
            )
        )
    return lines


def memory_comparison(small: int, large: int, peaks: dict) -> Comparison:
    """Ours at ``large`` images against ours at ``small``: is the peak independent of N?"""
    before, after = peaks.get(("ours", small), {}), peaks.get(("ours", large), {})
    peak_small, peak_large = (
        before.get("peak_mib", float("nan")),
        after.get("peak_mib", float("nan")),
    )
    ratio = peak_large / peak_small
    return Comparison(
        f"cka memory {large} vs {small}",
        f"ours at {small} images",
        ours_seconds=after.get("seconds", float("nan")),
        peer_seconds=before.get("seconds", float("nan")),
        ratio=ratio,
        ratio_label=f"peak {large}/{small}",
        ours_peak_mib=peak_large,
        ours_extra_mib=after.get("extra_mib"),
        peer_peak_mib=peak_small,
        peer_extra_mib=before.get("extra_mib"),
        target=f"peak within {MEMORY_TOLERANCE:.0%}",
        met=abs(ratio - 1.0) <= MEMORY_TOLERANCE,
    )


def run(quick: bool = False, threads: int = 2) -> list[Comparison]:
    sizes = (2048,) if quick else (2048, 8192)
    return compare(sizes, repeats=1 if quick else 3, threads=threads, measure_memory=not quick)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,048 images, one repeat, no memory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="numbers of images (default 2048 8192)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.contender, args.images, args.threads)
        return
    print(f"# cka: {machine_load()}, {args.threads} threads", flush=True)
    if args.sizes:
        comparisons = compare(args.sizes, args.repeats, args.threads, not args.no_memory)
    else:
        comparisons = run(args.quick, args.threads)
    print_lines(comparisons)


if __name__ == "__main__":
    sys.exit(main())

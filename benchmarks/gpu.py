"""The GPU benchmarks, as one prepared script (a few minutes on one H200).

Sections, each printed as it finishes and saved to ``$OUT/gpu_results.json`` (when
``$OUT`` is set; else ``--json``) after every section, so a cut-short run keeps what
it measured:

1. ``peak``: the bf16 FLOP/s of 8192^3 matmuls on this GPU (the measured ceiling).
2. ``train``: Fixup ResNet-50 at 224 px, bf16 autocast, channels_last, batch 256:
   (a) the bare training step on GPU-resident data, (b) our loop (``train()``) end to
   end on an in-memory uint8 data set. Images/s and the share of the GPU's peak bf16
   FLOP/s, both against the spec sheet (H200: 989 TFLOP/s dense) and the measured
   matmul ceiling. FLOPs per image are counted by ``torch.utils.flop_counter`` on a
   forward + backward pass (about 3 x the 4.1 GMAC forward).
3. ``torchrun``: a 1-GPU ``torch.distributed.run`` smoke test of ``transferlens train``.
4. ``cka``: bench_cka's comparison on the GPU: two ResNet-18s at 224 px, 8 layers,
   2,048 and 8,192 images, batch 256, against the same peers; the float64 reference
   builds its Grams with torch on the GPU. Peak memory: ``torch.cuda.max_memory_allocated``.
5. ``interpolation``: Fixup ResNet-50 at 224 px, 11 lambdas, ours against the authors'
   pattern on a JPEG folder read by 8 loader workers; TF32 off so both are IEEE fp32.

    PYTHONPATH=src python benchmarks/gpu.py [--only train cka] [--budget 230]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from common import (
    Comparison,
    Timed,
    add_peers_to_path,
    describe_error,
    max_abs_diff,
    time_interleaved,
)
from torch.nn import functional as F

add_peers_to_path()

SPEC_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense, spec sheets
SECTIONS = ("peak", "train", "torchrun", "cka", "interpolation")
# Rough seconds each section needs on an H200 (skipped when less budget is left).
NEEDS = {"peak": 5, "train": 60, "torchrun": 45, "cka": 60, "interpolation": 60}


@dataclass(frozen=True)
class Settings:
    """Sizes of every section; ``smoke()`` shrinks them to check the script on a CPU."""

    device: str = "cuda"
    matmul_size: int = 8192
    train_px: int = 224
    train_batch: int = 256
    train_steps: int = 30
    loop_images: int = 5120
    cka_px: int = 224
    cka_sizes: tuple[int, ...] = (2048, 8192)
    interp_px: int = 224
    interp_per_class: int = 100
    interp_model: tuple[str, dict] = ("fixup_resnet50", {})
    interp_batch: int = 250
    workers: int = 8

    @classmethod
    def smoke(cls, device: str) -> Settings:
        return cls(
            device=device,
            matmul_size=512,
            train_px=64,
            train_batch=8,
            train_steps=2,
            loop_images=32,
            cka_px=32,
            cka_sizes=(256, 512),
            interp_px=64,
            interp_per_class=2,
            interp_model=("fixup_resnet10", {"width": 8}),
            interp_batch=10,
            workers=0,
        )


SETTINGS = Settings()


def sync() -> None:
    if SETTINGS.device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak_memory() -> int:
    """Reset the allocator's peak mark; the memory allocated now (0 on a CPU)."""
    if not SETTINGS.device.startswith("cuda"):
        return 0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak_memory(base: int) -> dict:
    if not SETTINGS.device.startswith("cuda"):
        return {}
    peak = torch.cuda.max_memory_allocated()
    return {"peak_mib": peak / 2**20, "extra_mib": (peak - base) / 2**20}


def timed_cuda(run: Callable[[], object]) -> Callable[[], object]:
    """``run`` followed by a device synchronisation, so that its time is the GPU's time."""

    def wrapped() -> object:
        value = run()
        sync()
        return value

    return wrapped


def device_name() -> str:
    if SETTINGS.device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"cpu ({os.cpu_count()} cores)"


def spec_peak_tflops() -> tuple[float | None, str]:
    name = device_name()
    for key, value in SPEC_BF16_TFLOPS.items():
        if key in name:
            return value, name
    return None, name


# -- 1. peak -------------------------------------------------------------------------


def section_peak() -> dict:
    size, repeats = SETTINGS.matmul_size, 20
    a = torch.randn(size, size, device=SETTINGS.device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=SETTINGS.device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    measured = 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12
    spec, name = spec_peak_tflops()
    print(
        f"peak: {name}: bf16 matmul {size}^3 {measured:.0f} TFLOP/s measured; spec {spec} TFLOP/s"
    )
    return {"device": name, "measured_bf16_tflops": measured, "spec_bf16_tflops": spec}


# -- 2. train ------------------------------------------------------------------------


def training_flops_per_image(model: torch.nn.Module, size: int) -> float:
    """Forward + backward FLOPs of one image (torch's FLOP counter, batch of 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, 3, size, size, device=SETTINGS.device)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def bare_steps(model, size: int, batch: int, steps: int, warmup: int) -> float:
    """Images/s of forward + loss + backward + SGD step on data already on the GPU."""
    device = SETTINGS.device
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    images = torch.randn(batch, 3, size, size, device=device)
    images = images.to(memory_format=torch.channels_last)
    targets = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - start)


def register_random_data(n_images: int, size: int) -> str:
    """A data set of random uint8 images in memory, for our loop's own loader."""
    from transferlens.data import register_dataset
    from transferlens.data.spec import DataSplits
    from transferlens.data.tensor_dataset import TensorImageDataset

    name = "bench_random"

    @register_dataset(name)
    def build(spec) -> DataSplits:
        generator = torch.Generator().manual_seed(0)
        shape = (n_images, 3, size, size)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        targets = torch.randint(0, 1000, (n_images,), generator=generator)
        mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
        train = TensorImageDataset(images, targets, mean, std, num_classes=1000)
        test = TensorImageDataset(images[:256], targets[:256], mean, std, num_classes=1000)
        return DataSplits(
            train=train, test=test, num_classes=1000, task="multiclass", image_size=size
        )

    return name


def our_loop(n_images: int, size: int, batch: int) -> list[float]:
    """Images/s of each epoch of ``transferlens.train.train`` (bf16 autocast, channels_last)."""
    from transferlens.data import DataSpec
    from transferlens.train import TrainSpec, train

    spec = TrainSpec(
        model="fixup_resnet50",
        data=DataSpec(name=register_random_data(n_images, size)),
        epochs=3,
        batch_size=batch,
        lr=0.01,
        train_eval=False,
        device=SETTINGS.device,
        amp=True,
        channels_last=True,
        num_workers=min(6, SETTINGS.workers),
        checkpoint_every=100,
    )
    folder = Path(tempfile.mkdtemp(prefix="gpu-train-"))
    rates: list[float] = []
    try:
        train(
            spec,
            folder / "run",
            progress=False,
            on_epoch=lambda e, r: e and rates.append(r["images_per_second"]),
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rates


def section_train(peak: dict) -> dict:
    from transferlens.models import build_model

    settings = SETTINGS
    torch.backends.cudnn.benchmark = True
    model = build_model("fixup_resnet50", 1000).to(settings.device)
    flops = training_flops_per_image(model, settings.train_px)
    model = model.to(memory_format=torch.channels_last).train()
    bare = bare_steps(model, settings.train_px, settings.train_batch, settings.train_steps, 10)
    del model
    reset_peak_memory()
    try:
        loop_rates = our_loop(settings.loop_images, settings.train_px, settings.train_batch)
        loop = max(loop_rates[1:] or loop_rates)
        loop_error = None
    except Exception as error:
        loop, loop_rates, loop_error = float("nan"), [], describe_error(error)
    result = {"flops_per_image": flops, "bare_images_per_second": bare}
    result.update(loop_images_per_second=loop, loop_epochs=loop_rates, loop_error=loop_error)
    for label, rate in (("bare step", bare), ("our loop", loop)):
        achieved = rate * flops / 1e12
        spec, measured = peak.get("spec_bf16_tflops"), peak.get("measured_bf16_tflops")
        shares = []
        if spec:
            shares.append(f"{achieved / spec:.1%} of spec {spec:.0f}")
        if measured:
            shares.append(f"{achieved / measured:.1%} of measured {measured:.0f}")
        print(
            f"train fixup_resnet50 {settings.train_px}px bf16 channels_last batch"
            f" {settings.train_batch} | {label}: {rate:.0f} img/s"
            f" | {flops / 1e9:.1f} GFLOP/img (fwd+bwd) -> {achieved:.0f} TFLOP/s"
            f" = {', '.join(shares) or 'no peak known'}"
        )
        result[f"{label.replace(' ', '_')}_tflops"] = achieved
    print(
        f"train our loop / bare step throughput: {loop / bare:.2f}"
        + (f" ({loop_error})" if loop_error else "")
    )
    return result


# -- 3. torchrun ---------------------------------------------------------------------


def section_torchrun() -> dict:
    folder = Path(tempfile.mkdtemp(prefix="gpu-torchrun-"))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
        "-m", "transferlens.cli", "train", "--model", "fixup_resnet10", "--data", "synthetic",
        "--domain", "real", "--train-size", "512", "--test-size", "128", "--epochs", "1",
        "--lr", "0.05", "--batch-size", "128", "--device", SETTINGS.device, "--no-progress",
        "--out", str(folder / "run"),
    ]  # fmt: skip
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=150, check=False)
        complete = (folder / "run" / "complete.json").is_file()
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        result = {"returncode": done.returncode, "complete": complete, "tail": tail}
    except subprocess.TimeoutExpired:
        result = {"returncode": None, "complete": False, "tail": ["timed out after 150 s"]}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["seconds"] = time.perf_counter() - start
    ok = result["returncode"] == 0 and result["complete"]
    print(f"torchrun 1 GPU smoke test: {'ok' if ok else 'FAILED'} in {result['seconds']:.0f}s")
    if not ok:
        print("  " + "\n  ".join(result["tail"]))
    result["ok"] = ok
    return result


# -- 4. cka --------------------------------------------------------------------------


def section_cka() -> dict:
    import bench_cka

    device, size, sizes = SETTINGS.device, SETTINGS.cka_px, SETTINGS.cka_sizes
    contenders = dict(bench_cka.CONTENDERS)
    del contenders["numpy float64"]
    contenders["torch float64 reference"] = bench_cka.torch_float64
    models = bench_cka.make_models(device)
    bench_cka.forward_only(*models, bench_cka.make_loader(256, size, device))  # warm-up
    comparisons, peaks = [], {}
    for index, n_images in enumerate(sizes):
        loader = bench_cka.make_loader(n_images, size, device)
        runners = {}
        for name in contenders:
            prepare = bench_cka.prepared(name, models, loader, contenders)
            runners[name] = lambda prepare=prepare: timed_cuda(prepare())
        times = time_interleaved(runners, 3 if index == 0 else 1)
        for name in contenders:  # one more run each for its peak memory
            if times[name].error:
                continue
            run = runners[name]()
            base = reset_peak_memory()
            seconds = time.perf_counter()
            run()
            peaks[(name, n_images)] = {
                **peak_memory(base),
                "seconds": time.perf_counter() - seconds,
            }
        lines = bench_cka.comparisons_for(n_images, times, peaks, "torch float64 reference")
        for line in lines:
            line.name = f"{device} {line.name} {size}px"
            print(line.line(), flush=True)
        comparisons += lines
    if len(sizes) > 1:
        line = bench_cka.memory_comparison(sizes[0], sizes[-1], peaks)
        line.name = f"{device} {line.name}"
        print(line.line(), flush=True)
        comparisons.append(line)
    return {"comparisons": [c.as_dict() for c in comparisons]}


# -- 5. interpolation ----------------------------------------------------------------


def section_interpolation() -> dict:
    import bench_interpolation as interp

    settings = SETTINGS
    per_class = settings.interp_per_class
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False  # IEEE fp32 on both sides: values to 1e-6
    torch.backends.cuda.matmul.allow_tf32 = False
    folder = Path(tempfile.mkdtemp(prefix="gpu-interp-"))
    try:
        stored = round(settings.interp_px * 256 / 224)
        root = interp.write_jpeg_folder(folder / "test", per_class, stored_px=stored)
        loader = interp.make_loader(
            root, settings.interp_px, settings.interp_batch, workers=settings.workers
        )
        models = interp.make_models(settings.interp_model, device=settings.device)
        decode, forward = interp.decode_and_forward_seconds(models, loader)
        runners = {
            name: (lambda f=f: timed_cuda(lambda: f(*models, loader)))
            for name, f in interp.CONTENDERS.items()
        }
        times: dict[str, Timed] = time_interleaved(runners, 2)
        peaks = {}
        for name in interp.CONTENDERS:
            base = reset_peak_memory()
            runners[name]()()
            peaks[name] = peak_memory(base)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    mine, peer = times["ours"], times["authors' pattern"]
    for timed in (mine, peer):
        if timed.error:
            raise RuntimeError(timed.error)
    diff = max(
        max_abs_diff(mine.value[:, 1:], peer.value[:, 1:]),
        max_abs_diff(interp.barriers(mine.value), interp.barriers(peer.value)),
    )
    ratio = peer.median / mine.median
    model_name = settings.interp_model[0]
    line = Comparison(
        f"{settings.device} interpolation 11 lambdas {per_class * interp.CLASSES} JPEGs",
        "authors' pattern",
        ours_seconds=mine.median,
        peer_seconds=peer.median,
        best_ratio=peer.best / mine.best,
        diff=diff,
        ours_peak_mib=peaks["ours"].get("peak_mib"),
        ours_extra_mib=peaks["ours"].get("extra_mib"),
        peer_peak_mib=peaks["authors' pattern"].get("peak_mib"),
        peer_extra_mib=peaks["authors' pattern"].get("extra_mib"),
        target=f">= {interp.SPEEDUP:g}x & |diff| <= {interp.TOLERANCE:g}",
        met=ratio >= interp.SPEEDUP and diff <= interp.TOLERANCE,
        note=(
            f"{model_name} {settings.interp_px}px fp32, {settings.workers} workers;"
            f" D {decode:.2f}s F {forward:.2f}s per pass"
        ),
    )
    print(line.line(), flush=True)
    return {"comparison": line.as_dict(), "decode_seconds": decode, "forward_seconds": forward}


# -- driver --------------------------------------------------------------------------


def save(results: dict, path: Path | None) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=True, default=str)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text + "\n", encoding="utf-8")
    os.replace(temporary, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--budget", type=float, default=230.0, help="seconds for all sections")
    parser.add_argument("--json", type=Path, help="results file (default: $OUT/gpu_results.json)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, on the CPU if there is no GPU: checks the script",
    )
    args = parser.parse_args(argv)
    global SETTINGS
    if args.smoke:
        SETTINGS = Settings.smoke("cuda" if torch.cuda.is_available() else "cpu")
    elif not torch.cuda.is_available():
        print("gpu.py: no CUDA device here; nothing measured (--smoke checks the script on a CPU)")
        return 1
    started = time.perf_counter()
    out = args.json or (
        Path(os.environ["OUT"]) / "gpu_results.json" if "OUT" in os.environ else None
    )
    results: dict = {"torch": torch.__version__, "python": sys.version.split()[0], "sections": {}}
    print(f"# gpu.py: torch {torch.__version__} on {device_name()}", flush=True)
    peak: dict = {}
    for section in args.only or SECTIONS:
        left = args.budget - (time.perf_counter() - started)
        if left < NEEDS[section]:
            print(f"{section}: SKIPPED ({left:.0f}s of the budget left, needs ~{NEEDS[section]}s)")
            results["sections"][section] = {"skipped": True}
            continue
        section_start = time.perf_counter()
        try:
            if section == "peak":
                peak = value = section_peak()
            elif section == "train":
                value = section_train(peak)
            elif section == "torchrun":
                value = section_torchrun()
            elif section == "cka":
                value = section_cka()
            else:
                value = section_interpolation()
        except Exception as error:  # report and go on with the next section
            value = {"error": describe_error(error)}
            print(f"{section}: FAILED {describe_error(error)}", flush=True)
        value["section_seconds"] = time.perf_counter() - section_start
        results["sections"][section] = value
        save(results, out)
        reset_peak_memory()
    print(
        f"# gpu.py: done in {time.perf_counter() - started:.0f}s"
        + (f"; results in {out}" if out else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

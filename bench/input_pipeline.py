"""Input-pipeline benchmark of the full training mode (``student.mode: full``).

Measures images/s of full-mode TRAINING steps (forward + backward + AdamW, EfficientNet-Lite0,
bf16 autocast where the CPU supports it, channels-last, RandomResizedCrop 224 + flip) with

(a) ``cache``: the decoded-image cache (:mod:`leaf.student.image_cache`, short side 256) and
    the full mode's own input code (:class:`leaf.student.finetune_inputs.CachedInputs`);
(b) ``naive``: a loader that decodes the original files every epoch (PIL open + RGB + the same
    crop from the decoded original, torchvision on PIL);
(c) ``model``: the training step alone on one preloaded batch (the upper bound).

on ~200 AGIQA-3K images (512 x 512) and on a few generated SPAQ-like 4000 x 3000 JPEGs (the
decisive case). Also reports the input pipeline alone (no model) and the one-off cache build.

    python bench/input_pipeline.py --images /work/shared/datasets/agiqa3k/images \\
        --out bench/input_pipeline.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from leaf.student.backbones import create_backbone, preprocess_config
from leaf.student.finetune import on_device, optimise_step
from leaf.student.finetune_inputs import CROP_RATIO, CROP_SCALE, CachedInputs
from leaf.student.finetune_model import FullStudent
from leaf.student.heads import QualityHead
from leaf.student.image_cache import ImageCache, build_image_cache
from leaf.student.losses import point_loss
from leaf.student.precision import Precision, choose_precision
from leaf.torch_compat import ensure_torchvision_importable

BACKBONE = "tf_efficientnet_lite0"


class NaiveLoader:
    """Decode the original file every time, then the same training crop (PIL + torchvision)."""

    def __init__(self, paths: list[str], crop: int, mean, std):
        ensure_torchvision_importable()
        from torchvision import transforms

        self.paths = paths
        self.transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(crop, scale=CROP_SCALE, ratio=CROP_RATIO),
                transforms.RandomHorizontalFlip(),
                transforms.PILToTensor(),
            ]
        )
        self._mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(std).view(1, 3, 1, 1) * 255

    def batch(self, rows: np.ndarray, generator=None) -> torch.Tensor:
        crops = []
        for row in rows:
            with Image.open(self.paths[int(row)]) as image:
                crops.append(self.transform(image.convert("RGB")))
        return torch.stack(crops)

    def to_model(self, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
        batch = (batch.to(device).float() - self._mean) / self._std
        return batch.contiguous(memory_format=torch.channels_last)


def timed_rate(step: Callable[[], int], steps: int) -> float:
    """Images/s of ``steps`` calls of ``step`` (each returns the images it did)."""
    done, start = 0, time.perf_counter()
    for _ in range(steps):
        done += step()
    return done / (time.perf_counter() - start)


def training_rates(
    loaders: dict[str, object],
    n_images: int,
    batch_size: int,
    rounds: int,
    steps: int,
    precision: Precision,
) -> dict[str, tuple[float, float]]:
    """(median, best) images/s over ``rounds`` of every pipeline: training steps fed by each
    loader, the model alone on a preloaded batch, and each loader alone (no model).

    The pipelines are measured interleaved, ``steps`` steps each per round, so that the load of
    a shared machine hits all of them alike; one warm-up step each first.
    """
    backbone = create_backbone(BACKBONE, "package")
    model = FullStudent(backbone, QualityHead(int(backbone.num_features))).train()
    any_loader = next(iter(loaders.values()))
    model = on_device(model, any_loader, precision.device)  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = precision.scaler()
    target = torch.randn(batch_size)
    generator = torch.Generator().manual_seed(0)
    cursor = {"at": 0}

    def rows() -> np.ndarray:
        start = cursor["at"]
        cursor["at"] = (start + batch_size) % n_images
        return np.arange(start, start + batch_size) % n_images

    def train_on(batch: torch.Tensor) -> int:
        optimise_step(
            model, optimizer, scaler, precision, batch, lambda out: point_loss(out, target)
        )
        return len(batch)

    fixed = any_loader.to_model(any_loader.batch(rows(), generator), precision.device)  # type: ignore[attr-defined]
    pipelines: dict[str, Callable[[], int]] = {
        "model only (preloaded batch)": lambda: train_on(fixed)
    }
    for name, loader in loaders.items():
        pipelines[f"{name}: training"] = lambda loader=loader: train_on(
            loader.to_model(loader.batch(rows(), generator), precision.device)
        )
        pipelines[f"{name}: input only (no model)"] = lambda loader=loader: len(
            loader.batch(rows(), generator)
        )
    samples: dict[str, list[float]] = {name: [] for name in pipelines}
    for step in pipelines.values():
        step()  # warm-up
    for _ in range(rounds):
        for name, step in pipelines.items():
            samples[name].append(timed_rate(step, steps))
    return {name: (float(np.median(v)), float(np.max(v))) for name, v in samples.items()}


def spaq_like(folder: Path, sources: list[str], count: int) -> list[str]:
    """``count`` 4000 x 3000 JPEGs (quality 95) made from upscaled ``sources`` plus noise, so
    that they decode like camera photos."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        with Image.open(sources[index % len(sources)]) as image:
            big = np.asarray(image.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC))
        noisy = np.clip(big + rng.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
        path = folder / f"spaq_like_{index:02d}.jpg"
        Image.fromarray(noisy).save(path, quality=95)
        paths.append(str(path))
    return paths


def run_case(
    name: str,
    paths: list[str],
    folder: Path,
    batch_size: int,
    rounds: int,
    steps: int,
    precision: Precision,
    threads: int,
) -> tuple[dict[str, tuple[float, float]], float]:
    """Build the cache of ``paths`` (timed), then measure every loader."""
    start = time.perf_counter()
    build_image_cache(
        paths,
        [Path(p).name for p in paths],
        folder / f"{name}.npy",
        folder / f"{name}.parquet",
        256,
        threads,
    )
    build_rate = len(paths) / (time.perf_counter() - start)
    data_config = preprocess_config(create_backbone(BACKBONE, "package"))
    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    cache = ImageCache.open(folder / f"{name}.npy", folder / f"{name}.parquet")
    loaders = {
        "cache": CachedInputs(cache, 224, 256, mean, std, channels_last=True),
        "naive": NaiveLoader(paths, 224, mean, std),
    }
    return training_rates(loaders, len(paths), batch_size, rounds, steps, precision), build_rate


def input_rate(results: dict[str, tuple[float, float]], loader: str) -> float:
    """Median images/s of ``loader`` without the model."""
    return results[f"{loader}: input only (no model)"][0]


def report(cases: dict[str, tuple[dict[str, float], float, int]], args, precision) -> str:
    """The Markdown report."""
    lines = [
        "# Full-mode input pipeline: decoded-image cache vs naive decoding",
        "",
        f"Measured {datetime.date.today().isoformat()} with `python bench/input_pipeline.py` "
        f"on {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}, autocast {precision.dtype or 'off (fp32)'} on "
        f"{precision.device}; {BACKBONE} (packaged weights), batch {args.batch_size}, "
        "RandomResizedCrop 224 + flip, channels-last, AdamW. The pipelines are measured "
        f"interleaved ({args.rounds} rounds of {args.steps} steps each, after one warm-up step) "
        "and reported as median and best round. The machine is a SHARED 2-core VM (other jobs "
        "were running), so single rounds are noisy; the ratios use the medians. GPU: not "
        "measured (no GPU in this session).",
        "",
    ]
    for name, (results, build_rate, count) in cases.items():
        model = results["model only (preloaded batch)"][0]
        cache, naive = results["cache: training"][0], results["naive: training"][0]
        lines += [
            f"## {name} ({count} images)",
            "",
            f"One-off cache build (decode + resize to short side 256, {args.threads} threads): "
            f"{build_rate:.1f} images/s.",
            "",
            "| pipeline | images/s (median) | images/s (best round) |",
            "|---|---:|---:|",
            *[f"| {key} | {mid:.1f} | {best:.1f} |" for key, (mid, best) in results.items()],
            "",
            f"Cache training = {100 * cache / model:.0f} % of the model-only rate (goal >= 80 %: "
            f"{'met' if cache >= 0.8 * model else 'MISSED'}); cache / naive = "
            f"{cache / naive:.1f}x (goal >= 2x: {'met' if cache >= 2 * naive else 'MISSED'}).",
            "Input pipeline alone (the ceiling of a GPU trainer fed by one loader process): "
            f"cache / naive = {input_rate(results, 'cache') / input_rate(results, 'naive'):.1f}x.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="/work/shared/datasets/agiqa3k/images")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--spaq-count", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/input_pipeline.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precision = choose_precision(amp=True, device="cpu")
    sources = sorted(str(p) for p in Path(args.images).iterdir())[: args.count]
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        folder = Path(tmp)
        cases = {}
        results, build_rate = run_case(
            "agiqa3k",
            sources,
            folder,
            args.batch_size,
            args.rounds,
            args.steps,
            precision,
            args.threads,
        )
        cases["AGIQA-3K, 512 x 512"] = (results, build_rate, len(sources))
        print(cases)
        big = spaq_like(folder, sources, args.spaq_count)
        results, build_rate = run_case(
            "spaq_like",
            big,
            folder,
            args.batch_size,
            args.rounds,
            args.steps,
            precision,
            args.threads,
        )
        cases["SPAQ-like, 4000 x 3000 JPEG"] = (results, build_rate, len(big))
    text = report(cases, args, precision)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

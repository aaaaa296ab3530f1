"""CPU throughput of the vLLM teacher: one batched ``llm.generate`` over N images vs one per image.

Runs the real :class:`leaf.teacher.vllm_backend.VllmTeacher` (in-process engine) on the tiny
random-weights Qwen2-VL of the tests (tests/tiny_vlm.py), so it needs no download and no GPU:

    source .venv/bin/activate
    python bench/teacher_throughput.py --images 64 --repeats 3

Both modes use the same engine and prompt and include image decoding and output parsing;
"batched" is ``point_logliks(paths)`` (one engine call), "per image" is ``point_logliks([path])``
for every path (N engine calls). Each mode is timed ``--repeats`` times (interleaved), each time
on N fresh images, after a warm-up; the best run of each mode gives the speed-up. Results go to
bench/teacher_throughput.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402

from leaf.machine import machine_description  # noqa: E402
from leaf.teacher.levels import Levels  # noqa: E402

LEVELS = Levels(("Excellent", "Good", "Fair", "Poor", "Bad"), (5.0, 4.0, 3.0, 2.0, 1.0))


def make_images(folder: Path, count: int, size: int, seed: int) -> list[str]:
    """``count`` distinct noisy gradient PNGs of ``size`` x ``size`` pixels (new names per seed)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        ramp = np.linspace(0, 255, size)[None, :, None] * rng.uniform(0.2, 1.0, size=(1, 1, 3))
        noise = rng.normal(0, rng.uniform(5, 60), size=(size, size, 3))
        path = folder / f"bench{seed:02d}_{index:04d}.png"
        Image.fromarray(np.clip(ramp + noise, 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def seconds(run: Callable[[list[str]], object], paths: list[str]) -> float:
    """Wall-clock seconds of one ``run(paths)``."""
    start = time.perf_counter()
    run(paths)
    return time.perf_counter() - start


def run_benchmark(n_images: int, repeats: int, image_size: int) -> dict:
    """Time both modes; return the numbers and the settings."""
    import vllm
    from tiny_vlm import build_tiny_qwen2_vl

    from leaf.teacher.vllm_backend import VllmTeacher

    work = Path(tempfile.mkdtemp(prefix="leaf_bench_"))
    model = build_tiny_qwen2_vl(work / "tiny_qwen2_vl")
    # Every timed run sees images the engine has never seen: vLLM's prefix and multimodal
    # processor caches would otherwise skip most of the work, which a teacher run never repeats.
    image_sets = [make_images(work, n_images, image_size, seed) for seed in range(1 + 2 * repeats)]
    warmup, batched_sets, single_sets = image_sets[0], image_sets[1::2], image_sets[2::2]
    engine = {
        "dtype": "float32",
        "enforce_eager": True,
        "kv_cache_memory_bytes": 256 << 20,
        "max_model_len": 1024,
        "max_num_seqs": n_images,
        "batch_size": n_images,
        "distributed_executor_backend": "uni",
    }
    teacher = VllmTeacher(LEVELS, model=model, **engine)
    calls: list[int] = []
    generate = teacher._generate

    def counting_generate(requests, params):
        calls.append(len(requests))
        return generate(requests, params)

    teacher._generate = counting_generate  # type: ignore[method-assign]

    def batched(paths: list[str]) -> np.ndarray:
        return teacher.point_logliks(paths)

    def per_image(paths: list[str]) -> np.ndarray:
        return np.vstack([teacher.point_logliks([path]) for path in paths])

    load_before = os.getloadavg()
    max_diff = float(np.abs(batched(warmup) - per_image(warmup)).max())  # warm-up, agreement
    # Interleaved, so that both modes see the same (shared-machine) conditions.
    batched_s, single_s, batched_calls, single_calls = [], [], 0, 0
    for batched_paths, single_paths in zip(batched_sets, single_sets, strict=True):
        calls.clear()
        batched_s.append(seconds(batched, batched_paths))
        batched_calls = len(calls)
        calls.clear()
        single_s.append(seconds(per_image, single_paths))
        single_calls = len(calls)
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "versions": f"vllm {vllm.__version__}, python {platform.python_version()}",
        "n_images": n_images,
        "image_size": image_size,
        "repeats": repeats,
        "engine": engine,
        "batched": (batched_calls, batched_s),
        "per_image": (single_calls, single_s),
        "max_abs_diff": max_diff,
    }


def to_markdown(result: dict) -> str:
    n = result["n_images"]
    rows = []
    medians = {}
    for mode, label in (
        ("batched", f"batched (`point_logliks(all {n})`)"),
        ("per_image", "one call per image"),
    ):
        calls, times = result[mode]
        medians[mode] = statistics.median(times)
        rows.append(
            f"| {label} | {calls} | {medians[mode]:.3f} | {min(times):.3f} | "
            f"{n / medians[mode]:.1f} | {n / min(times):.1f} |"
        )
    best_speedup = min(result["per_image"][1]) / min(result["batched"][1])
    paired = statistics.median(
        single / batched
        for batched, single in zip(result["batched"][1], result["per_image"][1], strict=True)
    )
    table = "\n".join(rows)
    verdict = "met" if best_speedup >= 5 else "not met on this CPU tiny model, see below"
    load = ", ".join(f"{value:.2f}" for value in result["load_before"])
    load_after = ", ".join(f"{value:.2f}" for value in result["load_after"])
    engine = ", ".join(f"{key}={value}" for key, value in result["engine"].items())
    return f"""# Teacher throughput: batched vLLM vs one call per image (CPU, tiny model)

Produced by `python bench/teacher_throughput.py --images {n} --repeats {result["repeats"]} \\
--image-size {result["image_size"]}`.

- Date: {result["date"]}
- Machine: {result["machine"]}
- Load average (1/5/15 min) before: {load}; after: {load_after} (the machine is shared, so
  absolute numbers are noisy; both modes ran back to back on the same engine)
- Software: {result["versions"]}
- Model: tiny random-weights Qwen2-VL from tests/tiny_vlm.py (hidden 128, 2 layers, one vision
  block), float32, in-process engine (`VLLM_ENABLE_V1_MULTIPROCESSING=0`)
- Engine: {engine}
- Workload: point prompt, {n} distinct {result["image_size"]}x{result["image_size"]} PNG images
  per run, {result["repeats"]} timed runs per mode (interleaved) after one warm-up; every timed run
  uses images the engine has not seen (no prefix/processor cache hits); image decoding and
  output parsing included in both modes

| mode | engine calls | median s | best s | images/s (median) | images/s (best) |
|---|---:|---:|---:|---:|---:|
{table}

**Speed-up of batching: {best_speedup:.1f}x** (best run of each mode; median of the per-repeat
ratios: {paired:.1f}x); goal: at least 5x ({verdict}). Best runs are the least disturbed by other
processes on this shared machine; medians and ratios are noisier. All timed runs (s), in order,
the modes interleaved: batched {_fmt(result["batched"][1])}; per image
{_fmt(result["per_image"][1])}.
Largest |difference| between the two modes' log-likelihoods: {result["max_abs_diff"]:.2e}.

## Why the CPU speed-up is bounded

Batching removes the fixed cost of an engine call (scheduling, one forward step, output
handling: a few ms each on this CPU), but not the per-image work done before the engine runs:
vLLM's offline `LLM` runs the model's HF processor (tokenisation, resize, normalisation, patching)
once per request, serially, on one thread. With a model this tiny that preprocessing is most of
the batched time (in a cProfile of one 64-image batched call on this machine, about 80% of the
call was request rendering and multimodal preprocessing, under 20% the engine step), so the
ratio stays near (preprocessing + call overhead) / preprocessing. On a GPU with an 8B model,
where one image costs thousands of prompt tokens of prefill, the engine step dominates and
continuous batching is what keeps the GPU busy. See docs/teacher_gpu.md for the GPU recipe.
"""


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{value:.3f}" for value in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=56)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "teacher_throughput.md")
    args = parser.parse_args()
    result = run_benchmark(args.images, args.repeats, args.image_size)
    report = to_markdown(result)
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()

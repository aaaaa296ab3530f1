"""Position bias of the pair prompt, and what debiasing changes, on the tiny CPU test model.

Asks the real vLLM teacher (tiny random-weights Qwen2-VL of tests/tiny_vlm.py, in-process, CPU)
about N random pairs in both orders and compares the paper's single-order preferences with the
debiased ones (``leaf.teacher.levels.debiased_pair_logprobs``):

    source .venv/bin/activate
    python bench/pair_debias.py --pairs 64

Writes bench/pair_debias.md. A random-weights model has no notion of quality, so this measures
the mechanism (slot bias, order disagreement, how many pairs survive tau), not a real teacher.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
from teacher_throughput import LEVELS, make_images

from leaf.machine import machine_description
from leaf.teacher.levels import (
    debiased_pair_logprobs,
    order_disagreement,
    pair_confidence,
    pair_probability,
)

OUT = Path(__file__).with_suffix(".md")


def measure(n_pairs: int, image_size: int, tau: float, seed: int = 0) -> dict:
    from tiny_vlm import TINY_ENGINE, build_tiny_qwen2_vl

    from leaf.teacher.vllm_backend import VllmTeacher

    work = Path(tempfile.mkdtemp(prefix="leaf_debias_"))
    teacher = VllmTeacher(
        LEVELS, model=build_tiny_qwen2_vl(work / "model"), **TINY_ENGINE, batch_size=n_pairs
    )
    images = make_images(work, n_pairs, image_size, seed)
    rng = np.random.default_rng(seed)
    first = rng.permutation(n_pairs)
    second = (first + rng.integers(1, n_pairs, size=n_pairs)) % n_pairs
    paths_a, paths_b = [images[i] for i in first], [images[i] for i in second]
    forward = teacher.pair_logprobs(paths_a, paths_b)
    reverse = teacher.pair_logprobs(paths_b, paths_a)
    single = pair_probability(forward[:, 0], forward[:, 1])
    combined_logprobs, p_forward, p_reverse = debiased_pair_logprobs(forward, reverse)
    combined = pair_probability(combined_logprobs[:, 0], combined_logprobs[:, 1])
    p_first_reverse = pair_probability(reverse[:, 0], reverse[:, 1])
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "n_pairs": n_pairs,
        "tau": tau,
        "mean_p_first": float(np.concatenate([single, p_first_reverse]).mean()),
        "disagree": float(order_disagreement(p_forward, p_reverse).mean()),
        "t_ab_changed": float(((single >= 0.5) != (combined >= 0.5)).mean()),
        "omega_single": float(pair_confidence(single).mean()),
        "omega_debiased": float(pair_confidence(combined).mean()),
        "kept_single": float((pair_confidence(single) >= tau).mean()),
        "kept_debiased": float((pair_confidence(combined) >= tau).mean()),
    }


def render(result: dict) -> str:
    return f"""# Pair position bias and debiasing on the tiny CPU test model

Measured {result["date"]} on {result["machine"]} with `python bench/pair_debias.py`.
Model: the tiny **random-weights** Qwen2-VL of the tests (not a real teacher: it has no notion of
quality, so these numbers show the mechanism, not a teacher's accuracy). {result["n_pairs"]} random
pairs of generated images, each asked as (a, b) and as (b, a).

| measure | value |
|---|---:|
| mean P(first slot wins), over both orders | {result["mean_p_first"]:.3f} |
| pairs whose two orders pick different winners | {100 * result["disagree"]:.1f} % |
| pairs whose hard target t_ab changes with debiasing | {100 * result["t_ab_changed"]:.1f} % |
| mean ω, single order (the paper) | {result["omega_single"]:.3f} |
| mean ω, debiased | {result["omega_debiased"]:.3f} |
| pairs kept at τ = {result["tau"]}, single order | {100 * result["kept_single"]:.1f} % |
| pairs kept at τ = {result["tau"]}, debiased | {100 * result["kept_debiased"]:.1f} % |

A mean P(first) away from 0.5 is slot bias; every pair on which the orders disagree is a judgment
the single-order teacher would have given with confidence that came from the slot, not the
images. Debiasing costs one more teacher call per pair (`teacher.pairs.debias: true`).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=56)
    parser.add_argument("--tau", type=float, default=0.1)
    args = parser.parse_args()
    OUT.write_text(render(measure(args.pairs, args.image_size, args.tau)))
    print(OUT.read_text())


if __name__ == "__main__":
    main()

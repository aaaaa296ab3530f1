"""Uniformly random pairs of distinct train images for the teacher's pair-wise judgments."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from leaf.atomic_io import write_parquet_atomic

log = logging.getLogger(__name__)


def random_pairs(train_ids: list[str] | np.ndarray, per_image: float, seed: int) -> pd.DataFrame:
    """``round(per_image * n)`` pairs (image_a != image_b), each drawn uniformly; seeded.

    Columns: pair_id (0..m-1), image_a, image_b. The order inside a pair is random, so the
    first-shown image is the better one about half of the time.
    """
    ids = np.array(sorted(train_ids))
    if len(ids) < 2:
        raise ValueError(f"need at least 2 train images to draw pairs, got {len(ids)}")
    if per_image < 0:
        raise ValueError(f"pairs.per_image must be >= 0, got {per_image}")
    n_pairs = int(round(per_image * len(ids)))
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(ids), size=n_pairs)
    # Second index uniform over the other n-1 images: shift past the first one.
    offset = rng.integers(1, len(ids), size=n_pairs)
    second = (first + offset) % len(ids)
    return pd.DataFrame(
        {"pair_id": np.arange(n_pairs), "image_a": ids[first], "image_b": ids[second]}
    )


def train_pairs(split: pd.DataFrame, per_image: float, seed: int) -> pd.DataFrame:
    """:func:`random_pairs` over the train images of a split table (columns ``image_id``,
    ``split``; :func:`leaf.split.train_test_split`)."""
    train_ids = split.loc[split["split"] == "train", "image_id"].to_numpy()
    result = random_pairs(train_ids, per_image, seed)
    log.info("drew %d pairs over %d train images (seed %d)", len(result), len(train_ids), seed)
    return result


def pairs_step(split: str, pairs: str, per_image: float, seed: int) -> None:
    """Rule ``pairs``: split.parquet -> pairs.parquet."""
    write_parquet_atomic(train_pairs(pd.read_parquet(split), per_image, seed), Path(pairs))

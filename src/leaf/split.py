"""Deterministic train/test split and the nested MOS-visible subsets of the train images.

- :func:`train_test_split` draws the test split (default 20 %), optionally by groups
  (``group_by``: e.g. AGIQA-3K's ``prompt``; all images of a group land on the same side, so
  prompts never leak from train into test) or from an official split column (KonIQ-10k ``set``).
- :func:`mos_subsets` draws, per seed, the train images whose MOS is visible at each ratio. A
  single seeded permutation of the train images is cut at ``ceil(ratio * n_train)``, so the
  subsets of one seed are nested (10 % is a prefix of 30 %). Within every subset, every k-th
  image of that permutation (k = round(1 / holdout_fraction)) is held out as ``select`` for
  checkpoint selection; the rest is ``fit``. Because the roles come from the permutation rank,
  the held-out parts are nested too.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from leaf.atomic_io import write_parquet_atomic

log = logging.getLogger(__name__)
# The top-level `split` section applies to every dataset of the run, the demo's included.
PER_DATASET_HINT = (
    "; a top-level `split` applies to every dataset: set it under datasets.<name>.split"
)

#: Values of KonIQ-10k's ``set`` column that count as test when the official split is used.
OFFICIAL_TEST_VALUES = ("test",)


def train_test_split(
    manifest: pd.DataFrame,
    test_fraction: float,
    seed: int,
    group_by: str | None = None,
    official_column: str | None = None,
) -> pd.DataFrame:
    """Return a frame with columns image_id, split ('train'/'test'), in manifest order."""
    if official_column is not None:
        if official_column not in manifest.columns:
            raise KeyError(
                f"split.official_column={official_column!r} is not a manifest column "
                f"(columns: {list(manifest.columns)}){PER_DATASET_HINT}"
            )
        is_test = manifest[official_column].astype(str).str.lower().isin(OFFICIAL_TEST_VALUES)
        return pd.DataFrame(
            {"image_id": manifest["image_id"], "split": np.where(is_test, "test", "train")}
        )
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"split.test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    if group_by is None:
        units = manifest["image_id"].to_numpy()
    else:
        if group_by not in manifest.columns:
            raise KeyError(
                f"split.group_by={group_by!r} is not a manifest column "
                f"(columns: {list(manifest.columns)}){PER_DATASET_HINT}"
            )
        units = manifest[group_by].astype(str).to_numpy()
    unique_units = np.array(sorted(set(units)))
    order = rng.permutation(len(unique_units))
    n_test_units = max(1, int(round(test_fraction * len(unique_units))))
    test_units = set(unique_units[order[:n_test_units]])
    is_test = np.array([u in test_units for u in units])
    return pd.DataFrame(
        {"image_id": manifest["image_id"], "split": np.where(is_test, "test", "train")}
    )


def mos_subsets(
    train_ids: list[str] | np.ndarray,
    ratios: list[float],
    seed: int,
    holdout_fraction: float,
) -> pd.DataFrame:
    """The MOS-visible train images for each ratio > 0 (columns image_id, ratio, role)."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"calibration.holdout_fraction must be in (0, 1), got {holdout_fraction}")
    ids = np.array(sorted(train_ids))
    rng = np.random.default_rng(seed)
    ranked = ids[rng.permutation(len(ids))]
    every = max(2, int(round(1.0 / holdout_fraction)))
    rows = []
    for ratio in sorted({float(r) for r in ratios if r > 0}):
        n_visible = min(len(ranked), math.ceil(ratio * len(ranked)))
        for rank, image_id in enumerate(ranked[:n_visible]):
            role = "select" if rank % every == every - 1 else "fit"
            rows.append((image_id, ratio, role))
        n_select = sum(1 for r in rows if r[1] == ratio and r[2] == "select")
        log.info(
            "seed %d ratio %.3f: %d MOS-visible train images (%d held out for selection)",
            seed,
            ratio,
            n_visible,
            n_select,
        )
    return pd.DataFrame(rows, columns=["image_id", "ratio", "role"])


def split_step(
    manifest: str,
    split: str,
    test_fraction: float,
    seed: int,
    group_by: str | None,
    official_column: str | None,
) -> None:
    """Rule ``split``: manifest.parquet -> split.parquet."""
    frame = pd.read_parquet(manifest)
    result = train_test_split(frame, test_fraction, seed, group_by, official_column)
    counts = result["split"].value_counts().to_dict()
    log.info("split: %s (group_by=%s, official=%s)", counts, group_by, official_column)
    write_parquet_atomic(result, Path(split))


def subsets_step(
    split: str, subsets: str, ratios: list[float], seed: int, holdout_fraction: float
) -> None:
    """Rule ``subsets``: split.parquet -> subsets/seed{seed}.parquet."""
    frame = pd.read_parquet(split)
    train_ids = frame.loc[frame["split"] == "train", "image_id"].to_numpy()
    write_parquet_atomic(mos_subsets(train_ids, ratios, seed, holdout_fraction), Path(subsets))

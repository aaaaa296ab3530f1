"""The teacher cache: raw judgments plus derived columns, written once as Parquet and reused.

Two kinds of cache (full schema in docs/cache_schema.md):

- points: ``image_id``, ``loglik_<word>`` and ``p_<word>`` per level word (lowercased), ``score``;
- pairs: ``pair_id``, ``image_a``, ``image_b``, ``logprob_A``, ``logprob_B``, ``p_A``, ``t_ab``,
  ``omega``.

Derived columns are computed here, with :mod:`leaf.teacher.levels`, so that every backend yields
the same schema. The Parquet file-level metadata holds, under the key ``b"leaf"``, a JSON object:
the caller's provenance plus ``kind`` and ``created_at`` (and ``levels`` for points). Files are
written atomically (temporary file in the target directory, then :func:`os.replace`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from leaf.atomic_io import atomic_path
from leaf.teacher.backend import TeacherOutputError
from leaf.teacher.levels import (
    Levels,
    expected_score,
    level_probabilities,
    pair_confidence,
    pair_probability,
    pair_target,
)

log = logging.getLogger(__name__)

METADATA_KEY = b"leaf"
# Provenance key of a dict of per-run counts (e.g. degenerate images), summed when merging shards.
COUNTS_KEY = "counts"
POINTS_KIND = "points"
PAIRS_KIND = "pairs"
PAIR_COLUMNS = ("pair_id", "image_a", "image_b", "logprob_A", "logprob_B", "p_A", "t_ab", "omega")


def level_columns(levels: Levels, prefix: str) -> list[str]:
    """Column names ``<prefix>_<word>`` (word lowercased) for every level word, in order."""
    names = [f"{prefix}_{word.lower()}" for word in levels.words]
    if len(set(names)) != len(names):
        raise ValueError(f"level words must differ case-insensitively, got {levels.words}")
    return names


def _json_default(value: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-serialisable."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"provenance value of type {type(value).__name__} is not JSON-serialisable")


def levels_metadata(levels: Levels) -> dict:
    """The JSON form of the level words and values, as stored in the metadata."""
    return {"words": list(levels.words), "values": list(levels.values)}


def _cache_metadata(kind: str, provenance: dict, levels: Levels | None = None) -> dict:
    """Caller provenance merged with the keys the cache itself owns (which take precedence)."""
    metadata = {
        **provenance,
        "kind": kind,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if levels is not None:
        metadata["levels"] = levels_metadata(levels)
    return metadata


def _write_table(path: str | os.PathLike, frame: pd.DataFrame, metadata: dict) -> None:
    """Write ``frame`` with ``metadata`` under :data:`METADATA_KEY`, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    encoded = json.dumps(metadata, sort_keys=True, default=_json_default).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: encoded})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _check_unique(ids: Sequence[str], what: str) -> None:
    duplicated = pd.Index(ids)[pd.Index(ids).duplicated()]
    if len(duplicated):
        raise ValueError(f"duplicate {what}s in the teacher cache: {list(duplicated[:5])}")


def first_non_finite(values: np.ndarray) -> tuple[int, int, int] | None:
    """(row, column, count) of the first non-finite entry of a 2-D array and how many there
    are, or None when every entry is finite."""
    bad_rows, bad_cols = np.nonzero(~np.isfinite(values))
    if len(bad_rows) == 0:
        return None
    return int(bad_rows[0]), int(bad_cols[0]), len(bad_rows)


def write_points_cache(
    path: str | os.PathLike,
    image_ids: Sequence[str],
    logliks: np.ndarray,
    levels: Levels,
    provenance: dict,
) -> pd.DataFrame:
    """Validate per-image level log-likelihoods, derive p_<word> and score, write the cache.

    Raises :class:`TeacherOutputError` naming the image and level word of the first non-finite
    log-likelihood. Returns the written frame.
    """
    image_ids = [str(i) for i in image_ids]
    logliks = np.asarray(logliks, dtype=np.float64)
    if logliks.shape != (len(image_ids), len(levels.words)):
        raise ValueError(
            f"expected log-likelihoods of shape (n_images, n_levels) = "
            f"({len(image_ids)}, {len(levels.words)}), got {logliks.shape}"
        )
    _check_unique(image_ids, "image_id")
    if bad := first_non_finite(logliks):
        row, col, count = bad
        raise TeacherOutputError(
            f"non-finite log-likelihood {logliks[row, col]} for image {image_ids[row]!r}, level "
            f"word {levels.words[col]!r} ({count} non-finite values in total)"
        )
    probs = level_probabilities(logliks)
    frame = pd.DataFrame({"image_id": pd.Series(image_ids, dtype=str)})
    for name, column in zip(level_columns(levels, "loglik"), logliks.T, strict=True):
        frame[name] = column
    for name, column in zip(level_columns(levels, "p"), probs.T, strict=True):
        frame[name] = column
    frame["score"] = expected_score(probs, np.asarray(levels.values))
    _write_table(path, frame, _cache_metadata(POINTS_KIND, provenance, levels))
    return frame


def write_pairs_cache(
    path: str | os.PathLike,
    pair_ids: Sequence[str],
    image_a: Sequence[str],
    image_b: Sequence[str],
    logprobs: np.ndarray,
    provenance: dict,
    extra_columns: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Validate (n, 2) A/B answer log-probs, derive p_A, t_ab and omega, write the cache.

    ``extra_columns`` are appended as they are (e.g. the two orders of a debiased pair).

    ``pair_id`` keeps the caller's type (string or integer; string when empty); images are strings.

    Pass the level words in ``provenance["levels"]`` if wanted
    (see :func:`levels_metadata`). An empty cache (n = 0) is valid: a point-only teacher writes
    one.
    """
    pair_ids = list(pair_ids)
    image_a, image_b = [str(v) for v in image_a], [str(v) for v in image_b]
    if not len(pair_ids) == len(image_a) == len(image_b):
        raise ValueError("pair_ids, image_a and image_b must have the same length")
    logprobs = np.asarray(logprobs, dtype=np.float64)
    if len(pair_ids) == 0 and logprobs.size == 0:
        logprobs = logprobs.reshape(0, 2)
    if logprobs.shape != (len(pair_ids), 2):
        raise ValueError(
            f"expected A/B log-probs of shape ({len(pair_ids)}, 2), got {logprobs.shape}"
        )
    _check_unique(pair_ids, "pair_id")
    if bad := first_non_finite(logprobs):
        row, col, count = bad
        raise TeacherOutputError(
            f"non-finite log-prob {logprobs[row, col]} of answer {'AB'[col]!r} for pair "
            f"{pair_ids[row]!r} (images {image_a[row]!r}, {image_b[row]!r}; "
            f"{count} non-finite values in total)"
        )
    p_a = pair_probability(logprobs[:, 0], logprobs[:, 1])
    frame = pd.DataFrame(
        {
            "pair_id": pd.Series(pair_ids, dtype=None if pair_ids else str),
            "image_a": pd.Series(image_a, dtype=str),
            "image_b": pd.Series(image_b, dtype=str),
            "logprob_A": logprobs[:, 0],
            "logprob_B": logprobs[:, 1],
            "p_A": p_a,
            "t_ab": pair_target(p_a),
            "omega": pair_confidence(p_a),
            **(extra_columns or {}),
        }
    )
    _write_table(path, frame, _cache_metadata(PAIRS_KIND, provenance))
    return frame


def read_cache(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Read a teacher cache as (frame, metadata dict); ValueError if it has no LEAF metadata."""
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path} is not a LEAF teacher cache (no {METADATA_KEY!r} metadata)")
    return table.to_pandas(), json.loads(raw)


def _merged_metadata(metadatas: list[dict]) -> dict:
    """One metadata dict for shards: the :data:`COUNTS_KEY` dicts summed key by key, values
    shared by all shards kept, other values listed per shard under ``per_shard``; ``shard``
    dropped and a new ``created_at``."""
    merged: dict[str, Any] = {}
    per_shard: list[dict] = [{} for _ in metadatas]
    skipped = {"shard", "created_at", COUNTS_KEY}
    for key in sorted({key for metadata in metadatas for key in metadata} - skipped):
        values = [metadata.get(key) for metadata in metadatas]
        if all(value == values[0] for value in values):
            merged[key] = values[0]
        else:
            for shard_metadata, value in zip(per_shard, values, strict=True):
                shard_metadata[key] = value
    counts = [metadata.get(COUNTS_KEY, {}) for metadata in metadatas]
    if any(counts):
        names = sorted({name for shard_counts in counts for name in shard_counts})
        merged[COUNTS_KEY] = {name: sum(c.get(name, 0) for c in counts) for name in names}
    if any(per_shard):
        merged["per_shard"] = per_shard
    merged["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return merged


def merge_caches(
    shards: Sequence[str],
    merged: str,
    kind: str,
    expected: pd.DataFrame | None = None,
    expected_source: str = "the expected table",
) -> pd.DataFrame:
    """Concatenate shard caches of one ``kind`` (in shard order) into one cache.

    Checks that the shards are of that kind, come from one teacher (``teacher_hash``) and are
    exactly shards 0..n-1 of n (``shard``/``n_shards`` metadata, when present). With
    ``expected`` (points: column ``image_id``; pairs: ``pair_id``, ``image_a``, ``image_b``),
    the shards must hold exactly those rows in that order (a point-only teacher's empty pairs
    cache excepted): else ValueError naming ``expected_source``, and nothing is written.
    """
    read = [read_cache(path) for path in shards]
    metadatas = [metadata for _, metadata in read]
    for path, metadata in zip(shards, metadatas, strict=True):
        if metadata.get("kind") != kind:
            raise ValueError(f"{path}: expected a {kind} cache, got {metadata.get('kind')!r}")
    if len({metadata.get("teacher_hash") for metadata in metadatas}) > 1:
        raise ValueError(f"shards {list(shards)} come from different teachers (teacher_hash)")
    indices = [metadata.get("shard", 0) for metadata in metadatas]
    counts = {metadata.get("n_shards", 1) for metadata in metadatas}
    if counts != {len(shards)} or sorted(indices) != list(range(len(shards))):
        raise ValueError(
            f"expected shards 0..{len(shards) - 1} of {len(shards)}, got shard indices {indices} "
            f"and shard counts {sorted(counts)}"
        )
    order = np.argsort(indices)
    frame = pd.concat([read[i][0] for i in order], ignore_index=True)
    _check_unique(frame["image_id" if kind == POINTS_KIND else "pair_id"].tolist(), "id")
    metadata = _merged_metadata([metadatas[i] for i in order])
    if expected is not None and not metadata.get("point_only", False):
        _check_rows(frame, expected, kind, list(shards), expected_source)
    _write_table(merged, frame, metadata)
    return frame


def _check_rows(
    frame: pd.DataFrame, expected: pd.DataFrame, kind: str, shards: list, source: str
) -> None:
    """Raise unless ``frame`` holds the rows of ``expected`` (the key columns), in order."""
    columns = ["image_id"] if kind == POINTS_KIND else ["pair_id", "image_a", "image_b"]
    got = frame[columns].astype(str).reset_index(drop=True)
    want = expected[columns].astype(str).reset_index(drop=True)
    if got.equals(want):
        return
    n = min(len(got), len(want))
    same = (got.iloc[:n] == want.iloc[:n]).all(axis=1).to_numpy()
    first = int(same.argmin()) if not same.all() else n
    raise ValueError(
        f"the {kind} shards {shards} ({len(got)} rows) do not hold the rows of {source} "
        f"({len(want)} rows; first difference at row {first}): the shared teacher cache was "
        f"judged on other {'images' if kind == POINTS_KIND else 'pairs'}. Delete those shards "
        "and run again"
    )


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"the confidence threshold tau must lie in [0, 1], got {tau}")
    return tau


def filter_pairs(pairs_df: pd.DataFrame, tau: float) -> pd.DataFrame:
    """The pairs whose confidence omega is at least ``tau`` (index reset)."""
    tau = _check_tau(tau)
    return pairs_df.loc[pairs_df["omega"] >= tau].reset_index(drop=True)


def filter_pairs_step(pairs: str, kept: str, tau: float) -> None:
    """Snakemake step: keep the pairs with omega >= tau, extend the metadata with the counts."""
    frame, metadata = read_cache(pairs)
    kept_frame = filter_pairs(frame, tau)
    metadata = {**metadata, "tau": float(tau), "n_total": len(frame), "n_kept": len(kept_frame)}
    log.info("kept %d of %d pairs at tau=%g", len(kept_frame), len(frame), tau)
    _write_table(kept, kept_frame, metadata)

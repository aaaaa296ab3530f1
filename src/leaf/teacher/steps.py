"""Snakemake step functions of the teacher stages.

Rules ``teacher_point``/``teacher_pair`` judge one shard each (a contiguous block of the
manifest's images or of the pairs) and write a shard cache; ``merge_points``/``merge_pairs``
concatenate the shards. The cache schema is in docs/cache_schema.md.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from leaf.teacher.backend import TeacherBackend
from leaf.teacher.cache import (
    COUNTS_KEY,
    PAIRS_KIND,
    POINTS_KIND,
    levels_metadata,
    merge_caches,
    write_pairs_cache,
    write_points_cache,
)
from leaf.teacher.factory import make_backend, teacher_hash, teacher_identity
from leaf.teacher.levels import Levels, debiased_pair_logprobs, order_disagreement

log = logging.getLogger(__name__)

HASH_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_point_only(backend: TeacherBackend) -> bool:
    """Whether the backend has point-wise judgments only (e.g. an import)."""
    return bool(getattr(backend, "point_only", False))


def shard_rows(frame: pd.DataFrame, shard: int, n_shards: int) -> pd.DataFrame:
    """The ``shard``-th of ``n_shards`` contiguous, near-equal blocks of rows."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must lie in [0, {n_shards}), got {shard}")
    bounds = np.linspace(0, len(frame), n_shards + 1).round().astype(int)
    return frame.iloc[bounds[shard] : bounds[shard + 1]]


def _provenance(
    backend: TeacherBackend, teacher: dict, manifest: str, shard: int, n_shards: int
) -> dict:
    """Backend provenance (call it after judging) plus config identity, hashes, shard."""
    return {
        **backend.provenance(),
        "point_only": is_point_only(backend),
        "teacher_hash": teacher_hash(teacher),
        "teacher_config": teacher_identity(teacher),
        "manifest_sha256": file_sha256(manifest),
        "shard": shard,
        "n_shards": n_shards,
    }


def teacher_points_step(
    manifest: str,
    points: str,
    teacher: dict,
    shard: int = 0,
    n_shards: int = 1,
    source: str | None = None,
    speed: dict | None = None,
) -> None:
    """Judge the shard's manifest images and write a points cache.

    ``source`` is the imported judgments file (import backend): the rule declares it as an input
    so that a change of its content reruns the teacher; the backend reads it from ``teacher``.
    ``speed``: the backend's speed-only options (:func:`leaf.teacher.factory.speed_options`),
    which the rule's script reads from the config at run time, so that they rerun nothing.
    """
    images = shard_rows(pd.read_parquet(manifest, columns=["image_id", "path"]), shard, n_shards)
    backend = make_backend(teacher, speed)
    log.info("%s: judging %d images (shard %d of %d)", backend.name, len(images), shard, n_shards)
    logliks = backend.point_logliks(images["path"].tolist())
    levels = Levels.from_config(teacher["levels"])
    provenance = _provenance(backend, teacher, manifest, shard, n_shards)
    write_points_cache(points, images["image_id"].tolist(), logliks, levels, provenance)
    log.info("wrote %s", points)


def teacher_pairs_step(
    manifest: str,
    pairs: str,
    teacher_pairs: str,
    teacher: dict,
    shard: int = 0,
    n_shards: int = 1,
    source: str | None = None,
    speed: dict | None = None,
) -> None:
    """Ask the teacher about the shard's pairs and write a pairs cache (``source``, ``speed``:
    see above).

    A point-only backend writes an empty cache whose metadata says ``point_only: true``.
    """
    all_pairs = pd.read_parquet(pairs, columns=["pair_id", "image_a", "image_b"])
    pair_table = shard_rows(all_pairs, shard, n_shards)
    images = pd.read_parquet(manifest, columns=["image_id", "path"])
    backend = make_backend(teacher, speed)

    def provenance() -> dict:
        return {
            **_provenance(backend, teacher, manifest, shard, n_shards),
            "pairs_sha256": file_sha256(pairs),
            "levels": levels_metadata(Levels.from_config(teacher["levels"])),
        }

    if is_point_only(backend):
        log.warning(
            "teacher %s is point-only: writing an empty pairs cache (%d pairs requested); the "
            "student will be trained point-only",
            backend.name,
            len(pair_table),
        )
        empty: list[str] = []
        write_pairs_cache(teacher_pairs, empty, empty, empty, np.empty((0, 2)), provenance())
        return
    path_of = images.set_index("image_id")["path"]
    unknown = sorted(set(pair_table["image_a"]).union(pair_table["image_b"]) - set(path_of.index))
    if unknown:
        raise ValueError(
            f"{pairs}: {len(unknown)} pair images are not in {manifest}, e.g. {unknown[:5]}"
        )
    log.info(
        "%s: judging %d pairs (shard %d of %d)", backend.name, len(pair_table), shard, n_shards
    )
    paths_a = path_of.loc[pair_table["image_a"]].tolist()
    paths_b = path_of.loc[pair_table["image_b"]].tolist()
    logprobs = backend.pair_logprobs(paths_a, paths_b)
    metadata = {**provenance(), "debias": False}
    extra_columns = None
    if (teacher.get("pairs") or {}).get("debias", False):
        log.info("debias: asking the %d pairs again in the reverse order", len(pair_table))
        logprobs, p_forward, p_reverse = debiased_pair_logprobs(
            logprobs, backend.pair_logprobs(paths_b, paths_a)
        )
        disagree = order_disagreement(p_forward, p_reverse)
        extra_columns = {
            "p_A_forward": p_forward,
            "p_A_reverse": p_reverse,
            "orders_disagree": disagree,
        }
        metadata["debias"] = True
        metadata.setdefault(COUNTS_KEY, {}).update(
            {"n_pairs": len(disagree), "n_orders_disagree": int(disagree.sum())}
        )
        log.info("the two orders disagree on %d of %d pairs", disagree.sum(), len(disagree))
    write_pairs_cache(
        teacher_pairs,
        pair_table["pair_id"].tolist(),
        pair_table["image_a"].tolist(),
        pair_table["image_b"].tolist(),
        logprobs,
        metadata,
        extra_columns,
    )
    log.info("wrote %s", teacher_pairs)


def merge_points_step(shards: Sequence[str], merged: str) -> None:
    """Concatenate the points shard caches (see :func:`leaf.teacher.cache.merge_caches`)."""
    frame = merge_caches(list(shards), merged, POINTS_KIND)
    log.info("merged %d point shards, %d images, into %s", len(shards), len(frame), merged)


def merge_pairs_step(shards: Sequence[str], merged: str) -> None:
    """Concatenate the pairs shard caches (see :func:`leaf.teacher.cache.merge_caches`)."""
    frame = merge_caches(list(shards), merged, PAIRS_KIND)
    log.info("merged %d pair shards, %d pairs, into %s", len(shards), len(frame), merged)

"""Snakemake step functions of the teacher stages.

Rules ``teacher_point``/``teacher_pair`` judge one shard each (a contiguous block of the
manifest's images or of the pairs) and write a shard cache; ``merge_points``/``merge_pairs``
concatenate the shards. The cache schema is in docs/cache_schema.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from leaf.atomic_io import write_parquet_atomic
from leaf.datasets import DatasetError
from leaf.experiments import Plan
from leaf.hashing import file_sha256
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
from leaf.teacher.cache_keys import IMAGE_COLUMNS, PAIR_COLUMNS, dataset_images, dataset_pairs
from leaf.teacher.factory import make_backend, teacher_hash, teacher_identity
from leaf.teacher.levels import Levels, debiased_pair_logprobs, order_disagreement

log = logging.getLogger(__name__)


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
    backend: TeacherBackend,
    teacher: dict,
    manifest: str,
    shard: int,
    n_shards: int,
    keys: dict | None,
) -> dict:
    """Backend provenance (call it after judging) plus config identity, hashes, cache keys,
    shard."""
    return {
        **backend.provenance(),
        "point_only": is_point_only(backend),
        "teacher_hash": teacher_hash(teacher),
        "teacher_config": teacher_identity(teacher),
        "manifest_sha256": file_sha256(manifest),
        **(keys or {}),
        "shard": shard,
        "n_shards": n_shards,
    }


def teacher_point_step(
    manifest: str,
    points: str,
    teacher: dict,
    shard: int = 0,
    n_shards: int = 1,
    source: str | None = None,
    speed: dict | None = None,
    cache_keys: dict | None = None,
) -> None:
    """Judge the shard's manifest images and write a points cache.

    ``manifest``: a table with columns ``image_id`` and ``path`` (the workflow passes the key
    table of the images, :mod:`leaf.teacher.cache_keys`). ``source`` is the imported judgments
    file (import backend): the rule declares it as an input so that a change of its content
    reruns the teacher; the backend reads it from ``teacher``. ``speed``: the backend's
    speed-only options (:func:`leaf.teacher.factory.speed_options`), which the rule's script
    reads from the config at run time, so that they rerun nothing. ``cache_keys``: the cache keys
    (``images_key``, ``pairs_key``), stored in the metadata.
    """
    images = shard_rows(pd.read_parquet(manifest, columns=["image_id", "path"]), shard, n_shards)
    backend = make_backend(teacher, speed)
    log.info("%s: judging %d images (shard %d of %d)", backend.name, len(images), shard, n_shards)
    logliks = backend.point_logliks(images["path"].tolist())
    levels = Levels.from_config(teacher["levels"])
    provenance = _provenance(backend, teacher, manifest, shard, n_shards, cache_keys)
    write_points_cache(points, images["image_id"].tolist(), logliks, levels, provenance)
    log.info("wrote %s", points)


def teacher_pair_step(
    manifest: str,
    pairs: str,
    teacher_pairs: str,
    teacher: dict,
    shard: int = 0,
    n_shards: int = 1,
    source: str | None = None,
    speed: dict | None = None,
    cache_keys: dict | None = None,
) -> None:
    """Ask the teacher about the shard's pairs and write a pairs cache (``manifest``,
    ``source``, ``speed``, ``cache_keys``: see above; ``pairs``: columns ``pair_id``, ``image_a``,
    ``image_b``).

    A point-only backend writes an empty cache whose metadata says ``point_only: true``.
    """
    all_pairs = pd.read_parquet(pairs, columns=["pair_id", "image_a", "image_b"])
    pair_table = shard_rows(all_pairs, shard, n_shards)
    images = pd.read_parquet(manifest, columns=["image_id", "path"])
    backend = make_backend(teacher, speed)

    def provenance() -> dict:
        return {
            **_provenance(backend, teacher, manifest, shard, n_shards, cache_keys),
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


def merge_points_step(shards: Sequence[str], merged: str, manifest: str | None = None) -> None:
    """Concatenate the points shard caches (see :func:`leaf.teacher.cache.merge_caches`).
    With ``manifest`` (the results folder's), the shards must hold its images in its order."""
    expected = None if manifest is None else pd.read_parquet(manifest, columns=["image_id"])
    frame = merge_caches(list(shards), merged, POINTS_KIND, expected, str(manifest))
    log.info("merged %d point shards, %d images, into %s", len(shards), len(frame), merged)


def merge_pairs_step(shards: Sequence[str], merged: str, pairs: str | None = None) -> None:
    """Concatenate the pairs shard caches (see :func:`leaf.teacher.cache.merge_caches`).
    With ``pairs`` (the results folder's pair set), the shards must hold exactly its pairs."""
    expected = None if pairs is None else pd.read_parquet(pairs, columns=list(PAIR_COLUMNS))
    frame = merge_caches(list(shards), merged, PAIRS_KIND, expected, str(pairs))
    log.info("merged %d pair shards, %d pairs, into %s", len(shards), len(frame), merged)


def _keyed_settings(config: dict, images_key: str, pairs_key: str | None) -> dict:
    """The key settings (:meth:`leaf.experiments.Plan.key_settings`) of the configured dataset
    that has these keys now; DatasetError if none has (its files changed since planning)."""
    plan = Plan(config)
    try:
        return plan.key_settings(plan.keyed_dataset(images_key, pairs_key))
    except KeyError as error:
        raise DatasetError(
            f"{error.args[0]}: a dataset's files changed after the workflow was planned; run "
            "it again"
        ) from error


def cache_images_step(table: str, images_key: str, config: dict, labels: str | None = None) -> None:
    """Rule ``cache_images``: write the images (:data:`~leaf.teacher.cache_keys.IMAGE_COLUMNS`,
    label-file order) of the configured dataset with the images key ``images_key`` to the key
    table ``table``. ``config``: the workflow config, read at run time (so that a results
    folder's settings rerun nothing). ``labels``: the demo's label file, an input only so that
    its table waits for the demo. Raises DatasetError if no dataset has that key any more."""
    settings = _keyed_settings(config, images_key, None)
    images = dataset_images(settings["dataset"], settings["memo_dir"])
    write_parquet_atomic(images[list(IMAGE_COLUMNS)].reset_index(drop=True), Path(table))
    log.info("wrote the %d images of key %s to %s", len(images), images_key, table)


def cache_pairs_step(
    table: str, images_key: str, pairs_key: str, config: dict, labels: str | None = None
) -> None:
    """Rule ``cache_pairs``: write the pair set (:data:`~leaf.teacher.cache_keys.PAIR_COLUMNS`)
    of the configured dataset with these keys, drawn from its labels as the ``split`` and
    ``pairs`` rules draw it (:func:`leaf.teacher.cache_keys.dataset_pairs`), to ``table``.
    ``config``, ``labels``: as in :func:`cache_images_step`."""
    settings = _keyed_settings(config, images_key, pairs_key)
    pairs = dataset_pairs(settings["dataset"], settings["split"], settings["pairs"])
    write_parquet_atomic(pairs[list(PAIR_COLUMNS)].reset_index(drop=True), Path(table))
    log.info("wrote the %d pairs of key %s to %s", len(pairs), pairs_key, table)

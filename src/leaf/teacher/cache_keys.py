"""Content keys of the shared teacher cache (config key ``teacher_cache``; docs/cache_schema.md).

A teacher shard's judgments depend on the teacher (its hash,
:func:`leaf.teacher.factory.teacher_hash`) and on what the teacher is shown, nothing else. What
it is shown is keyed by content, so that every results folder (every config) that shows a
teacher the same images reuses the same shard caches:

* the **images key** of a manifest: the first 12 hex digits of the sha256 of the ordered list of
  ``(image_id, sha256 of the image file's bytes)`` (:func:`images_key`): which images, in which
  order (a shard is a contiguous block of it), with which content. MOS, sizes, extra columns and
  file paths are left out: the teacher never sees a MOS, and the same images at another path are
  judged the same;
* the **pairs key** of a pair table: the same digest of the ordered
  ``(pair_id, image_a, image_b)`` (:func:`pairs_key`). A pair set is always stored under the
  images key of its images, so the images' content is part of what keys a pair shard.

The cache keeps, next to the shards, one *key table* per key (written by :func:`images_step` and
:func:`pairs_step`): what the key stands for (and, for images, where the files were read from),
the teacher jobs' only inputs besides the teacher's own files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from leaf.atomic_io import write_parquet_atomic
from leaf.hashing import canonical_hash

# Columns of the key tables: the images of an images key, the pairs of a pairs key.
IMAGE_COLUMNS = ("image_id", "path", "sha256")
PAIR_COLUMNS = ("pair_id", "image_a", "image_b")


@dataclass(frozen=True)
class Keyed:
    """A key table and its key (:func:`images_key` or :func:`pairs_key`)."""

    key: str
    table: pd.DataFrame


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}: {list(frame.columns)}")


def images_key(manifest: pd.DataFrame) -> str:
    """12-hex content key of the images of ``manifest`` (columns ``image_id``, ``sha256``: one
    row per image, in manifest order). Raises ValueError when a column is missing."""
    _require(manifest, ("image_id", "sha256"), "manifest")
    return canonical_hash(manifest[["image_id", "sha256"]].astype(str).values.tolist())


def pairs_key(pairs: pd.DataFrame) -> str:
    """12-hex key of the ordered pairs of ``pairs`` (columns ``pair_id``, ``image_a``,
    ``image_b``; ids compared as strings). Raises ValueError when a column is missing."""
    _require(pairs, PAIR_COLUMNS, "pair table")
    return canonical_hash(pairs[list(PAIR_COLUMNS)].astype(str).values.tolist())


def _stamp(path: str | os.PathLike) -> tuple[str, int, int]:
    """(path, mtime in ns, size): a changed file gets a new memo entry."""
    stat = os.stat(path)
    return str(path), stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=64)
def _images_of(stamp: tuple[str, int, int]) -> Keyed:
    manifest = pd.read_parquet(stamp[0], columns=list(IMAGE_COLUMNS))
    return Keyed(images_key(manifest), manifest)


@lru_cache(maxsize=64)
def _pairs_of(stamp: tuple[str, int, int]) -> Keyed:
    pairs = pd.read_parquet(stamp[0], columns=list(PAIR_COLUMNS))
    return Keyed(pairs_key(pairs), pairs)


def images_of(manifest: str | os.PathLike) -> Keyed:
    """The images key and table (:data:`IMAGE_COLUMNS`) of a manifest file (the ``prepare``
    rule's). Read once per file version (path, mtime, size): the workflow asks for it once per
    job while it plans."""
    return _images_of(_stamp(manifest))


def pairs_of(pairs: str | os.PathLike) -> Keyed:
    """The pairs key and table (:data:`PAIR_COLUMNS`) of a pairs file (the ``pairs`` rule's),
    read once per file version."""
    return _pairs_of(_stamp(pairs))


def _write_checked(frame: pd.DataFrame, key: str, expected: str, table: str, what: str) -> None:
    if key != expected:
        raise ValueError(f"the {what} have the key {key}, not {expected} (the key in {table})")
    write_parquet_atomic(frame.reset_index(drop=True), Path(table))


def images_step(images: pd.DataFrame, key: str, table: str) -> None:
    """Snakemake step of ``cache_images``: write the images (:data:`IMAGE_COLUMNS`, manifest
    order) of the images key ``key`` to the key table ``table``. Raises ValueError if their key
    is not ``key``."""
    _require(images, IMAGE_COLUMNS, "images")
    frame = images[list(IMAGE_COLUMNS)]
    _write_checked(frame, images_key(frame), key, table, "images")


def pairs_step(pairs: pd.DataFrame, key: str, table: str) -> None:
    """Snakemake step of ``cache_pairs``: write the pairs (:data:`PAIR_COLUMNS`, in order) of
    the pairs key ``key`` to the key table ``table``. Raises ValueError if their key is not
    ``key``."""
    _require(pairs, PAIR_COLUMNS, "pairs")
    frame = pairs[list(PAIR_COLUMNS)]
    _write_checked(frame, pairs_key(frame), key, table, "pairs")

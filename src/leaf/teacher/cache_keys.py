"""Keys of the shared teacher cache (config key ``teacher_cache``; docs/cache_schema.md).

A teacher shard's judgments depend on the teacher (its hash,
:func:`leaf.teacher.factory.teacher_hash`) and on what the teacher is shown, nothing else. What
it is shown is keyed by what defines it, so that every results folder (every config) that
shows a teacher the same images reuses the same shards. The keys are known when Snakemake
plans (no checkpoint), computed from the dataset's own files:

* the **images key** (12 hex digits) of a dataset, of one of three kinds (:data:`KEY_KINDS`):

  - ``content``: the sha256 of the ordered list of ``(image_id, sha256 of the image file's
    bytes)`` of the images its label file lists (:func:`images_key`), the same digest as of
    the manifest ``prepare`` writes. MOS, paths and extra columns are left out: the teacher never
    sees a MOS, and the same images at another path are judged the same. File digests are
    remembered per (size, mtime) in a memo folder, so planning reads each image once;
  - ``generated``: a dataset written by the workflow itself (the demo), whose files may not
    exist yet when Snakemake plans: the digest of its generator's settings and source code;
  - ``pending``: no label file found (a dry run before the data is in place): the digest of
    the dataset's adapter, root and options. Such a key is never computed: ``prepare`` fails
    first, naming the missing file.

* the **pairs key** of a dataset's pair set: the digest of its images key, the label columns a
  split may use (every column except ``mos`` and ``path``), the split settings and the pair
  settings (:func:`dataset_keys`). The pair set is drawn from those alone
  (:func:`dataset_pairs`); the merge of a results folder checks that the shards' pairs are the
  ones its own ``pairs`` rule drew (:func:`leaf.teacher.steps.merge_pairs_step`).

The cache keeps, next to the shards, one *key table* per key (written by
:func:`leaf.teacher.steps.cache_images_step` and :func:`~leaf.teacher.steps.cache_pairs_step`
from the dataset's files, never from a results folder's), the teacher jobs' only inputs besides
the teacher's own files.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from leaf.atomic_io import json_write_atomic
from leaf.datasets import DatasetError, label_file, load_labels
from leaf.hashing import canonical_hash, file_sha256
from leaf.pairs import train_pairs
from leaf.split import train_test_split

# Columns of the key tables: the images of an images key, the pairs of a pairs key.
IMAGE_COLUMNS = ("image_id", "path", "sha256")
PAIR_COLUMNS = ("pair_id", "image_a", "image_b")
# How an images key was computed (see the module docstring).
KEY_KINDS = ("content", "generated", "pending")
# Adapters whose files the workflow writes (rule demo_dataset), keyed by their generator.
GENERATED_ADAPTERS = {"demo": "leaf.demo_data"}
# Label columns that never decide a split or a pair draw.
NOT_SPLIT_COLUMNS = ("mos", "path")


@dataclass(frozen=True)
class DatasetKeys:
    """The cache keys of one dataset (12 hex digits each) and the images key's kind."""

    images_key: str
    pairs_key: str
    kind: str


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}: {list(frame.columns)}")


def images_key(images: pd.DataFrame) -> str:
    """12-hex content key of ``images`` (columns ``image_id``, ``sha256``: one row per image, in
    label-file order; a manifest qualifies). Raises ValueError when a column is missing."""
    _require(images, ("image_id", "sha256"), "image table")
    return canonical_hash(images[["image_id", "sha256"]].astype(str).values.tolist())


def file_digests(
    paths: Sequence[str], memo: Path | None = None, source: str | os.PathLike | None = None
) -> list[str]:
    """sha256 hex digests of ``paths``. With ``memo`` (a JSON file), a file whose size and
    mtime (ns) are those remembered is not read again; new digests are added to the memo
    (written atomically, so concurrent planners at worst redo work). Raises
    :class:`leaf.datasets.DatasetError` naming a file that cannot be read (and, with ``source``,
    the label file and the data row, 1-based, that lists it)."""
    remembered: dict[str, list] = {}
    if memo is not None and memo.exists():
        try:
            remembered = json.loads(memo.read_text())
        except (OSError, ValueError):
            remembered = {}  # a damaged memo only costs time: the files are read again
    digests, changed = [], False
    for row, path in enumerate(paths, start=1):
        try:
            stat = os.stat(path)
            stamp = [stat.st_size, stat.st_mtime_ns]
            entry = remembered.get(path)
            if entry is None or entry[:2] != stamp:
                entry = [*stamp, file_sha256(path)]
                remembered[path], changed = entry, True
        except OSError as error:
            where = f"{source}, row {row}: " if source is not None else ""
            raise DatasetError(f"{where}{path}: cannot read the image file ({error})") from error
        digests.append(entry[2])
    if changed and memo is not None:
        json_write_atomic(remembered, memo)
    return digests


def memo_file(memo_dir: str | os.PathLike | None, root: str | os.PathLike) -> Path | None:
    """The digest memo of one dataset root inside ``memo_dir`` (None: no memo)."""
    if memo_dir is None:
        return None
    return Path(memo_dir) / f"sha256-{canonical_hash(str(Path(root).expanduser().resolve()))}.json"


def dataset_images(
    dataset: Mapping[str, Any], memo_dir: str | os.PathLike | None = None
) -> pd.DataFrame:
    """The labels of a dataset config (``adapter``, ``root``, ``options``;
    :func:`leaf.datasets.load_labels`) with the ``sha256`` of each image file added, in
    label-file order. Raises :class:`leaf.datasets.DatasetError` for a missing label file or
    image."""
    where = (dataset["adapter"], dataset["root"], dataset.get("options", {}))
    labels = load_labels(*where)
    paths = labels["path"].astype(str).tolist()
    memo = memo_file(memo_dir, dataset["root"])
    labels["sha256"] = file_digests(paths, memo, label_file(*where))
    return labels


def _generator_key(adapter: str, settings: Mapping[str, Any] | None) -> str:
    """Digest of a generator's module source and settings (the module is not imported)."""
    module = GENERATED_ADAPTERS[adapter]
    source = importlib.util.find_spec(module).origin
    return canonical_hash(
        {"generator": module, "settings": settings or {}, "code": file_sha256(source)}
    )


def dataset_keys(
    dataset: Mapping[str, Any],
    split: Mapping[str, Any],
    pairs: Mapping[str, Any],
    generator: Mapping[str, Any] | None = None,
    memo_dir: str | os.PathLike | None = None,
) -> DatasetKeys:
    """The cache keys of a dataset config (``adapter``, ``root``, ``options``) under the split
    settings ``split`` (``test_fraction``, ``seed``, ``group_by``, ``official_column``) and pair
    settings ``pairs`` (``per_image``, ``seed``). ``generator``: the settings of a generated
    dataset (the config's ``demo`` section). Raises :class:`leaf.datasets.DatasetError` for a
    label file that cannot be read or a listed image that is missing."""
    adapter, options = dataset["adapter"], dataset.get("options", {})
    split_columns = None
    if adapter in GENERATED_ADAPTERS:
        key, kind = _generator_key(adapter, generator), "generated"
    elif label_file(adapter, dataset["root"], options) is None:
        where = [adapter, str(Path(dataset["root"]).expanduser().resolve()), options]
        key, kind = canonical_hash({"pending": where}), "pending"
    else:
        images = dataset_images(dataset, memo_dir)
        key, kind = images_key(images), "content"
        kept = [c for c in images.columns if c not in (*NOT_SPLIT_COLUMNS, "sha256")]
        split_columns = canonical_hash(images[kept].astype(str).values.tolist())
    pairs_key = canonical_hash(
        {"images": key, "labels": split_columns, "split": dict(split), "pairs": dict(pairs)}
    )
    return DatasetKeys(key, pairs_key, kind)


def dataset_pairs(
    dataset: Mapping[str, Any], split: Mapping[str, Any], pairs: Mapping[str, Any]
) -> pd.DataFrame:
    """The pair set the ``split`` and ``pairs`` rules draw for this dataset (the same functions,
    :func:`leaf.split.train_test_split` and :func:`leaf.pairs.train_pairs`, on its labels):
    columns :data:`PAIR_COLUMNS`."""
    labels = load_labels(dataset["adapter"], dataset["root"], dataset.get("options", {}))
    train = train_test_split(
        labels,
        split["test_fraction"],
        split["seed"],
        split.get("group_by"),
        split.get("official_column"),
    )
    return train_pairs(train, pairs["per_image"], pairs["seed"])

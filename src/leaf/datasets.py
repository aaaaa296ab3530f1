"""Dataset adapters and the image manifest.

:func:`load_labels` reads one dataset's official label file into a common table (``image_id``,
``path``, ``mos`` plus adapter extras) keeping the dataset's native MOS scale;
:func:`build_manifest` opens every image once to record its size and content hash;
:func:`prepare_step` is the ``prepare`` rule (``{results}/{dataset}/manifest.parquet``).

Adapters and their on-disk layouts (label file, first one found -> image folder; every path
option is relative to ``root`` unless absolute):

- ``generic``: option ``labels`` (a CSV; options ``path_column``, ``mos_column``) -> root;
  every other column is kept.
- ``agiqa3k``: ``data.csv`` (label = ``mos_quality``; keeps ``prompt``) -> ``images/``.
- ``koniq10k``: ``koniq10k_distributions_sets.csv`` or ``koniq10k_scores_and_distributions.csv``
  (label = ``MOS``; keeps ``set`` when present) -> ``1024x768/``.
- ``spaq``: ``MOS and Image attribute scores`` as .csv or .xlsx, in root or ``Annotations/``
  (label = ``MOS``) -> ``TestImage/``.
- ``aigiqa20k``: ``info_train.csv`` without header (name, prompt, MOS; keeps ``prompt``) ->
  ``train/``.
- ``demo``: ``labels.csv`` written by :mod:`leaf.demo_data` (keeps every other column) ->
  ``images/``.

Every adapter accepts the options ``labels`` (label file) and ``image_dir`` (image folder).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from leaf.atomic_io import write_parquet_atomic
from leaf.images import ImageReadError, read_rgb_bytes

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("image_id", "path", "mos")
MANIFEST_COLUMNS = ("image_id", "path", "mos", "width", "height", "sha256")

_COMMON_OPTIONS = frozenset({"labels", "image_dir"})
_GENERIC_OPTIONS = _COMMON_OPTIONS | {"path_column", "mos_column"}


class DatasetError(ValueError):
    """A dataset's label file or images do not match what its adapter expects."""


@dataclass(frozen=True)
class _Adapter:
    """The fixed on-disk layout of one benchmark's label file and images."""

    label_files: tuple[str, ...]  # candidates relative to root; the first existing one is used
    image_dir: str
    id_column: str
    mos_column: str
    required_extras: tuple[str, ...] = ()
    optional_extras: tuple[str, ...] = ()
    keep_all_columns: bool = False  # keep every other column as an extra
    header_names: tuple[str, ...] | None = None  # column names of a header-less CSV


_SPAQ_LABELS = "MOS and Image attribute scores"

_ADAPTERS: dict[str, _Adapter] = {
    "agiqa3k": _Adapter(
        label_files=("data.csv",),
        image_dir="images",
        id_column="name",
        mos_column="mos_quality",
        required_extras=("prompt",),
    ),
    "koniq10k": _Adapter(
        label_files=("koniq10k_distributions_sets.csv", "koniq10k_scores_and_distributions.csv"),
        image_dir="1024x768",
        id_column="image_name",
        mos_column="MOS",
        optional_extras=("set",),
    ),
    "spaq": _Adapter(
        label_files=tuple(
            f"{folder}{_SPAQ_LABELS}.{ext}"
            for folder in ("", "Annotations/")
            for ext in ("csv", "xlsx")
        ),
        image_dir="TestImage",
        id_column="Image name",
        mos_column="MOS",
    ),
    "aigiqa20k": _Adapter(
        label_files=("info_train.csv",),
        image_dir="train",
        id_column="name",
        mos_column="mos",
        required_extras=("prompt",),
        header_names=("name", "prompt", "mos"),
    ),
    "demo": _Adapter(
        label_files=("labels.csv",),
        image_dir="images",
        id_column="image_id",
        mos_column="mos",
        keep_all_columns=True,
    ),
}

ADAPTERS: tuple[str, ...] = ("generic", *_ADAPTERS)
"""Names accepted by :func:`load_labels`."""


def _resolve(root: Path, value: str | Path) -> Path:
    """``value`` if absolute, else ``root / value``."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def _check_options(adapter: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Reject option keys the adapter does not understand."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DatasetError(
            f"adapter {adapter!r}: unknown option(s) {unknown}; accepted: {sorted(allowed)}"
        )


def _find_label_file(adapter: str, root: Path, candidates: Iterable[str]) -> Path:
    """The first existing label file among ``candidates`` (relative to ``root``)."""
    tried = [_resolve(root, name) for name in candidates]
    for path in tried:
        if path.is_file():
            return path
    listing = ", ".join(str(path) for path in tried)
    raise DatasetError(f"adapter {adapter!r}: no label file found; looked for: {listing}")


def _read_table(path: Path, id_column: str, header_names: tuple[str, ...] | None) -> pd.DataFrame:
    """Read a CSV or Excel label table, keeping the image-name column as strings."""
    dtype = {id_column: str}
    try:
        if path.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
            engine = "xlrd" if path.suffix.lower() == ".xls" else "openpyxl"
            if importlib.util.find_spec(engine) is None:
                raise DatasetError(
                    f"cannot read {path}: reading Excel files needs the {engine!r} package; "
                    f"`pip install {engine}` or export the sheet to CSV "
                    f"({path.with_suffix('.csv').name}) next to it"
                )
            return pd.read_excel(path, dtype=dtype, engine=engine)
        if header_names is not None:
            return pd.read_csv(path, header=None, names=list(header_names), dtype=dtype)
        return pd.read_csv(path, dtype=dtype)
    except DatasetError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DatasetError(f"cannot read label file {path}: {error}") from error


def _require_columns(table: pd.DataFrame, columns: Iterable[str], source: Path) -> None:
    """Raise if any of ``columns`` is missing from ``table`` (read from ``source``)."""
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise DatasetError(
            f"{source}: missing column(s) {missing}; found columns {list(table.columns)}"
        )


def _check_unique(image_ids: pd.Series, source: str | Path) -> None:
    """Raise naming every image_id that occurs more than once."""
    duplicated = image_ids[image_ids.duplicated(keep=False)]
    if not duplicated.empty:
        names = sorted(set(duplicated))
        raise DatasetError(f"{source}: duplicate image_id(s) ({len(names)}): {names}")


def _ids_and_paths(names: pd.Series, image_dir: Path, source: Path) -> tuple[list[str], list[str]]:
    """Image ids (relative to ``image_dir``) and absolute paths from the label file's names."""
    if names.isna().any():
        rows = [int(i) for i in np.flatnonzero(names.isna().to_numpy())]
        raise DatasetError(f"{source}: empty image name in data row(s) {rows[:20]}")
    image_dir = image_dir.absolute()
    image_ids, paths = [], []
    for name in names.astype(str):
        path = Path(name)
        if path.is_absolute():
            try:
                image_id = path.relative_to(image_dir).as_posix()
            except ValueError as error:
                raise DatasetError(
                    f"{source}: image path {name} is not inside the image folder {image_dir}"
                ) from error
        else:
            image_id, path = path.as_posix(), image_dir / path
        image_ids.append(image_id)
        paths.append(str(path))
    return image_ids, paths


def _to_mos(values: pd.Series, column: str, source: Path) -> pd.Series:
    """Numeric MOS values; empty cells become NaN, anything else non-numeric is an error."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if bad.any():
        examples = values[bad].astype(str).head(5).tolist()
        raise DatasetError(f"{source}: non-numeric values in column {column!r}: {examples}")
    return numeric.astype(float)


def _standardise(
    table: pd.DataFrame,
    source: Path,
    image_dir: Path,
    id_column: str,
    mos_column: str | None,
    extras: list[str],
) -> pd.DataFrame:
    """Build the common label table (image_id, path, mos, extras...) from a raw label table."""
    reserved = [column for column in extras if column in MANIFEST_COLUMNS]
    if reserved:
        raise DatasetError(
            f"{source}: column(s) {reserved} clash with the manifest's own columns; "
            f"rename them or choose them as the path/MOS column"
        )
    if table.empty:
        raise DatasetError(f"{source}: the label table has no rows")
    image_ids, paths = _ids_and_paths(table[id_column], image_dir, source)
    labels = pd.DataFrame({"image_id": image_ids, "path": paths})
    if mos_column is None:
        labels["mos"] = np.nan
    else:
        labels["mos"] = _to_mos(table[mos_column], mos_column, source).to_numpy()
    for column in extras:
        labels[column] = table[column].to_numpy()
    _check_unique(labels["image_id"], source)
    return labels


def _label_candidates(adapter: str, options: Mapping[str, Any]) -> list[str]:
    """Where the adapter looks for its label file, first existing one wins (relative to root)."""
    if options.get("labels"):
        return [options["labels"]]
    return [] if adapter == "generic" else list(_ADAPTERS[adapter].label_files)


def label_file(
    adapter: str, root: str | Path, options: Mapping[str, Any] | None = None
) -> Path | None:
    """The label file :func:`load_labels` reads for this dataset (the demo's, which is generated,
    even before it exists), or None when none exists yet: the ``prepare`` rule declares it as an
    input, so that editing a label reruns ``prepare`` and everything downstream. A missing file
    is reported by :func:`load_labels` when ``prepare`` runs."""
    root, options = Path(root).expanduser(), dict(options or {})
    if adapter != "generic" and adapter not in _ADAPTERS:
        return None
    candidates = _label_candidates(adapter, options)
    if adapter == "demo":
        return _resolve(root, candidates[0])
    try:
        return _find_label_file(adapter, root, candidates)
    except DatasetError:
        return None


def image_files(
    adapter: str, root: str | Path, options: Mapping[str, Any] | None = None
) -> list[str]:
    """The image files :func:`build_manifest` reads for this dataset: the ``prepare`` rule
    declares them as inputs (beside :func:`label_file`), so that a changed image reruns
    ``prepare``, and with the manifest's new content hash everything that depends on it.

    The demo's is its image folder, which the ``demo_dataset`` rule writes in one piece (listed
    before the demo exists, unlike its files). Any other adapter's are the files its label file
    lists (:func:`load_labels`), none while there is no label file (``prepare`` then reports
    it). Read once per label-file version. Raises :class:`DatasetError` as :func:`load_labels`.
    """
    root, options = Path(root).expanduser(), dict(options or {})
    if adapter == "demo":
        return [str(_resolve(root, options.get("image_dir", _ADAPTERS["demo"].image_dir)))]
    labels = label_file(adapter, root, options)
    if labels is None:
        return []
    stat = labels.stat()
    version = (str(labels), stat.st_mtime_ns, stat.st_size)
    return list(_listed_images(adapter, str(root), json.dumps(options, sort_keys=True), version))


@lru_cache(maxsize=16)
def _listed_images(adapter: str, root: str, options: str, version: tuple) -> tuple[str, ...]:
    return tuple(load_labels(adapter, root, json.loads(options))["path"].astype(str))


def _load_generic(root: Path, options: Mapping[str, Any]) -> pd.DataFrame:
    """The ``generic`` adapter: any CSV with a path column and an optional MOS column."""
    _check_options("generic", options, _GENERIC_OPTIONS)
    if not options.get("labels"):
        raise DatasetError("adapter 'generic': option 'labels' (the label CSV) is required")
    source = _find_label_file("generic", root, _label_candidates("generic", options))
    path_column = options.get("path_column", "path")
    table = _read_table(source, path_column, None)
    _require_columns(table, [path_column], source)
    if "mos_column" in options:
        mos_column = options["mos_column"]
        if mos_column is not None:
            _require_columns(table, [mos_column], source)
    else:
        mos_column = "mos" if "mos" in table.columns else None
    extras = [column for column in table.columns if column not in (path_column, mos_column)]
    image_dir = _resolve(root, options.get("image_dir", "."))
    return _standardise(table, source, image_dir, path_column, mos_column, extras)


def _load_fixed(name: str, root: Path, options: Mapping[str, Any]) -> pd.DataFrame:
    """An adapter with a fixed layout (everything except ``generic``)."""
    spec = _ADAPTERS[name]
    _check_options(name, options, _COMMON_OPTIONS)
    source = _find_label_file(name, root, _label_candidates(name, options))
    table = _read_table(source, spec.id_column, spec.header_names)
    _require_columns(table, [spec.id_column, spec.mos_column, *spec.required_extras], source)
    if spec.keep_all_columns:
        extras = [c for c in table.columns if c not in (spec.id_column, spec.mos_column)]
    else:
        wanted = (*spec.required_extras, *spec.optional_extras)
        extras = [column for column in wanted if column in table.columns]
    image_dir = _resolve(root, options.get("image_dir", spec.image_dir))
    return _standardise(table, source, image_dir, spec.id_column, spec.mos_column, extras)


def load_labels(
    adapter: str, root: str | Path, options: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Read a dataset's labels with the named adapter.

    Returns one row per image with columns ``image_id`` (file name relative to the image
    folder, unique), ``path`` (absolute), ``mos`` (float in the dataset's native scale; NaN
    when unknown) and the adapter's extras (e.g. ``prompt``, ``set``). Raises
    :class:`DatasetError` for an unknown adapter or option, a missing label file or column,
    non-numeric MOS values or duplicate image ids. Images are not opened here.
    """
    root = Path(root).expanduser()
    options = dict(options or {})
    if adapter != "generic" and adapter not in _ADAPTERS:
        raise DatasetError(f"unknown dataset adapter {adapter!r}; choose one of {list(ADAPTERS)}")
    if not root.is_dir():
        raise DatasetError(f"adapter {adapter!r}: dataset root {root} is not a directory")
    if adapter == "generic":
        return _load_generic(root, options)
    return _load_fixed(adapter, root, options)


def _inspect_image(path: str) -> tuple[int, int, str] | str:
    """(width, height, sha256) of a fully decoded image file (the size as displayed, EXIF
    orientation applied: :func:`leaf.images.read_rgb`), or the reason it is unusable."""
    try:
        content = Path(path).read_bytes()
    except FileNotFoundError:
        return "file not found"
    except OSError as error:
        return f"cannot read file: {error}"
    digest = hashlib.sha256(content).hexdigest()
    try:
        width, height = read_rgb_bytes(content, name=path).size
    except ImageReadError as error:  # any decoder failure makes the image unusable
        return str(error).removeprefix(f"{path}: ")
    return width, height, digest


def build_manifest(labels: pd.DataFrame, progress: bool = True, workers: int = 1) -> pd.DataFrame:
    """Open every image of ``labels`` once and add its ``width``, ``height`` and ``sha256``.

    Each file is read once; the hash is taken over its bytes and the image is fully decoded
    from the same bytes. All missing or undecodable images are collected and reported in one
    :class:`DatasetError`. ``workers`` > 1 decodes in that many threads (Pillow releases the
    GIL while decoding). Output columns: image_id, path, mos, width, height, sha256, extras.
    """
    missing = [column for column in LABEL_COLUMNS if column not in labels.columns]
    if missing:
        raise DatasetError(f"label table lacks column(s) {missing}: {list(labels.columns)}")
    _check_unique(labels["image_id"], "label table")
    paths = labels["path"].astype(str).tolist()
    bar = tqdm(total=len(paths), desc="images", unit="img", file=sys.stderr, disable=not progress)
    results: list[tuple[int, int, str] | str] = []
    with bar, ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        for result in pool.map(_inspect_image, paths):
            results.append(result)
            bar.update()
    failures = [
        f"  {image_id} ({path}): {result}"
        for image_id, path, result in zip(labels["image_id"], paths, results, strict=True)
        if isinstance(result, str)
    ]
    if failures:
        raise DatasetError(
            f"{len(failures)} of {len(paths)} image(s) are missing or unreadable:\n"
            + "\n".join(failures)
        )
    manifest = labels[list(LABEL_COLUMNS)].reset_index(drop=True)
    manifest["width"] = np.array([result[0] for result in results], dtype=np.int64)
    manifest["height"] = np.array([result[1] for result in results], dtype=np.int64)
    manifest["sha256"] = [result[2] for result in results]
    extras = [column for column in labels.columns if column not in MANIFEST_COLUMNS]
    for column in extras:
        manifest[column] = labels[column].to_numpy()
    return manifest


def prepare_step(
    manifest: str,
    adapter: str,
    root: str,
    options: Mapping[str, Any] | None = None,
    labels: str | None = None,
    images: Sequence[str] | None = None,
    threads: int = 1,
) -> None:
    """Snakemake step for the ``prepare`` rule: labels -> manifest Parquet at ``manifest``.

    ``labels`` and ``images`` are the dataset's label file and images (:func:`label_file`,
    :func:`image_files`), rule inputs only so that editing one reruns ``prepare`` (and the
    demo's wait for ``demo_dataset``); the adapter finds them under ``root`` itself. ``threads``
    images are decoded in parallel.
    """
    table = build_manifest(load_labels(adapter, root, options), progress=True, workers=threads)
    write_parquet_atomic(table, Path(manifest))
    known = table["mos"].dropna()
    mos_range = f"{known.min():.4g}..{known.max():.4g}" if len(known) else "none"
    log.info(
        "manifest %s: %d images from %s (%s), MOS range %s, %d without MOS",
        manifest,
        len(table),
        root,
        adapter,
        mos_range,
        len(table) - len(known),
    )

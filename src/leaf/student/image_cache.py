"""Decoded-image cache of the "full" training mode: every image decoded and resized ONCE.

Full-mode training reads its images every epoch; decoding the originals each time (SPAQ's
4000 x 3000 JPEGs take ~0.1-0.2 s each) would dominate the cost. The rule ``image_cache`` instead
writes, per dataset and short side ``N``:

* ``short{N}.npy``: one flat uint8 array, the RGB pixels (height, width, 3) of every image
  resized so that its short side is ``N`` (bicubic, aspect ratio kept), concatenated in
  manifest order. It is read as a memory map (``np.load(mmap_mode="r")``), so a training job
  only pages in what it touches.
* ``short{N}.parquet``: the index, one row per image: image_id, offset (into the flat array),
  height, width.

JPEGs are decoded with PIL's draft mode (DCT-domain downscaling by 1/2, 1/4 or 1/8 to a size
still >= the target) before the bicubic resize, which makes large photos several times cheaper
to decode. Images are decoded by ``threads`` worker threads (PIL releases the GIL while
decoding); the result does not depend on the thread count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from leaf.atomic_io import atomic_path, write_parquet_atomic
from leaf.images import oriented_size
from leaf.student.eval_inputs import decode_resized, short_side_size

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["image_id", "offset", "height", "width"]


def _target_sizes(paths: Sequence[str | Path], short_side: int) -> list[tuple[int, int]]:
    """(width, height) of every cached image, from the file headers (nothing is decoded)."""
    return [short_side_size(*oriented_size(path), short_side) for path in paths]


def _fill(
    array: np.ndarray,
    paths: Sequence[str | Path],
    sizes: list[tuple[int, int]],
    offsets: np.ndarray,
    short_side: int,
    threads: int,
) -> None:
    """Decode every image into its slice of the flat ``array`` with ``threads`` threads."""

    def fill(row: int) -> None:
        pixels = decode_resized(paths[row], short_side)
        width, height = sizes[row]
        if pixels.shape != (height, width, 3):
            raise ValueError(f"{paths[row]}: decoded {pixels.shape}, expected {sizes[row]}")
        array[offsets[row] : offsets[row] + pixels.size] = pixels.reshape(-1)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(fill, range(len(paths))))


def build_image_cache(
    paths: Sequence[str | Path],
    image_ids: Sequence[str],
    cache: str | Path,
    index: str | Path,
    short_side: int,
    threads: int = 1,
) -> pd.DataFrame:
    """Decode every image once into ``cache`` (flat uint8 ``.npy``) and its ``index`` (Parquet);
    both are written atomically. Returns the index."""
    if len(paths) != len(image_ids):
        raise ValueError("build_image_cache: paths and image_ids differ in length")
    if not paths:
        raise ValueError("build_image_cache: no images to cache")
    start = time.perf_counter()
    sizes = _target_sizes(paths, short_side)
    lengths = np.array([w * h * 3 for w, h in sizes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    cache, total = Path(cache), int(lengths.sum())
    with atomic_path(cache) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total,))
        _fill(array, paths, sizes, offsets, short_side, threads)
        array.flush()
        del array  # close the memory map before the rename
    table = pd.DataFrame(
        {
            "image_id": [str(image_id) for image_id in image_ids],
            "offset": offsets,
            "height": [h for _, h in sizes],
            "width": [w for w, _ in sizes],
        },
        columns=INDEX_COLUMNS,
    )
    write_parquet_atomic(table, Path(index))
    elapsed = time.perf_counter() - start
    log.info(
        "cached %d images at short side %d (%.1f MB) in %.1f s (%.1f images/s)",
        len(paths),
        short_side,
        total / 1e6,
        elapsed,
        len(paths) / max(elapsed, 1e-9),
    )
    return table


@dataclass
class ImageCache:
    """Read side of the cache: ``cache[row]`` is image ``row`` as uint8 (height, width, 3)
    (a view into the memory map); :meth:`rows` maps image ids to rows."""

    pixels: np.ndarray
    index: pd.DataFrame

    def __post_init__(self) -> None:
        self._layout = self.index[["offset", "height", "width"]].to_numpy(dtype=np.int64)

    @classmethod
    def open(cls, cache: str | Path, index: str | Path) -> ImageCache:
        """Memory-map ``cache`` and read its ``index``."""
        table = pd.read_parquet(index, columns=INDEX_COLUMNS)
        table["image_id"] = table["image_id"].astype(str)
        return cls(np.load(cache, mmap_mode="r"), table.reset_index(drop=True))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, row: int) -> np.ndarray:
        offset, height, width = (int(v) for v in self._layout[row])
        return self.pixels[offset : offset + height * width * 3].reshape(height, width, 3)

    def rows(self, image_ids: Sequence[str]) -> np.ndarray:
        """Rows of ``image_ids`` in that order (raises if any is not cached)."""
        row_of = {image_id: row for row, image_id in enumerate(self.index["image_id"])}
        missing = [image_id for image_id in image_ids if image_id not in row_of]
        if missing:
            raise KeyError(
                f"{len(missing)} images are not in the image cache (e.g. {missing[:3]}); rebuild it"
            )
        return np.array([row_of[image_id] for image_id in image_ids], dtype=np.int64)


def image_cache_step(
    manifest: str, cache: str, index: str, short_side: int, threads: int = 1
) -> None:
    """Rule ``image_cache``: every manifest image decoded once at short side ``short_side``."""
    table = pd.read_parquet(manifest, columns=["image_id", "path"])
    build_image_cache(
        table["path"].tolist(),
        table["image_id"].astype(str).tolist(),
        cache,
        index,
        int(short_side),
        threads,
    )

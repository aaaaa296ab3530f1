"""Producing the next item of an iterator in a background thread while the caller works on the
current one: decoding images (Pillow and torch release the GIL) overlaps the model's forward
pass (``leaf predict``, frozen-feature extraction)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
_END = object()


def prefetched(items: Iterable[Item]) -> Iterator[Item]:
    """The items of ``items`` in order, each one computed (``next``) in one background thread
    while the caller holds the one before: at most one item is computed ahead. An exception
    raised while computing an item is raised here, when that item is due."""
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="leaf-prefetch") as pool:
        pending = pool.submit(next, iterator, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, iterator, _END)
            yield item  # type: ignore[misc]

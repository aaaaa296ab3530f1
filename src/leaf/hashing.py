"""Content hashes of configurations: one canonical JSON, one digest (teacher caches, deployed
students)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

HASH_LENGTH = 12
# Bytes read at a time when hashing a file.
HASH_CHUNK = 1 << 20


def plain(value: Any) -> Any:
    """``value`` with tuples turned into lists and keys into strings (JSON- and
    ``weights_only``-friendly)."""
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    return value


def canonical_hash(obj: Any, length: int = HASH_LENGTH) -> str:
    """The first ``length`` hex digits of the sha256 of ``obj``'s canonical JSON (sorted keys,
    no spaces; values JSON cannot hold are written with ``str``)."""
    text = json.dumps(plain(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest (64 hex digits) of a file's bytes. Raises OSError if it cannot be
    read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

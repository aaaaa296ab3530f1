"""Content hashes of configurations: one canonical JSON, one digest (teacher caches, deployed
students)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

HASH_LENGTH = 12


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

"""Import existing per-image teacher judgments (e.g. published MLLM logits) as a point-only teacher.

Input formats (:data:`FORMATS`, also the config schema's ``teacher.import.format`` enum):

- ``qbench``: the Q-Bench output JSON, objects written back to back (``{...}{...}``, optionally
  separated by whitespace), each with ``img_path`` and ``logit_<word>`` fields;
- ``table``: a CSV or Parquet file with an image column and ``logit_<word>`` columns;
- ``logits_json``: one JSON array of ``{"filename": ..., "logits": {" excellent": <float>, ...},
  ...}`` objects (e.g. Q-Align-style next-token logits). The words of ``logits`` are matched
  with surrounding whitespace stripped (tokenizers put a leading space before the word).

Only the image field and the logits (``logit_*`` fields, or the ``logits`` object) are ever kept:
every other field is dropped while decoding. In particular the Q-Bench ``gt_score`` field is the
human MOS, a label; keeping it would leak test labels into label-free training. A
``logits_json`` file's ``pred_mos`` (the publisher's expectation over the same logits) is not a
label but is dropped as well: the score is always recomputed from the logits.

The logit of each configured level word is used as its log-likelihood: the softmax over the
level words is the same whether one starts from logits or log-probabilities. Words are matched
case-insensitively; a configured word missing from the file is an error, a word in the file but
not configured is ignored (with a warning). Images are matched by file name: a record's image
key (e.g. ``AttnGAN_normal_000.jpg`` or ``sub/x.png``) matches a path that ends with it, the
longest matching key winning.

An ensemble of imports (``path`` a list of files, :class:`ImportedEnsemble`) judges each image
by the mixture of its members' level distributions: p_k = mean over members of softmax(logits)_k,
log-likelihood log p_k. Its score Σ v_k p_k is then the mean of the members' scores. Every member
is read with the same level words (e.g. Qwen-VL's ``excellent``/``good``/``poor`` file read with
``good``/``poor``); no weights are fitted, so no label is involved.

Imports have no pair judgments: :meth:`ImportedTeacher.pair_logprobs` raises
:class:`PointOnlyTeacherError`, and the backend says so with ``point_only = True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path, PurePath

import numpy as np
import pandas as pd

from leaf.teacher.backend import TeacherOutputError
from leaf.teacher.cache import first_non_finite
from leaf.teacher.levels import Levels, level_probabilities

log = logging.getLogger(__name__)

LOGIT_PREFIX = "logit_"
QBENCH_IMAGE_FIELD = "img_path"
LOGITS_JSON_IMAGE_FIELD = "filename"
LOGITS_JSON_FIELD = "logits"
FORMATS = ("qbench", "table", "logits_json")
DEFAULT_IMAGE_FIELDS = {
    "qbench": QBENCH_IMAGE_FIELD,
    "table": "image_id",
    "logits_json": LOGITS_JSON_IMAGE_FIELD,
}


class PointOnlyTeacherError(NotImplementedError):
    """The teacher has point-wise judgments only; it cannot answer pairwise questions."""


def _is_kept_field(name: str, image_field: str) -> bool:
    return name == image_field or name.startswith(LOGIT_PREFIX)


def read_qbench_json(path: str | Path, image_field: str = QBENCH_IMAGE_FIELD) -> pd.DataFrame:
    """Decode back-to-back JSON objects, keeping only ``image_field`` and ``logit_*`` fields.

    Other fields (``gt_score``, ...) are dropped inside the decoder and never reach the caller.
    A UTF-8 byte-order mark is skipped, and a JSON array of such objects is read as well.
    """
    text = Path(path).read_text(encoding="utf-8-sig")
    decoder = json.JSONDecoder(
        object_pairs_hook=lambda pairs: {k: v for k, v in pairs if _is_kept_field(k, image_field)}
    )
    whitespace = re.compile(r"\s*")
    records: list[dict] = []
    position = whitespace.match(text, 0).end()
    while position < len(text):
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: cannot decode record {len(records) + 1}: {error}") from None
        for item in record if isinstance(record, list) else [record]:
            if not isinstance(item, dict):
                raise ValueError(f"{path}: record {len(records) + 1} is not a JSON object")
            records.append(item)
        position = whitespace.match(text, position).end()
    return pd.DataFrame.from_records(records)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_logits_json(path: str | Path, image_field: str = LOGITS_JSON_IMAGE_FIELD) -> pd.DataFrame:
    """Decode a JSON array of ``{image_field, "logits": {word: logit}}`` records into a frame
    with the image field and one ``logit_<word>`` column per word (word stripped of surrounding
    whitespace, lower-cased).

    Every other field of a record (``pred_mos``, ...) is dropped inside the decoder. (A JSON
    object whose values are all numbers is a ``logits`` mapping and kept whole; a record has a
    string image field, so it is always filtered.)
    """
    kept = {image_field, LOGITS_JSON_FIELD}

    def keep(pairs: list[tuple[str, object]]) -> dict:
        if pairs and all(_is_number(v) for _, v in pairs) and image_field not in dict(pairs):
            return dict(pairs)  # a logits mapping
        return {k: v for k, v in pairs if k in kept}

    try:
        records = json.loads(Path(path).read_text(encoding="utf-8-sig"), object_pairs_hook=keep)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: a logits_json file must hold one JSON array of records")
    rows: list[dict] = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or image_field not in record:
            raise ValueError(f"{path}: record {number} has no {image_field!r} field")
        logits = record.get(LOGITS_JSON_FIELD)
        if not isinstance(logits, dict):
            raise ValueError(f"{path}: record {number} has no {LOGITS_JSON_FIELD!r} object")
        row = {image_field: record[image_field]}
        for word, value in logits.items():
            column = LOGIT_PREFIX + word.strip().lower()
            if column in row:
                raise ValueError(
                    f"{path}: record {number} has the word {word.strip().lower()!r} twice "
                    "(after stripping spaces and lower-casing)"
                )
            row[column] = value
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def read_table(path: str | Path, image_field: str) -> pd.DataFrame:
    """Read only ``image_field`` and ``logit_*`` columns of a CSV or Parquet file."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        return pd.read_parquet(path, columns=[n for n in names if _is_kept_field(n, image_field)])
    if path.suffix.lower() == ".csv":
        return pd.read_csv(
            path, usecols=lambda name: _is_kept_field(name, image_field), encoding="utf-8-sig"
        )
    raise ValueError(f"{path}: a table import must be .csv or .parquet")


def _guess_format(path: Path) -> str:
    return "table" if path.suffix.lower() in (".csv", ".parquet") else "qbench"


def normalise_image_key(key: str) -> str:
    """An image key as written on any system: Windows separators become ``/``, a leading
    ``./`` is dropped (``images\\x.jpg`` and ``./images/x.jpg`` both become ``images/x.jpg``)."""
    key = key.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def _image_key_lookup(keys: Sequence[str], paths: Sequence[str]) -> list[str | None]:
    """For each path, the longest key that is a trailing part of it (None if there is none)."""
    known = set(keys)
    matches: list[str | None] = []
    for path in paths:
        parts = PurePath(path).parts
        suffixes = (PurePath(*parts[start:]).as_posix() for start in range(len(parts)))
        matches.append(next((s for s in suffixes if s in known), None))
    return matches


class ImportedTeacher:
    """A point-only TeacherBackend reading judgments from a file (see the module docstring).

    Args:
        levels: the configured level words (matched case-insensitively to ``logit_<word>``).
        path: the file to import.
        format: one of :data:`FORMATS`; guessed from the extension when omitted (.csv/.parquet:
            ``table``, else ``qbench``).
        image_column: the field naming the image (default ``img_path`` for qbench,
            ``image_id`` for tables, ``filename`` for logits_json).
    """

    name = "import"
    point_only = True

    def __init__(
        self,
        levels: Levels,
        path: str,
        format: str | None = None,
        image_column: str | None = None,
    ) -> None:
        self.levels = levels
        self.path = Path(path)
        self.format = format or _guess_format(self.path)
        if self.format not in FORMATS:
            raise ValueError(f"unknown import format {self.format!r}; use one of {FORMATS}")
        self.image_column = image_column or DEFAULT_IMAGE_FIELDS[self.format]
        reader = {"qbench": read_qbench_json, "table": read_table, "logits_json": read_logits_json}
        frame = reader[self.format](self.path, self.image_column)
        self.logits, self.ignored_words = self._select_levels(frame)

    def _select_levels(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """Index by image, keep one column per configured word in level order."""
        if self.image_column not in frame.columns:
            raise ValueError(f"{self.path}: no image field {self.image_column!r}")
        by_word = {
            c[len(LOGIT_PREFIX) :].lower(): c for c in frame.columns if c.startswith(LOGIT_PREFIX)
        }
        for word in self.levels.words:
            if word.lower() not in by_word:
                where = (
                    f"no {word.lower()!r} key (leading space allowed) in any record's "
                    f"{LOGITS_JSON_FIELD!r}"
                    if self.format == "logits_json"
                    else f"no 'logit_{word.lower()}' field"
                )
                raise ValueError(
                    f"{self.path}: level word {word!r} has {where} (the file has words "
                    f"{sorted(by_word)})"
                )
        configured = {w.lower() for w in self.levels.words}
        ignored = sorted(set(by_word) - configured)
        if ignored:
            log.warning("%s: ignoring level words %s (not configured)", self.path, ignored)
        images = frame[self.image_column].astype(str).map(normalise_image_key)
        duplicated = images[images.duplicated()]
        if len(duplicated):
            raise ValueError(f"{self.path}: images judged twice: {list(duplicated[:5])}")
        columns = [by_word[w.lower()] for w in self.levels.words]
        logits = frame[columns].apply(pd.to_numeric, errors="coerce").astype(np.float64)
        logits.columns = list(self.levels.words)
        logits.index = pd.Index(images, name="image")
        return logits, ignored

    def point_logliks(self, paths: Sequence[str]) -> np.ndarray:
        """(n, K) imported logits for the images at ``paths``; errors name missing images."""
        keys = _image_key_lookup(list(self.logits.index), [str(p) for p in paths])
        missing = [str(p) for p, key in zip(paths, keys, strict=True) if key is None]
        if missing:
            raise ValueError(
                f"{self.path}: {len(missing)} images have no judgment in the file, e.g. "
                f"{missing[:3]}; the file's image keys look like {list(self.logits.index[:3])} "
                f"(a key matches a path that ends with it)"
            )
        values = self.logits.loc[keys].to_numpy()
        if bad := first_non_finite(values):
            row, col, count = bad
            raise TeacherOutputError(
                f"{self.path}: missing or non-finite logit for image {keys[row]!r}, level word "
                f"{self.levels.words[col]!r} ({count} such values)"
            )
        return values

    def pair_logprobs(self, paths_a: Sequence[str], paths_b: Sequence[str]) -> np.ndarray:
        raise PointOnlyTeacherError(
            f"the imported teacher {self.path} has point-wise judgments only; no pairwise "
            "answers can be produced (the pipeline runs point-only)"
        )

    def content_sha256(self) -> str:
        """sha256 of the judgments actually used (image keys + logits of the configured words)."""
        payload = self.logits.to_csv(float_format="%.17g").encode()
        return hashlib.sha256(payload).hexdigest()

    def provenance(self) -> dict:
        return {
            "backend": self.name,
            "point_only": True,
            "source_path": str(self.path),
            "source_format": self.format,
            "source_content_sha256": self.content_sha256(),
            "image_column": self.image_column,
            "logprob_mode": "imported logits of the level words (softmax over level words)",
            "ignored_words": self.ignored_words,
            "n_records": len(self.logits),
        }


class ImportedEnsemble:
    """A point-only TeacherBackend mixing the level distributions of several imported files
    (see the module docstring). Takes the :class:`ImportedTeacher` arguments with ``path`` a
    list of files (each read with the same ``format``/``image_column`` options)."""

    name = "import"
    point_only = True

    def __init__(
        self,
        levels: Levels,
        path: Sequence[str],
        format: str | None = None,
        image_column: str | None = None,
    ) -> None:
        if len(path) < 2:
            raise ValueError(f"an import ensemble needs at least two files, got {list(path)}")
        self.levels = levels
        self.members = [ImportedTeacher(levels, member, format, image_column) for member in path]

    def point_logliks(self, paths: Sequence[str]) -> np.ndarray:
        """(n, K) log of the members' mean level probabilities for the images at ``paths``."""
        probabilities = [level_probabilities(m.point_logliks(paths)) for m in self.members]
        return np.log(np.mean(probabilities, axis=0))

    def pair_logprobs(self, paths_a: Sequence[str], paths_b: Sequence[str]) -> np.ndarray:
        return self.members[0].pair_logprobs(paths_a, paths_b)

    def provenance(self) -> dict:
        return {
            "backend": self.name,
            "point_only": True,
            "ensemble": "mean of the members' level probabilities",
            "members": [member.provenance() for member in self.members],
        }

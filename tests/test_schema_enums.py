"""One list per choice: every enum of the config schema is the list the code accepts, so a value
the schema accepts never fails later at run time (and the reverse)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from leaf.datasets import ADAPTERS
from leaf.student.features import FEATURE_ENGINES, POOLING_MODES
from leaf.student.stages import STUDENT_MODES
from leaf.tables import PLCC_KINDS
from leaf.teacher.factory import BACKENDS
from leaf.teacher.import_backend import FORMATS
from leaf.teacher.presets import PRESETS

SCHEMA = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text()
)
TEACHER = SCHEMA["$defs"]["teacher"]["properties"]
STUDENT = SCHEMA["properties"]["student"]["properties"]
CASES = {
    "teacher.backend": (TEACHER["backend"], BACKENDS),
    "teacher.import.format": (TEACHER["import"]["properties"]["format"], FORMATS),
    "teacher.vllm.preset": (TEACHER["vllm"]["properties"]["preset"], PRESETS),
    "datasets.<name>.adapter": (
        SCHEMA["properties"]["datasets"]["additionalProperties"]["properties"]["adapter"],
        ADAPTERS,
    ),
    "tables.plcc": (SCHEMA["properties"]["tables"]["properties"]["plcc"], PLCC_KINDS),
    "student.pooling": (STUDENT["pooling"], POOLING_MODES),
    "student.feature_engine": (STUDENT["feature_engine"], FEATURE_ENGINES),
    "student.mode": (STUDENT["mode"], STUDENT_MODES),
}


@pytest.mark.parametrize("key", sorted(CASES))
def test_schema_enum_is_the_code_list(key):
    entry, accepted = CASES[key]
    assert {value for value in entry["enum"] if value is not None} == set(accepted), key

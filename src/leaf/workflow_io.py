"""Glue between Snakemake's ``script:`` directive and the package's step functions.

Every ``workflow/scripts/*.py`` is two lines: import a step function and hand it to
:func:`run_step`. The step function takes keyword arguments named after the rule's named
``input``, ``output`` and ``params`` entries (plus ``threads`` if it asks for it), so it can be
called directly in tests without Snakemake.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("leaf")


def step_kwargs(smk: Any, fn: Callable) -> dict[str, Any]:
    """Merge the rule's named input/output/params into one keyword dict for ``fn``."""
    kwargs: dict[str, Any] = {}
    for section in ("input", "output", "params"):
        for name, value in getattr(smk, section).items():
            if name in kwargs:
                raise ValueError(
                    f"rule {smk.rule}: the name {name!r} is used twice in its {section}"
                )
            kwargs[name] = value
    if "threads" in inspect.signature(fn).parameters:
        kwargs["threads"] = smk.threads
    return kwargs


def configure_logging(stream=None) -> None:
    """Log INFO and above, with timestamps, to ``stream`` (stderr by default)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def run_step(smk: Any, fn: Callable, **extra: Any) -> Any:
    """Run ``fn`` for a Snakemake rule, with logs and progress bars going to the rule's log file.
    ``extra`` keyword arguments are passed on beside the rule's named input/output/params."""
    kwargs = {**step_kwargs(smk, fn), **extra}
    log_path = Path(smk.log[0]) if len(smk.log) else None
    if log_path is None:
        configure_logging()
        return fn(**kwargs)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as log_file, contextlib.redirect_stderr(log_file):
        configure_logging(log_file)
        log.info("rule %s: %s(%s)", smk.rule, fn.__name__, ", ".join(sorted(kwargs)))
        try:
            return fn(**kwargs)
        except Exception:
            log.exception("rule %s failed", smk.rule)
            raise

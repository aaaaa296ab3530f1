"""Glue between Snakemake's ``script:`` directive and the package's step functions.

Every ``workflow/scripts/*.py`` is two lines: import a step function and hand it to
:func:`run_step`. The step function takes keyword arguments named after the rule's named
``input``, ``output`` and ``params`` entries (plus ``threads`` if it asks for it), so it can be
called directly in tests without Snakemake.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("leaf")


# A step function, or its "module:function" reference (imported only where the step runs).
Step = Callable[..., Any] | str


def resolve(step: Step) -> Callable[..., Any]:
    """The step function of ``step`` (a callable as is, "module:function" imported)."""
    if callable(step):
        return step
    module_name, _, function_name = step.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def step_kwargs(smk: Any) -> dict[str, Any]:
    """Merge the rule's named input/output/params into one keyword dict (``threads`` too; it is
    dropped again for step functions without that parameter, see :func:`run_logged`)."""
    kwargs: dict[str, Any] = {}
    for section in ("input", "output", "params"):
        for name, value in getattr(smk, section).items():
            if name in kwargs:
                raise ValueError(
                    f"rule {smk.rule}: the name {name!r} is used twice in its {section}"
                )
            kwargs[name] = value
    if "threads" in kwargs:
        raise ValueError(f"rule {smk.rule}: 'threads' is reserved for the rule's threads")
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


def run_logged(step: Step, kwargs: dict[str, Any], log_path: str | None, rule: str) -> Any:
    """``step(**kwargs)`` with logging and progress bars (stderr) going to ``log_path`` (None: to
    stderr); a failure is logged with its traceback and raised again. ``threads`` is passed only
    to a step function that has that parameter."""
    fn = resolve(step)
    if "threads" not in inspect.signature(fn).parameters:
        kwargs = {key: value for key, value in kwargs.items() if key != "threads"}
    if log_path is None:
        configure_logging()
        return fn(**kwargs)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as log_file, contextlib.redirect_stderr(log_file):
        configure_logging(log_file)
        log.info("rule %s: %s(%s)", rule, fn.__name__, ", ".join(sorted(kwargs)))
        try:
            return fn(**kwargs)
        except Exception:
            log.exception("rule %s failed", rule)
            raise


def run_step(
    smk: Any, step: Step, warm: bool | Callable[[dict], bool] = False, **extra: Any
) -> Any:
    """Run ``step`` (a function or its "module:function" reference) for a Snakemake rule, with
    logs and progress bars going to the rule's log file. ``extra`` keyword arguments are passed
    on beside the rule's named input/output/params.

    ``warm`` (a bool, or a predicate of the keyword arguments) lets a light step run in the warm
    worker (:mod:`leaf.warm_worker`: no per-job imports of torch, pandas, scipy) when that is
    enabled; the step then returns None. A string reference keeps the job's own process light:
    the step's module is imported by whoever runs it.
    """
    kwargs = {**step_kwargs(smk), **extra}
    log_path = str(smk.log[0]) if len(smk.log) else None
    if callable(warm):
        warm = warm(kwargs)
    if warm:
        from leaf import warm_worker

        if warm_worker.enabled():
            call = {"step": step, "kwargs": kwargs, "log_path": log_path, "rule": smk.rule}
            return warm_worker.run(run_logged, call, f"rule {smk.rule}")
    return run_logged(step, kwargs, log_path, smk.rule)

"""What the result targets are made of: student runs, the files they write, table rows.

A LEAF student run is identified by (dataset, backbone, teacher, distill variant, seed, ratio):

* ``teacher``: the main ``teacher`` section or one of ``extra_teachers`` (table 4's grid),
  named by ``name`` and stored under its hash (:func:`leaf.teacher.factory.teacher_hash`);
* ``distill variant``: which stage-1 terms are on, e.g. ``point-pair-conf`` (point term, pair
  term, pairs weighted by the confidence ω); the main runs use the flags of the ``distill``
  section, table 3's ablation rows use the others (:data:`ABLATION_ROWS`);
* ``ratio`` 0 is the label-free (distilled) student, ratio > 0 the calibrated one.

Every path of a run (results, shared teacher cache, logs, benchmarks) is defined once, in
:mod:`leaf.layout`; :class:`Plan` fills its patterns for this config (``results_dir``,
``teacher_cache``, default ``<results_dir>/teacher_cache``) and the rules take their outputs,
logs and benchmarks from it (:meth:`Plan.result_pattern`, :meth:`Plan.cache_pattern`,
:meth:`Plan.log`, :meth:`Plan.benchmark`).

:class:`Plan` turns the config into the (metrics file, row description) lists of every table and
figure; the rules only pass them on. A table or figure requested without its ``tables`` entry
raises :class:`leaf.config_checks.ConfigError` naming the missing key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from leaf.config_checks import (
    PAPER_FIGURES,
    PAPER_TABLES,
    ConfigError,
    resolve_table_aliases,
    teacher_sections,
)
from leaf.layout import CACHE_FILES, RESULT_FILES, fill, job_file
from leaf.teacher.cache_keys import DatasetKeys, dataset_keys
from leaf.teacher.factory import speed_options, teacher_hash, teacher_model

# Stage-1 flag -> the term's name in a variant (ω-weighting only matters with the pair term).
VARIANT_TERMS = (("use_point", "point"), ("use_pair", "pair"), ("use_omega", "conf"))
# Table 3: row name -> stage-1 flags (plus the CFT-only row, stage 2 alone, first).
ABLATION_ROWS = (
    ("point", {"use_point": True, "use_pair": False, "use_omega": False}),
    ("point+pair", {"use_point": True, "use_pair": True, "use_omega": False}),
    ("pair+confidence", {"use_point": False, "use_pair": True, "use_omega": True}),
    ("point+pair+confidence", {"use_point": True, "use_pair": True, "use_omega": True}),
)
CFT_ONLY = "CFT-only"
TEACHER_ZERO_SHOT = "teacher zero-shot"
# `tables` key -> output file stem (the paper's number) of the tables and figures that `rule all`
# builds when their entry is configured (not null), and the inverse for the rule's wildcard.
TARGET_FILES = {**PAPER_TABLES, **PAPER_FIGURES}
TABLE_KEYS = {number: key for key, number in PAPER_TABLES.items()}
# Benchmark comparisons (AIGC, UGC): the tables whose first dataset the training curves show.
COMPARISONS = ("aigc_comparison", "ugc_comparison")
# Backends whose judgments have no pair-wise part.
POINT_ONLY_BACKENDS = ("import",)


def variant_name(flags: dict) -> str:
    """``{"use_point": 1, "use_pair": 1, "use_omega": 0}`` -> ``"point-pair"``."""
    use_point, use_pair = bool(flags.get("use_point", True)), bool(flags.get("use_pair", True))
    if not (use_point or use_pair):
        raise ConfigError("distill: use_point and use_pair are both false; nothing to distill")
    terms = [name for flag, name in VARIANT_TERMS[:2] if bool(flags.get(flag, True))]
    if use_pair and bool(flags.get("use_omega", True)):
        terms.append("conf")
    return "-".join(terms)


def variant_flags(name: str) -> dict[str, bool]:
    """Inverse of :func:`variant_name`: ``"pair-conf"`` -> the three flags."""
    terms = name.split("-")
    flags = {flag: term in terms for flag, term in VARIANT_TERMS}
    known = set(terms) <= {term for _, term in VARIANT_TERMS}
    if not (known and (flags["use_point"] or flags["use_pair"]) and variant_name(flags) == name):
        raise ValueError(f"not a distill variant: {name!r} (e.g. point, point-pair-conf)")
    return flags


def ratio_label(ratio: float | str) -> str:
    """The ratio as it appears in file names: 0.1 -> '0.1', 0.0 -> '0', 1.0 -> '1'."""
    return f"{float(ratio):g}"


def run_eval_file(results, dataset, backbone, teacher_hash, variant, seed, ratio) -> str:
    """The test metrics JSON of one LEAF run under the results folder ``results`` (written by
    rule ``evaluate``, :func:`leaf.student.steps.write_evaluation`)."""
    fields = {"dataset": dataset, "backbone": backbone, "teacher_hash": teacher_hash}
    fields |= {"variant": variant, "seed": seed, "ratio": ratio_label(ratio)}
    return f"{results}/{RESULT_FILES['eval_metrics'].format(**fields)}"


def percent(ratio: float | str) -> str:
    """A MOS ratio as a percentage label, e.g. 0.05 -> '5'."""
    return f"{float(ratio) * 100:g}"


def setting_name(ratio: float | str) -> str:
    """'label-free' for ratio 0, else e.g. '10% MOS'."""
    return "label-free" if float(ratio) == 0 else f"{percent(ratio)}% MOS"


def merged_config(configfiles: Sequence[str | Path]) -> dict:
    """The config Snakemake sees for ``--configfile A B ...``: later files merge into earlier,
    then old ``tables`` keys are renamed (:func:`leaf.config_checks.resolve_table_aliases`)."""
    from snakemake.utils import update_config

    config: dict = {}
    for path in configfiles:
        update_config(config, yaml.safe_load(Path(path).read_text()) or {})
    resolve_table_aliases(config)
    return config


@dataclass(frozen=True)
class Teacher:
    """A configured teacher: its display name, config section and cache hash."""

    name: str
    config: dict
    hash: str

    @property
    def has_pairs(self) -> bool:
        return self.config["backend"] not in POINT_ONLY_BACKENDS

    @property
    def description(self) -> dict:
        """Name, backend and model (:func:`leaf.teacher.factory.teacher_model`): what a deployed
        student records of its teacher, for its model card."""
        return {
            "name": self.name,
            "backend": self.config["backend"],
            "model": teacher_model(self.config),
        }


def configured_teachers(config: dict) -> dict[str, Teacher]:
    """Name -> :class:`Teacher`: the main ``teacher`` first, then ``extra_teachers``."""
    sections = {}
    for key, name, section in teacher_sections(config):
        if name in sections:
            raise ConfigError(f"{key}: the name is already used by `teacher`")
        sections[name] = (key, section)
    teachers, seen = {}, {}
    for name, (key, section) in sections.items():
        digest = teacher_hash(section)
        if digest in seen:
            raise ConfigError(
                f"{key} judges exactly like {seen[digest]} (same teacher hash {digest}); "
                "list each teacher once"
            )
        seen[digest] = key
        teachers[name] = Teacher(name, section, digest)
    return teachers


def teacher_with_hash(teachers: dict[str, Teacher], digest: str) -> Teacher:
    """The teacher of ``teachers`` (:func:`configured_teachers`) whose cache hash is ``digest``."""
    for teacher in teachers.values():
        if teacher.hash == digest:
            return teacher
    raise KeyError(f"no configured teacher has the hash {digest!r}")


def teacher_speed_options(config: dict, digest: str) -> dict:
    """The speed-only backend options (:func:`leaf.teacher.factory.speed_options`) of the
    configured teacher whose hash is ``digest``."""
    return speed_options(teacher_with_hash(configured_teachers(config), digest).config)


class Plan:
    """The runs and files behind every configured table and figure (see the module doc)."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self.results = config["results_dir"]
        # The shared teacher cache; null keeps it inside this results folder.
        self.teacher_cache = config.get("teacher_cache") or f"{self.results}/teacher_cache"
        # Entries set to null (e.g. to drop a demo entry merged from config/config.yaml) are off.
        self.tables = {k: v for k, v in (config.get("tables") or {}).items() if v is not None}
        self.teachers = configured_teachers(config)
        self.teacher = next(iter(self.teachers.values()))
        self.backbone = config["student"]["backbone"]
        self.variant = variant_name(config["distill"])
        self.seeds = [int(seed) for seed in config["seeds"]]
        self.ratios = [ratio_label(r) for r in config["calibration"]["ratios"]]
        self.plcc_kind = self.tables.get("plcc", "raw")
        self._cache_keys: dict[str, DatasetKeys] = {}

    # --- teachers -------------------------------------------------------------------------
    def teacher_by_hash(self, digest: str) -> Teacher:
        return teacher_with_hash(self.teachers, digest)

    def teacher_named(self, name: str, key: str) -> Teacher:
        if name not in self.teachers:
            raise ConfigError(
                f"{key} names the teacher {name!r}; configured: {list(self.teachers)}"
            )
        return self.teachers[name]

    # --- files ----------------------------------------------------------------------------
    def cache_pattern(self, name: str) -> str:
        """The path pattern (Snakemake wildcards) of one kind of :data:`leaf.layout.CACHE_FILES`
        (the shared teacher cache)."""
        return f"{self.teacher_cache}/{CACHE_FILES[name]}"

    def cache_file(self, name: str, **fields) -> str:
        """One file of :data:`leaf.layout.CACHE_FILES`, e.g. ``cache_file("points_shard",
        images_key=..., teacher_hash=..., shard=0, n_shards=2)``."""
        return self.cache_pattern(name).format(**fields)

    def result_pattern(self, name: str, **fields) -> str:
        """The path pattern (Snakemake wildcards) of one kind of :data:`leaf.layout.RESULT_FILES`,
        with ``fields`` filled in (:func:`leaf.layout.fill`)."""
        return f"{self.results}/{fill(RESULT_FILES[name], **fields)}"

    def result_file(self, name: str, **fields) -> str:
        """One file of :data:`leaf.layout.RESULT_FILES`; KeyError when a field is missing."""
        return f"{self.results}/{RESULT_FILES[name].format(**fields)}"

    def log(self, rule: str, **fields) -> str:
        """The log path pattern of ``rule``'s jobs (:data:`leaf.layout.JOB_FILES`)."""
        return f"{self.results}/{job_file('log', rule, **fields)}"

    def benchmark(self, rule: str, **fields) -> str:
        """The benchmark path pattern of ``rule``'s jobs (:data:`leaf.layout.JOB_FILES`)."""
        return f"{self.results}/{job_file('benchmark', rule, **fields)}"

    def reported_datasets(self) -> list[str]:
        """The datasets a configured table or figure reports, in the order they are named."""
        used = []
        for target in TARGET_FILES:
            spec = self.tables.get(target) or {}
            used += spec.get("datasets", []) + ([spec["dataset"]] if "dataset" in spec else [])
        return list(dict.fromkeys(used))

    def datasets(self) -> list[str]:
        """Every configured dataset, the :meth:`reported_datasets` first."""
        return list(dict.fromkeys([*self.reported_datasets(), *self.config["datasets"]]))

    # --- shared teacher cache keys ----------------------------------------------------------
    def dataset_split(self, dataset: str) -> dict:
        """The top-level ``split`` section with the dataset's own ``split`` overrides."""
        return {**self.config["split"], **self.config["datasets"][dataset].get("split", {})}

    def key_settings(self, dataset: str) -> dict:
        """The keyword arguments of :func:`leaf.teacher.cache_keys.dataset_keys` for a configured
        dataset: its files, split and pair settings, the demo's generator settings, and the digest
        memo folder ``{teacher_cache}/.sha256``."""
        section = self.config["datasets"][dataset]
        return {
            "dataset": {
                "adapter": section["adapter"],
                "root": section["root"],
                "options": section.get("options", {}),
            },
            "split": self.dataset_split(dataset),
            "pairs": {
                "per_image": self.config["pairs"]["per_image"],
                "seed": self.config["pairs"]["seed"],
            },
            "generator": self.config.get("demo") if section["adapter"] == "demo" else None,
            "memo_dir": f"{self.teacher_cache}/.sha256",
        }

    def cache_keys(self, dataset: str) -> DatasetKeys:
        """The shared-cache keys of a configured dataset, computed once per :class:`Plan`."""
        if dataset not in self._cache_keys:
            self._cache_keys[dataset] = dataset_keys(**self.key_settings(dataset))
        return self._cache_keys[dataset]

    def keyed_dataset(self, images_key: str, pairs_key: str | None = None) -> str:
        """The first configured dataset (those the tables report first) with these cache keys:
        where the images of a key are read from in this run. Raises KeyError if none has."""
        for dataset in self.datasets():
            keys = self.cache_keys(dataset)
            if keys.images_key == images_key and pairs_key in (None, keys.pairs_key):
                return dataset
        raise KeyError(
            f"no configured dataset has the images key {images_key}"
            + (f" and the pairs key {pairs_key}" if pairs_key else "")
        )

    def student_dir(self, dataset: str, backbone: str, teacher_hash: str, variant: str) -> str:
        """The folder of a LEAF run's models and histories (every seed and ratio)."""
        model = self.student_model(dataset, backbone, teacher_hash, variant, 0, 0)
        return str(PurePosixPath(model).parent)

    def student_model(
        self, dataset: str, backbone: str, teacher_hash: str, variant: str, seed, ratio
    ) -> str:
        """The distilled model for ratio 0 (label-free), else the calibrated one."""
        return self.student_file("model", dataset, backbone, teacher_hash, variant, seed, ratio)

    def student_file(
        self, kind: str, dataset: str, backbone: str, teacher_hash: str, variant: str, seed, ratio
    ) -> str:
        """The ``model`` or ``history`` of a LEAF run: distilled for ratio 0, else calibrated."""
        fields = {"dataset": dataset, "backbone": backbone, "teacher_hash": teacher_hash}
        fields |= {"variant": variant, "seed": seed}
        if float(ratio) == 0:
            return self.result_file(f"distilled_{kind}", **fields)
        return self.result_file(f"calibrated_{kind}", ratio=ratio_label(ratio), **fields)

    def eval_file(self, dataset, backbone, teacher_hash, variant, seed, ratio) -> str:
        return run_eval_file(self.results, dataset, backbone, teacher_hash, variant, seed, ratio)

    def cft_eval_file(self, dataset: str, backbone: str, seed, ratio) -> str:
        fields = {"dataset": dataset, "backbone": backbone, "seed": seed}
        return self.result_file("cft_eval_metrics", ratio=ratio_label(ratio), **fields)

    def teacher_eval_file(self, dataset: str, teacher: Teacher) -> str:
        return self.result_file("teacher_eval", dataset=dataset, teacher_hash=teacher.hash)

    # --- rows: (metrics file, description) --------------------------------------------------
    def leaf_rows(
        self,
        dataset: str,
        ratios,
        teacher: Teacher | None = None,
        backbone: str | None = None,
        variant: str | None = None,
        setting: str | None = None,
    ) -> list[tuple[str, dict]]:
        """One row per (ratio, seed) of LEAF runs; ``setting`` overrides the ratio's name."""
        teacher, backbone = teacher or self.teacher, backbone or self.backbone
        variant = variant or self.variant
        return [
            (
                self.eval_file(dataset, backbone, teacher.hash, variant, seed, ratio),
                {
                    "dataset": dataset,
                    "teacher": teacher.name,
                    "backbone": backbone,
                    "setting": setting or setting_name(ratio),
                    "ratio": float(ratio),
                    "seed": seed,
                },
            )
            for ratio in ratios
            for seed in self.seeds
        ]

    def cft_rows(self, dataset: str, ratios, backbone: str | None = None, setting=None):
        """One row per (ratio > 0, seed) of the CFT-only baseline (stage 2 alone)."""
        backbone = backbone or self.backbone
        return [
            (
                self.cft_eval_file(dataset, backbone, seed, ratio),
                {
                    "dataset": dataset,
                    "teacher": "",
                    "backbone": backbone,
                    "setting": setting or f"{CFT_ONLY} {setting_name(ratio)}",
                    "ratio": float(ratio),
                    "seed": seed,
                },
            )
            for ratio in ratios
            if float(ratio) > 0
            for seed in self.seeds
        ]

    def teacher_row(self, dataset: str, teacher: Teacher | None = None) -> tuple[str, dict]:
        teacher = teacher or self.teacher
        return (
            self.teacher_eval_file(dataset, teacher),
            {
                "dataset": dataset,
                "teacher": teacher.name,
                "backbone": "",
                "setting": TEACHER_ZERO_SHOT,
                "ratio": float("nan"),
                "seed": -1,
            },
        )

    # --- tables and figures -----------------------------------------------------------------
    def spec(self, target: str) -> dict:
        """The ``tables.<target>`` entry, or a ConfigError saying how to configure it."""
        if target not in self.tables:
            raise ConfigError(
                f"{self.results}/{TARGET_FILES[target]} was requested but `tables.{target}` is "
                f"not in the config (configured: {sorted(k for k in self.tables if k != 'plcc')});"
                " see config/config.yaml for its keys"
            )
        return self.tables[target]

    def dataset_of(self, target: str, spec: dict) -> str:
        dataset = spec["dataset"]
        if dataset not in self.config["datasets"]:
            raise ConfigError(f"tables.{target}.dataset: {dataset!r} is not under `datasets`")
        return dataset

    def table_rows(self, table: str) -> list[tuple[str, dict]]:
        """Every (metrics file, row description) of the table whose ``tables`` key is
        ``table`` (:data:`leaf.config_checks.PAPER_TABLES`)."""
        builders = {
            "aigc_comparison": self._benchmark_table,
            "ugc_comparison": self._benchmark_table,
            "stage1_ablation": self._ablation_table,
            "teacher_backbone_grid": self._grid_table,
        }
        if table not in builders:
            raise ConfigError(f"unknown table {table!r}; tables are {sorted(builders)}")
        return builders[table](table, self.spec(table))

    def _benchmark_table(self, table: str, spec: dict) -> list[tuple[str, dict]]:
        """Tables 1/2 (AIGC, UGC comparison): per dataset the teacher's zero-shot row, LEAF at
        every ratio, CFT-only."""
        rows = []
        for dataset in spec["datasets"]:
            rows.append(self.teacher_row(dataset))
            rows += self.leaf_rows(dataset, self.ratios)
            if spec.get("cft_only", True):
                rows += self.cft_rows(dataset, self.ratios)
        return rows

    def _ablation_table(self, table: str, spec: dict) -> list[tuple[str, dict]]:
        """Table 3 (stage-1 ablation): CFT-only and the four stage-1 variants, at one ratio."""
        dataset, ratio = self.dataset_of(table, spec), spec["ratio"]
        if not self.teacher.has_pairs:
            raise ConfigError(
                f"tables.{table}: the ablation needs pair judgments, but the teacher backend "
                f"{self.teacher.config['backend']!r} is point-only"
            )
        if float(ratio) <= 0:
            raise ConfigError(f"tables.{table}.ratio must be > 0 (the ablation is calibrated)")
        rows = self.cft_rows(dataset, [ratio], setting=CFT_ONLY)
        for name, flags in ABLATION_ROWS:
            rows += self.leaf_rows(dataset, [ratio], variant=variant_name(flags), setting=name)
        return rows

    def _grid_table(self, table: str, spec: dict) -> list[tuple[str, dict]]:
        """Table 4 (teacher x backbone grid): every configured teacher x backbone, at each
        ratio of the entry."""
        dataset = self.dataset_of(table, spec)
        names = spec.get("teachers") or list(self.teachers)
        teachers = [self.teacher_named(name, f"tables.{table}.teachers") for name in names]
        rows = []
        for teacher in teachers:
            rows.append(self.teacher_row(dataset, teacher))
            for backbone in spec["backbones"]:
                rows += self.leaf_rows(dataset, spec["ratios"], teacher, backbone)
        return rows

    def fig4_rows(self) -> tuple[str, list[tuple[str, dict]], list[tuple[str, dict]]]:
        """(dataset, LEAF rows, CFT-only rows) over the ratios of ``tables.mos_ratio_curve``
        (figure 4)."""
        spec = self.spec("mos_ratio_curve")
        dataset = self.dataset_of("mos_ratio_curve", spec)
        return (
            dataset,
            self.leaf_rows(dataset, spec["ratios"]),
            self.cft_rows(dataset, spec["ratios"]),
        )

    def fig2_spec(self) -> dict:
        """dataset, seed and ratio of ``tables.teacher_vs_mos`` (figure 2; seed: the first of
        ``seeds`` by default)."""
        spec = self.spec("teacher_vs_mos")
        ratio = float(spec.get("ratio", 0.1))
        if ratio <= 0:
            raise ConfigError(
                "tables.teacher_vs_mos.ratio must be > 0 (the calibration's MOS share)"
            )
        return {
            "dataset": self.dataset_of("teacher_vs_mos", spec),
            "seed": int(spec.get("seed", self.seeds[0])),
            "ratio": ratio,
        }

    def training_histories(self) -> tuple[str, list[tuple[str, dict]]]:
        """(dataset, [(history CSV, run)]) of the main LEAF runs of the first dataset of the
        AIGC comparison (the UGC one when only that is configured): stage 1 per seed and stage 2
        per (seed, ratio > 0), for ``training_curves.png``."""
        table = next((key for key in COMPARISONS if key in self.tables), COMPARISONS[0])
        dataset = self.spec(table)["datasets"][0]
        runs = []
        for ratio in ["0", *[r for r in self.ratios if float(r) > 0]]:
            for seed in self.seeds:
                history = self.student_file(
                    "history", dataset, self.backbone, self.teacher.hash, self.variant, seed, ratio
                )
                stage = "distill" if float(ratio) == 0 else "calibrate"
                runs.append((history, {"stage": stage, "seed": seed, "ratio": float(ratio)}))
        return dataset, runs

    def all_ratios(self) -> list[float]:
        """Every MOS ratio a configured target uses (the subsets rule draws them all)."""
        ratios = {float(r) for r in self.ratios}
        for key in ("mos_ratio_curve", "teacher_backbone_grid"):
            ratios |= {float(r) for r in self.tables.get(key, {}).get("ratios", [])}
        if "stage1_ablation" in self.tables:
            ratios.add(float(self.tables["stage1_ablation"]["ratio"]))
        if "teacher_vs_mos" in self.tables:
            ratios.add(self.fig2_spec()["ratio"])
        return sorted(ratios)

    def configured_targets(self) -> list[str]:
        """Every table and figure that has a (non-null) ``tables`` entry, the training curves
        of the main runs (when a comparison table, AIGC or UGC, is configured) and the deploy
        selection of every benchmark dataset (when a ratio > 0 is trained)."""
        tables = [n for k, n in PAPER_TABLES.items() if k in self.tables]
        targets = [self.result_file("table", table=table) for table in tables]
        targets += [
            self.result_file(f"{n}_png") for k, n in PAPER_FIGURES.items() if k in self.tables
        ]
        if any(key in self.tables for key in COMPARISONS):
            targets.append(self.result_file("training_curves_png"))
        if any(float(r) > 0 for r in self.ratios):
            self.deploy_ratio()  # refuses a deploy.ratio whose runs are not trained
            targets += [self.deploy_selection_file(d) for d in self.benchmark_datasets()]
        return targets

    # --- deployment -----------------------------------------------------------------------
    def benchmark_datasets(self) -> list[str]:
        """The datasets of the comparison tables (AIGC, UGC: table1, table2), in order, each
        once."""
        names = [d for t in COMPARISONS for d in self.tables.get(t, {}).get("datasets", [])]
        return list(dict.fromkeys(names))

    def deploy_ratio(self) -> float:
        """The MOS ratio whose calibrated runs rule ``deploy_best`` compares: ``deploy.ratio``,
        or when that is null the largest ratio > 0 of ``calibration.ratios``. Runs at different
        ratios are not compared (their select parts differ in size). Raises
        :class:`~leaf.config_checks.ConfigError` when the ratio is not one of
        ``calibration.ratios`` (its runs are not trained) or none is > 0."""
        trained = [float(r) for r in self.ratios if float(r) > 0]
        chosen = (self.config.get("deploy") or {}).get("ratio")
        if chosen is None:
            if not trained:
                raise ConfigError(
                    "calibration.ratios has no ratio > 0: there is no calibrated run to deploy"
                )
            return max(trained)
        if float(chosen) not in trained:
            raise ConfigError(
                f"deploy.ratio is {chosen}, which is not a ratio > 0 of calibration.ratios "
                f"({self.ratios}): its runs are not trained"
            )
        return float(chosen)

    def deploy_runs(self) -> list[tuple[int, str]]:
        """(seed, ratio label) of the runs ``deploy_best`` compares: every seed at
        :meth:`deploy_ratio`."""
        ratio = ratio_label(self.deploy_ratio())
        return [(seed, ratio) for seed in self.seeds]

    def deploy_selection_file(self, dataset: str) -> str:
        """The table of the runs ``deploy_best`` compared for ``dataset`` and the one chosen."""
        return self.result_file("deploy_selection", dataset=dataset)

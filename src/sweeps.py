"""The sweep summary: one table per ``--multirun``, one row per job, best first.

A Hydra callback (``conf/hydra/default.yaml``). After each job it records the job's overrides,
the value ``main`` returned (the configured ``optimized_metric``) and the final metrics the run
wrote to ``metrics.json`` in ``<job>/job_result.json``; then it rewrites ``summary.csv`` and
``summary.md`` in the sweep folder from every job recorded so far (so a sweep cut short still
leaves its table). A job whose value is NaN (a diverged run), that failed (a bad value in its
overrides: ``src.train`` writes the one-line reason to ``<job>/error.txt``, which the row shows) or
that was interrupted ranks last.

When the sweep varies ``seed`` (``seed=1,2,3`` beside the other choices), a second table has one
row per configuration (the jobs that differ only in their seed): each figure as mean ± standard
deviation over its completed seeds, with their number n, ranked by the mean value; a failed,
diverged or interrupted seed is counted and named, never averaged in. It is in ``summary.md``
and, one column per mean and per std, in ``summary_seeds.csv``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from src.metrics.quality import METRIC_NAMES
from src.run_folder import existing_run, restore_refused_run, sweep_overrides
from src.spread import mean_std, plus_minus

log = logging.getLogger(__name__)

JOB_RESULT = "job_result.json"
SEEDS_CSV = "summary_seeds.csv"
JOB_ERROR = "error.txt"  # the one-line reason a job failed, diverged or was interrupted, written by src.train
METRIC_COLUMNS = (*(f"val/{name}" for name in METRIC_NAMES), "train/d_loss", "train/g_loss")
HIGHER_IS_BETTER = ("score", "acc", "entropy", "precision", "recall", "density", "coverage")
LOWER_IS_BETTER = ("fid", "kid", "loss")  # checked first: val/fid_over_coverage is a distance, not a coverage


MAX_JOB_DIRNAME = 120  # bytes in UTF-8; file systems refuse names over 255


def job_dirname(num: int | str, overrides: str) -> str:
    """A job's folder name: its number and its overrides, cut to ``MAX_JOB_DIRNAME`` bytes.

    ``conf/hydra/default.yaml`` names job folders ``${job_dirname:${hydra.job.num},${hydra.job.override_dirname}}``:
    a long override (a list of layer widths, a few sampled floats) made Hydra's own
    ``<num>_<overrides>`` exceed the file system's limit and the sweep stop with ``OSError: File
    name too long``. The number keeps names unique; ``summary.md`` lists every job's overrides in full.
    """
    name = f"{num}_{overrides}" if overrides else str(num)
    if len(name.encode()) <= MAX_JOB_DIRNAME:
        return name
    return name.encode()[: MAX_JOB_DIRNAME - 3].decode(errors="ignore") + "..."


if not OmegaConf.has_resolver("job_dirname"):
    OmegaConf.register_new_resolver("job_dirname", job_dirname)


def infer_direction(metric: str | None) -> str:
    name = (metric or "").rsplit("/", 1)[-1]
    if any(name.startswith(word) or name.endswith(word) for word in LOWER_IS_BETTER):
        return "minimize"
    return "maximize" if any(word in name for word in HIGHER_IS_BETTER) else "minimize"


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def rank(rows: list[dict], direction: str) -> list[dict]:
    """Best first; NaN values (diverged or failed jobs) last, in job order."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(row: dict) -> tuple:
        value = _number(row.get("value"))
        return (not math.isfinite(value), sign * value if math.isfinite(value) else 0.0, int(row.get("job", 0)))

    return sorted(rows, key=key)


def _is_seed(override: str) -> bool:
    return override.lstrip("+~").startswith("seed=")


def _seed(row: dict) -> str:
    return next((o.split("=", 1)[1] for o in row["overrides"] if _is_seed(o)), "?")


def by_configuration(rows: list[dict], direction: str, present: list[str]) -> list[dict]:
    """One entry per configuration (the jobs' overrides without ``seed=``), best mean value first;
    the mean, std and count of the value and of each metric over the completed jobs only."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in sorted(rows, key=lambda row: int(row["job"])):
        groups.setdefault(tuple(o for o in row["overrides"] if not _is_seed(o)), []).append(row)
    configurations = []
    for overrides, jobs in groups.items():
        done = [row for row in jobs if row["status"] == "completed" and math.isfinite(_number(row.get("value")))]
        value_mean, value_std, n = mean_std(_number(row.get("value")) for row in done)
        configurations.append(
            {
                "overrides": sweep_overrides(list(overrides)),  # a resumed sweep's rows read as the first run's
                "value": value_mean,
                "value_std": value_std,
                "n": n,
                "seeds": [_seed(row) for row in done],
                "not_counted": [f"seed={_seed(row)} {row['status'] if row['status'] != 'completed' else 'nan'}" for row in jobs if row not in done],
                "metrics": {name: mean_std(_number(row.get("metrics", {}).get(name)) for row in done)[:2] for name in present},
                "jobs": [int(row["job"]) for row in jobs],
            }
        )
    for i, configuration in enumerate(configurations):
        configuration["job"] = i  # rank()'s tie-break: first-seen order
    return rank(configurations, direction)


def _exact(value: float) -> str:
    """A float in full (a CSV is read by programs, which recompute with it); empty for NaN."""
    return repr(value) if math.isfinite(value) else ""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else str(value)


def write_summary(sweep_dir: Path, metric: str | None, direction: str) -> list[dict]:
    """(Re)write ``summary.csv`` and ``summary.md`` from the sweep's ``*/job_result.json``; return the ranked rows."""
    rows = [json.loads(path.read_text()) for path in sorted(sweep_dir.glob(f"*/{JOB_RESULT}"))]
    if not rows:
        return []
    ranked = rank(rows, direction)
    # The overrides every job shares go in the heading; the rows show what the sweep varied.
    shared = set.intersection(*(set(row["overrides"]) for row in rows)) if len(rows) > 1 else set()
    varied = {row["job"]: " ".join(o for o in row["overrides"] if o not in shared) or "(none)" for row in rows}
    present = [name for name in METRIC_COLUMNS if any(name in row.get("metrics", {}) for row in rows)]
    errors = ["error"] if any(row.get("error") for row in rows) else []
    header = ["rank", "job", "status", "value", "overrides", *present, *errors, "dir"]
    table = [
        [
            str(i),
            str(row["job"]),
            row["status"],
            _cell(_number(row.get("value"))),
            varied[row["job"]],
            *[_cell(row.get("metrics", {}).get(name)) for name in present],
            *([row.get("error") or ""] if errors else []),
            row["dir"],
        ]
        for i, row in enumerate(ranked, start=1)
    ]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(table)
    best = "lower" if direction == "minimize" else "higher"
    lines = [
        f"# Sweep summary: {len(rows)} jobs, ranked by value = {metric or 'what main returned'} ({best} is better)",
        "",
        *([f"Every job: `{' '.join(o for o in rows[0]['overrides'] if o in shared)}`", ""] if shared else []),
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in table),
    ]
    if len({_seed(row) for row in rows}) > 1:
        lines += ["", *seed_table(sweep_dir, rows, direction, present, shared, metric)]
    else:
        (sweep_dir / SEEDS_CSV).unlink(missing_ok=True)  # a rerun without seeds leaves no stale table
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return ranked


def seed_table(sweep_dir: Path, rows: list[dict], direction: str, present: list[str], shared: set[str], metric: str | None) -> list[str]:
    """Write ``summary_seeds.csv``; return the Markdown of the same per-configuration table."""
    configurations = by_configuration(rows, direction, present)
    with open(sweep_dir / SEEDS_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "rank",
                "overrides",
                "n",
                "seeds",
                "not_counted",
                "value_mean",
                "value_std",
                *(f"{name}_{stat}" for name in present for stat in ("mean", "std")),
                "jobs",
            ]
        )
        for i, c in enumerate(configurations, start=1):
            overrides = " ".join(o for o in c["overrides"] if o not in shared) or "(none)"
            figures = [_exact(x) for name in present for x in c["metrics"][name]]
            writer.writerow(
                [
                    i,
                    overrides,
                    c["n"],
                    " ".join(c["seeds"]),
                    "; ".join(c["not_counted"]),
                    _exact(c["value"]),
                    _exact(c["value_std"]),
                    *figures,
                    " ".join(map(str, c["jobs"])),
                ]
            )
    header = ["rank", "overrides", "n", "value", *present, "not counted", "jobs"]
    lines = [
        f"## Per configuration: mean ± std over seeds (n: completed seeds), ranked by the mean {metric or 'value'}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for i, c in enumerate(configurations, start=1):
        cells = [
            str(i),
            " ".join(o for o in c["overrides"] if o not in shared) or "(none)",
            str(c["n"]),
            plus_minus(c["value"], c["value_std"]),
            *(plus_minus(*c["metrics"][name]) for name in present),
            ", ".join(c["not_counted"]),
            " ".join(map(str, c["jobs"])),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


_FOREIGN: set[Path] = set()


def leave_alone(job_dir: str | os.PathLike) -> None:
    """A job refused because its folder is another run's: its row is not written there."""
    _FOREIGN.add(Path(job_dir).resolve())


def record_job(hydra: DictConfig, metric: str | None, status: str, value: Any, overrides: list[str], direction: str) -> None:
    """Write the job's ``job_result.json`` (with the reason from its ``error.txt``, if any) and
    rewrite the sweep's summary. ``hydra``: the job's Hydra config; ``metric``: its optimized_metric."""
    job_dir = Path(hydra.runtime.output_dir)
    if job_dir.resolve() in _FOREIGN:
        log.warning("job %s was refused: %s is another run's folder, left as it was", hydra.job.num, job_dir)
        return
    metrics_file, error_file = job_dir / "metrics.json", job_dir / JOB_ERROR
    error = error_file.read_text().strip() if error_file.is_file() else ""
    if status == "completed" and error:  # main() returned the worst value for a job it could not run to the end
        status = "diverged" if "became" in error else "failed"
    record = {
        "job": int(hydra.job.num),
        "status": status,
        "value": _number(value) if status == "completed" else math.nan,
        "overrides": sweep_overrides(list(overrides)),  # a resumed sweep's rows read as the first run's
        "metrics": json.loads(metrics_file.read_text()) if metrics_file.is_file() else {},
        "error": error,
        "dir": job_dir.name,
    }
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / JOB_RESULT).write_text(json.dumps(record, indent=2) + "\n")
    write_summary(Path(hydra.sweep.dir), metric, direction)


def resume_job(cfg: DictConfig) -> float | None:
    """A job of a sweep rerun with ``ckpt_path=last`` (checked by ``run_folder.check_sweep_resume``):
    returns the value of a job that finished (it is not trained again); otherwise sets ``cfg`` to
    resume an interrupted job from its own ``last.ckpt`` (a row saying ``interrupted``, or none
    after a kill), or to start a failed, diverged or never-started one over."""
    hydra = HydraConfig.get()
    job_dir = Path(hydra.runtime.output_dir)
    result = job_dir / JOB_RESULT
    record = json.loads(result.read_text()) if result.is_file() else None
    same = record is not None and sorted(sweep_overrides(record["overrides"])) == sorted(sweep_overrides(list(hydra.overrides.task)))
    if same and record["status"] == "completed":
        log.info("job %s finished before (%s = %s): not trained again", hydra.job.num, cfg.get("optimized_metric"), record["value"])
        return _number(record["value"])
    checkpoint = any((job_dir / "checkpoints").glob("last*.ckpt"))
    if (record is None or (same and record["status"] == "interrupted")) and checkpoint:
        log.info("job %s resumes from its last checkpoint", hydra.job.num)
        return None
    with open_dict(cfg):
        cfg.ckpt_path = None
        cfg.overwrite = existing_run(job_dir) is not None
    log.info("job %s starts over", hydra.job.num)
    return None


def report_failed_job(message: str, multirun: bool, foreign: bool = False) -> None:
    """Print a job's one-line error; in a sweep also leave it in the job folder for its summary
    row, unless the folder is another run's (``foreign``): then nothing is written there. A
    single run's refused command leaves its folder as it was."""
    print(f"error: {message}", file=sys.stderr)
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    if not multirun:
        restore_refused_run(job_dir)
        return
    if foreign:
        leave_alone(job_dir)
        return
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / JOB_ERROR).write_text(message + "\n")


def record_interrupted_job(hydra: DictConfig, metric: str | None) -> None:
    """The row of a job stopped by Ctrl-C or SIGTERM: Hydra records no job that ends in SystemExit."""
    direction = OmegaConf.select(hydra, "callbacks.sweep_summary.direction") or infer_direction(metric)
    record_job(hydra, metric, "interrupted", math.nan, list(hydra.overrides.task), direction)


class SweepSummary(Callback):
    """``direction``: ``minimize`` / ``maximize``, or null to infer it from ``optimized_metric``'s name."""

    def __init__(self, direction: str | None = None) -> None:
        if direction not in (None, "minimize", "maximize"):
            raise ValueError(f"direction must be minimize, maximize or null, got {direction!r}")
        self.direction = direction

    def _direction(self, config: DictConfig) -> str:
        return self.direction or infer_direction(config.get("optimized_metric"))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode is None or str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        completed = job_return.status == JobStatus.COMPLETED
        value = job_return.return_value if completed else math.nan
        status = "completed" if completed else "failed"
        record_job(config.hydra, config.get("optimized_metric"), status, value, job_return.overrides or [], self._direction(config))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        ranked = write_summary(sweep_dir, config.get("optimized_metric"), self._direction(config))
        if ranked:
            log.info("sweep summary (best first): %s", sweep_dir / "summary.md")

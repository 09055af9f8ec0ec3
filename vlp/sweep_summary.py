"""summary.md and summary.json in a sweep folder: one row per trial and the best trial's config.

Written by :class:`SweepSummary`, a Hydra callback (conf/hydra/default.yaml), at the end of every multirun.
An Optuna sweep with a stored study (conf/hparams_search/) is read from its storage, which knows every
trial's state (failed, pruned, interrupted) and parameters; any other sweep (``vlp-train -m a=1,2``) is
read from its job folders: ``.hydra/hydra.yaml`` (job number, overrides), ``.hydra/config.yaml``
(monitor) and ``metrics.json``, which vlp-train writes only when a run finishes.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class TrialRow:
    number: int
    state: str  # COMPLETE, FAIL, PRUNED, RUNNING (Optuna's trial states)
    value: float | None
    overrides: list[str]
    params: dict[str, Any]
    run_dir: str | None
    config: str | None = None  # the run's resolved config.yaml, when it exists
    note: str = ""


@dataclass
class Summary:
    sweeper: str  # "optuna" or "multirun"
    monitor: str
    direction: str  # "maximize" or "minimize"
    trials: list[TrialRow]
    best: TrialRow | None
    study: dict[str, Any] = field(default_factory=dict)


def resolved_config(run_dir: str | None) -> str | None:
    if run_dir is None:
        return None
    path = Path(run_dir) / "config.yaml"
    return str(path) if path.is_file() else None


def best_row(rows: list[TrialRow], direction: str) -> TrialRow | None:
    scored = [row for row in rows if row.state == "COMPLETE" and row.value is not None]
    if not scored:
        return None
    pick = max if direction == "maximize" else min
    return pick(scored, key=lambda row: row.value)


def optuna_summary(storage: str, study_name: str, monitor: str) -> Summary:
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        run_dir = trial.user_attrs.get("run_dir")
        interrupted = trial.state == optuna.trial.TrialState.FAIL and run_dir is None
        note = "interrupted: the sweep stopped while it ran; not counted in n_trials" if interrupted else ""
        rows.append(
            TrialRow(
                number=trial.number,
                state=trial.state.name,
                value=trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None,
                overrides=list(trial.user_attrs.get("overrides", [])),
                params=dict(trial.params),
                run_dir=run_dir,
                config=resolved_config(run_dir),
                note=note,
            )
        )
    direction = study.direction.name.lower()
    return Summary(
        sweeper="optuna",
        monitor=monitor,
        direction=direction,
        trials=rows,
        best=best_row(rows, direction),
        study={"name": study_name, "storage": storage},
    )


def _swept(rows: list[TrialRow]) -> None:
    """A multirun's params: the overrides whose values differ between its jobs (all of one job's)."""
    values: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row.params.items():
            values.setdefault(key, set()).add(value)
    varying = {key for key, seen in values.items() if len(seen) > 1 or len(rows) == 1}
    for row in rows:
        row.params = {key: value for key, value in row.params.items() if key in varying}


def folder_summary(sweep_dir: Path, monitor: str, monitor_mode: str) -> Summary:
    """Each job is scored by its own ``monitor`` (a sweep over experiments monitors different metrics);
    the best is picked only when every job monitors the sweep's metric the same way."""
    rows, monitors = [], set()
    for hydra_yaml in sweep_dir.glob("*/.hydra/hydra.yaml"):
        job_dir = hydra_yaml.parent.parent
        hydra_cfg = OmegaConf.load(hydra_yaml).hydra
        job_cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
        job_monitor = str(job_cfg.get("monitor", monitor))
        monitors.add((job_monitor, str(job_cfg.get("monitor_mode", monitor_mode))))
        overrides = [str(o) for o in hydra_cfg.overrides.task]
        metrics_file = job_dir / "metrics.json"
        value, state, note = None, "FAIL", "no metrics.json: the run did not finish"
        if metrics_file.is_file():
            value = json.loads(metrics_file.read_text()).get(job_monitor)
            state, note = "COMPLETE", ""
            if value is None or not math.isfinite(value):
                value, state, note = None, "FAIL", f"{job_monitor} is missing or not finite in metrics.json"
        rows.append(
            TrialRow(
                number=int(hydra_cfg.job.num),
                state=state,
                value=value,
                overrides=overrides,
                params=dict(o.split("=", 1) for o in overrides if "=" in o),
                run_dir=str(job_dir.resolve()),
                config=resolved_config(str(job_dir.resolve())),
                note=note,
            )
        )
    rows.sort(key=lambda row: row.number)
    _swept(rows)
    direction = f"{monitor_mode}imize"
    comparable = monitors <= {(monitor, monitor_mode)}
    return Summary(
        sweeper="multirun",
        monitor=monitor if comparable else "the monitor of each job (they differ: no best)",
        direction=direction,
        trials=rows,
        best=best_row(rows, direction) if comparable else None,
    )


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def render_markdown(summary: Summary, sweep_dir: Path) -> str:
    lines = [
        f"# Sweep {sweep_dir}",
        "",
        f"{summary.sweeper}: {len(summary.trials)} trials, objective `{summary.monitor}` "
        f"({summary.direction}).",
        "",
        "| trial | state | objective | overrides | run folder | note |",
        "|---:|---|---:|---|---|---|",
    ]
    for row in summary.trials:
        value = "" if row.value is None else f"{row.value:.6g}"
        overrides = " ".join(f"`{_cell(o)}`" for o in row.overrides)
        run_dir = _cell(row.run_dir or "")
        lines.append(f"| {row.number} | {row.state} | {value} | {overrides} | {run_dir} | {row.note} |")
    lines.append("")
    best = summary.best
    if best is None:
        lines.append("No trial completed.")
    else:
        lines += [
            f"## Best: trial {best.number}, {summary.monitor} = {best.value:.6g}",
            "",
            f"Resolved config: `{best.config}`" if best.config else "Resolved config: not written",
            "",
            "Rerun it with:",
            "",
            "```",
            "vlp-train " + " ".join(best.overrides),
            "```",
        ]
    return "\n".join(lines) + "\n"


def write_summary(summary: Summary, sweep_dir: Path) -> None:
    """Write both files through a temporary name: jobs that end together may write at the same time."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    data = asdict(summary)
    for name, text in (
        ("summary.json", json.dumps(data, indent=2) + "\n"),
        ("summary.md", render_markdown(summary, sweep_dir)),
    ):
        temporary = sweep_dir / f".{name}.{os.getpid()}"
        temporary.write_text(text)
        temporary.replace(sweep_dir / name)


def summarise(config: DictConfig) -> Summary:
    sweep_dir = Path(config.hydra.sweep.dir)
    sweeper = config.hydra.sweeper
    if sweeper.get("storage") and sweeper.get("study_name"):
        summary = optuna_summary(str(sweeper.storage), str(sweeper.study_name), str(config.monitor))
    else:
        summary = folder_summary(sweep_dir, str(config.monitor), str(config.monitor_mode))
    write_summary(summary, sweep_dir)
    return summary


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep when it ends, and for a folder-read sweep after every job too,
    since Hydra's basic sweeper raises at the first failed job and never reaches ``on_multirun_end``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summary = summarise(config)
        best = f"best trial {summary.best.number}" if summary.best else "no trial completed"
        log.info(
            "sweep summary: %s/summary.md (%d trials, %s)", config.hydra.sweep.dir, len(summary.trials), best
        )

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or config.hydra.sweeper.get("storage"):
            return  # a single run, or an Optuna study: the sweeper tells it only after the job
        try:
            summarise(config)
        except Exception as error:  # noqa: BLE001 - a summary must never fail the job it follows
            log.warning("could not refresh the sweep summary: %s", error)

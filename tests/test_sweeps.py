"""Optuna searches (conf/hparams_search/, vlp.sweeps) and the sweep summary (vlp.sweep_summary)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from vlp.sweep_summary import folder_summary, write_summary
from vlp.train import CONFIG_DIR

VLP_TRAIN = str(Path(sys.executable).with_name("vlp-train"))


def compose_with_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_vqa_optuna_on_slurm_composes_a_continuable_study_in_the_sweep_folder(tmp_path):
    cfg = compose_with_hydra(
        ["hparams_search=vqa_optuna", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}"]
    )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.vlp_sweeper.resumable_optuna.ResumableOptunaSweeper"
    assert sweeper.storage == f"sqlite:///{tmp_path}/optuna.db" and sweeper.study_name == "finetune_vqa"
    assert cfg.task_name == "finetune_vqa" and cfg.monitor == "val/vqa/accuracy"  # the experiment it tunes
    assert sweeper.direction == "maximize"
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    for key in sweeper.params:  # every searched key exists in the composed run (no typo, no new key)
        assert OmegaConf.select(cfg, key) is not None, key
    from hydra_plugins.vlp_sweeper.resumable_optuna import ResumableOptunaSweeper  # noqa: F401


def test_the_search_direction_follows_monitor_mode(tmp_path):
    cfg = compose_with_hydra(["hparams_search=pretrain_optuna", "monitor=val/loss", "monitor_mode=min"])
    assert cfg.hydra.sweeper.direction == "minimize" and cfg.hydra.sweeper.study_name == "pretrain"
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key


def _job(sweep: Path, num: int, lr: str, value: float | None, monitor: str = "val/acc") -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    overrides = ["data_dir=/data", f"system.optimizer.lr={lr}"]
    (job / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"job": {"num": num}, "overrides": {"task": overrides}}})
    )
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"monitor": monitor, "monitor_mode": "max"}))
    if value is not None:  # vlp-train writes config.yaml and metrics.json only for a finished run
        (job / "config.yaml").write_text("seed: 0\n")
        (job / "metrics.json").write_text(json.dumps({monitor: value, "val/loss": 1.0}))


def test_a_multirun_summary_reads_the_job_folders(tmp_path):
    _job(tmp_path, 0, "1e-4", 10.0)
    _job(tmp_path, 1, "3e-4", 30.0)
    _job(tmp_path, 2, "1e-3", None)  # crashed: no metrics.json
    _job(tmp_path, 10, "3e-3", float("nan"))  # diverged; 10 sorts after 2 by number, not by name
    summary = folder_summary(tmp_path, "val/acc", "max")
    assert [row.number for row in summary.trials] == [0, 1, 2, 10]
    assert [row.state for row in summary.trials] == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    assert summary.trials[0].params == {"system.optimizer.lr": "1e-4"}  # only what the sweep varied
    assert summary.best.number == 1 and summary.best.value == 30.0
    assert summary.best.config == str((tmp_path / "1" / "config.yaml").resolve())
    write_summary(summary, tmp_path)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["best"]["overrides"] == ["data_dir=/data", "system.optimizer.lr=3e-4"]
    markdown = (tmp_path / "summary.md").read_text()
    assert "## Best: trial 1, val/acc = 30" in markdown and "no metrics.json" in markdown
    assert "vlp-train data_dir=/data system.optimizer.lr=3e-4" in markdown


def test_jobs_that_monitor_different_metrics_have_no_best(tmp_path):
    _job(tmp_path, 0, "1e-4", 10.0)
    _job(tmp_path, 1, "3e-4", 90.0, monitor="val/other")
    summary = folder_summary(tmp_path, "val/acc", "max")
    assert [row.value for row in summary.trials] == [10.0, 90.0] and summary.best is None


def test_a_trial_without_a_finite_objective_is_a_failed_trial_with_a_reason():
    from hydra.core.utils import JobReturn, JobStatus

    from vlp.sweeps import trial_value

    def job(value, status=JobStatus.COMPLETED) -> JobReturn:
        returned = JobReturn(status=status)
        returned.return_value = value  # the property setter keeps what the task returned (or raised)
        return returned

    assert trial_value(job(41.5)) == (41.5, None)
    assert trial_value(job(None))[1].startswith("the job returned no value")  # vlp-train: monitor not logged
    assert trial_value(job(float("nan"))) == (None, "the job returned nan")
    value, reason = trial_value(job(RuntimeError("CUDA out of memory"), JobStatus.FAILED))
    assert value is None and "CUDA out of memory" in reason


def optuna_sweep(synth_data, sweep: Path, n_trials: int) -> subprocess.CompletedProcess:
    """A tiny VQA finetuning search: two training steps and one validation batch per trial."""
    command = [
        VLP_TRAIN, "-m", "hparams_search=vqa_optuna", f"data_dir={synth_data.root}",
        f"hydra.sweep.dir={sweep}", f"hydra.sweeper.n_trials={n_trials}", "data.num_workers=0",
        "data.batch_size=8", "data.eval_batch_size=8", "trainer.max_steps=2", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def load_study(sweep: Path, name: str = "finetune_vqa"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep}/optuna.db")


@pytest.mark.slow
def test_an_optuna_sweep_writes_a_summary_with_the_best_trial(synth_data, synth_vqa, tmp_path):
    sweep = tmp_path / "sweep"
    optuna_sweep(synth_data, sweep, n_trials=3)
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["sweeper"] == "optuna" and summary["direction"] == "maximize"
    trials = summary["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2] and {t["state"] for t in trials} == {"COMPLETE"}
    values = [t["value"] for t in trials]
    assert all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in values)
    for trial in trials:  # the objective is the run's own monitored metric, from its folder
        metrics = json.loads((Path(trial["run_dir"]) / "metrics.json").read_text())
        assert metrics["val/vqa/accuracy"] == pytest.approx(trial["value"])
        assert any(o.startswith("system.optimizer.lr=") for o in trial["overrides"])
    best = summary["best"]
    assert best["value"] == max(values) and best["number"] == load_study(sweep).best_trial.number
    config = yaml.safe_load(Path(best["config"]).read_text())
    assert config["system"]["optimizer"]["lr"] == pytest.approx(best["params"]["system.optimizer.lr"])
    markdown = (sweep / "summary.md").read_text()
    assert markdown.count("| COMPLETE |") == 3 and f"## Best: trial {best['number']}" in markdown


@pytest.mark.slow
def test_an_interrupted_optuna_sweep_continues_to_n_trials(synth_data, synth_vqa, tmp_path):
    from optuna.trial import TrialState

    sweep = tmp_path / "sweep"
    optuna_sweep(synth_data, sweep, n_trials=2)
    first = {t.number: (t.params, t.value, t.datetime_complete) for t in load_study(sweep).trials}
    assert len(first) == 2
    # a sweep killed during its third trial leaves that trial running in the storage
    load_study(sweep).ask()

    result = optuna_sweep(synth_data, sweep, n_trials=3)
    assert "has 2 of n_trials=3 trials: continuing" in result.stderr + result.stdout
    trials = load_study(sweep).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL, TrialState.COMPLETE]
    assert {t.number: (t.params, t.value, t.datetime_complete) for t in trials[:2]} == first  # untouched
    assert trials[3].user_attrs["run_dir"] == str(sweep / "3")  # a new folder; 0 and 1 are kept
    assert (sweep / "0" / "metrics.json").is_file() and (sweep / "3" / "metrics.json").is_file()
    rows = json.loads((sweep / "summary.json").read_text())["trials"]
    assert [(row["number"], row["state"]) for row in rows] == [
        (0, "COMPLETE"), (1, "COMPLETE"), (2, "FAIL"), (3, "COMPLETE")
    ]  # fmt: skip
    assert rows[2]["note"].startswith("interrupted")

"""vlp-train: fit a composed run, then validate its best checkpoint and write metrics.json.

Usage: ``vlp-train [experiment=NAME] [group=option ...] [key=value ...]`` (see README).
Returns the monitored metric, so that Hydra multirun sweepers can optimise it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import warnings
from datetime import datetime
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from vlp.build import build_callbacks, build_loggers, build_run
from vlp.resume import CheckpointError, checkpoint_step, newest_checkpoint
from vlp.tracking import run_hyperparameters, wandb_offline
from vlp.validate import ConfigError, override_problem, validate

log = logging.getLogger(__name__)


def run_stamp() -> str:
    """The run folder's name (``hydra.run.dir``), the same in every process of a multi-process launch.

    torchrun and srun start every rank as its own ``vlp-train``, and each would stamp its own time (two
    processes, two folders, seen with torchrun): under them the launch's shared id names the folder
    (``TORCHELASTIC_RUN_ID``, the same on all nodes given one ``--rdzv-id``; SLURM's job and step ids).
    A single ``vlp-train`` (Lightning then starts the other ranks with rank 0's folder) keeps the time.
    """
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return f"slurm-{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', '0')}"
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


OmegaConf.register_new_resolver("vlp_run_stamp", run_stamp, replace=True, use_cache=True)


def run_id(run_dir: str) -> str:
    """A logger run id that belongs to the run folder: a run resumed in the same folder (resume=true)
    continues the same wandb run instead of starting another."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


OmegaConf.register_new_resolver("vlp_run_id", run_id, replace=True)
OmegaConf.register_new_resolver("vlp_wandb_offline", wandb_offline, replace=True)


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    path.write_text(json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")


def resume_from(cfg: DictConfig, run_dir: Path) -> str | None:
    """``ckpt_path`` as given, or with ``resume=true`` the newest loadable checkpoint of the run folder
    (none yet: the run starts afresh, so that one command both starts and resumes a run)."""
    if not cfg.get("resume"):
        if cfg.ckpt_path:
            checkpoint_step(Path(cfg.ckpt_path))  # refuses pickled code and truncated files, naming them
        return cfg.ckpt_path
    if cfg.ckpt_path:
        raise ValueError("resume=true picks the checkpoint itself: leave ckpt_path unset")
    checkpoint = newest_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        log.info("resume=true: no checkpoint in %s/checkpoints yet, starting afresh", run_dir)
        return None
    log.info("resume=true: continuing from %s", checkpoint)
    return str(checkpoint)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, validate the best (or last) weights, write ``config.yaml`` and ``metrics.json`` in the run dir."""
    validate(cfg)  # before any data is read or model built: one line per problem, see vlp.validate
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    run = build_run(cfg)
    callbacks = build_callbacks(cfg)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=build_loggers(cfg) or False
    )
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if trainer.loggers:  # every logger gets the config and the commit: a run in wandb or TensorBoard
            hyperparameters = run_hyperparameters(cfg)  # can be traced back without its folder
            for logger in trainer.loggers:
                logger.log_hyperparams(hyperparameters)
    trainer.fit(run.system, datamodule=run.datamodule, ckpt_path=resume_from(cfg, run_dir), weights_only=True)

    checkpoint = next(
        (c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor is not None), None
    )
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if trainer.fast_dev_run:  # it already validated one batch; checkpoints are off
        results = dict(trainer.callback_metrics)
    elif best and _last_validation_was(best, run.system, trainer):
        # the best weights are the ones in memory and were validated last: their metrics (and prediction
        # files) are already there, and a second pass would cost as much as the first
        results = dict(trainer.callback_metrics)
        log.info("the best checkpoint %s is the last one validated: its metrics are final", best)
    else:
        passes = trainer.validate(
            run.system, datamodule=run.datamodule, ckpt_path=best or None, weights_only=True
        )
        results = passes[0] if passes else {}  # limit_val_batches=0: no validation at all
        if best:
            log.info("validated the best checkpoint %s", best)
    metrics = {key: float(value) for key, value in results.items() if key.startswith("val/")}
    if trainer.is_global_zero:
        write_metrics(run_dir / "metrics.json", metrics)
    return metrics


def _last_validation_was(checkpoint_path: str, system: pl.LightningModule, trainer: pl.Trainer) -> bool:
    """Whether ``checkpoint_path`` holds the final weights and the last validation pass scored them."""
    if getattr(system, "validated_at_step", None) != trainer.global_step:
        return False
    try:  # mmap: reads the step without loading the tensors
        with warnings.catch_warnings():  # Lightning pickles with protocol 4, which torch.load warns about
            warnings.simplefilter("ignore", UserWarning)
            saved = torch.load(checkpoint_path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable step only means we validate again
        return False
    return saved.get("global_step") == trainer.global_step


# conf/ sits next to the package in the repository (the install is editable; see README and docker/).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def launch_ddp_ranks_as_this_job() -> bool:
    """Under a Hydra multirun, make the ranks Lightning starts for DDP run this job, in this job's folder.

    Lightning starts each further rank by re-running the command line with ``hydra.run.dir`` set to the
    parent's run dir. In a multirun that command is the whole sweep (``-m`` and every value), so each
    rank ran all jobs and wrote a second sweep folder (seen: two folders for one ``vlp-train -m`` with
    trainer=ddp). The command becomes this job's own overrides, and the run dir this job's folder.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    hydra_cfg = HydraConfig.get()
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    return True


def end_ddp_launch(environment: dict[str, str]) -> None:
    """After a multirun job: close its process group and take back the variables Lightning set when it
    started the job's ranks (LOCAL_RANK, WORLD_SIZE, MASTER_PORT, ...). Left set, they tell Lightning
    that the next job's ranks were started by someone else, and rank 0 waits for ranks that never come."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key in set(os.environ) - set(environment):
        del os.environ[key]
    os.environ.update(environment)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    multirun = launch_ddp_ranks_as_this_job()
    environment = dict(os.environ)
    try:
        metrics = train(cfg)
    except (ConfigError, CheckpointError) as error:
        print(
            f"vlp-train: {'config' if isinstance(error, ConfigError) else 'checkpoint'} error: {error}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    finally:
        if multirun:  # the next job of the sweep starts its own DDP ranks, as the first one did
            end_ddp_launch(environment)
    value = metrics.get(cfg.monitor)
    if value is None:
        log.warning("monitor=%s was not logged; logged keys: %s", cfg.monitor, ", ".join(sorted(metrics)))
        return None
    return value if math.isfinite(value) else None


def cli() -> None:
    """The vlp-train command: plain overrides are composed once first, so that a mistyped key or option
    is one line with the closest name rather than Hydra's report; then Hydra runs :func:`main`."""
    overrides = sys.argv[1:]
    if overrides and not any(arg.startswith("-") for arg in overrides):  # not -m, --cfg, --help ...
        problem = override_problem(overrides, CONFIG_DIR)
        if problem is not None:
            print(f"vlp-train: config error: {problem}", file=sys.stderr)
            raise SystemExit(2)
    main()


if __name__ == "__main__":
    cli()

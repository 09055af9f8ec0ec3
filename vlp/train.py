"""vlp-train: fit a composed run, then validate its best checkpoint and write metrics.json.

Usage: ``vlp-train [experiment=NAME] [group=option ...] [key=value ...]`` (see README).
Returns the monitored metric, so that Hydra multirun sweepers can optimise it.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from vlp.build import build_callbacks, build_loggers, build_run

log = logging.getLogger(__name__)


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    path.write_text(json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, validate the best (or last) weights, write ``config.yaml`` and ``metrics.json`` in the run dir."""
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
    trainer.fit(run.system, datamodule=run.datamodule, ckpt_path=cfg.ckpt_path)

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
        results = trainer.validate(run.system, datamodule=run.datamodule, ckpt_path=best or None)[0]
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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    value = metrics.get(cfg.monitor)
    if value is None:
        log.warning("monitor=%s was not logged; logged keys: %s", cfg.monitor, ", ".join(sorted(metrics)))
        return None
    return value if math.isfinite(value) else None


if __name__ == "__main__":
    main()

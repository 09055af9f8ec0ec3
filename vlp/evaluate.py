"""vlp-eval: score a checkpoint on a split with an experiment's data, objectives and evaluators.

Usage: ``vlp-eval experiment=finetune_vqa ckpt_path=PATH [eval_split=val|test] [key=value ...]``. Writes
``metrics_<split>.json`` and the evaluators' prediction files (``predictions/``) in the run directory,
and prints the metrics. Nothing is trained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from vlp.build import build_run
from vlp.train import CONFIG_DIR, write_metrics

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    if not cfg.ckpt_path:
        raise ValueError("vlp-eval needs the checkpoint to score: ckpt_path=path/to/checkpoint.ckpt")
    if cfg.eval_split not in ("val", "test"):
        raise ValueError(f"eval_split must be val or test, got {cfg.eval_split!r}")
    if not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such file")
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    run = build_run(cfg)
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[], logger=False)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    score = trainer.validate if cfg.eval_split == "val" else trainer.test
    results = score(run.system, datamodule=run.datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)[0]
    metrics = {key: float(value) for key, value in results.items()}
    if trainer.is_global_zero:
        write_metrics(run_dir / f"metrics_{cfg.eval_split}.json", metrics)
        print(json.dumps(dict(sorted(metrics.items())), indent=2))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()

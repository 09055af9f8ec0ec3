"""Configs for scale-out: FSDP as a trainer strategy and SLURM through Hydra's submitit launcher.

FSDP itself needs GPUs (Lightning and torch both refuse a CPU), so here the strategy is built from the
config and checked; the launcher is exercised for real with submitit's local executor, which runs each
job of a sweep in its own process exactly as the SLURM executor runs it on a node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from pytorch_lightning.strategies import FSDPStrategy

from tests.conftest import compose_train_config
from vlp.strategies import block_classes


def test_the_fsdp_trainer_config_wraps_every_family_block():
    from timm.models.vision_transformer import Block
    from transformers.models.bert.modeling_bert import BertLayer

    from vlp.model.fusion import CrossAttentionLayer

    cfg = compose_train_config(["trainer=fsdp", "trainer.strategy.activation_checkpointing=true"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    wrapped = strategy.kwargs["auto_wrap_policy"]._module_classes
    assert {Block, BertLayer, CrossAttentionLayer} <= set(wrapped)
    assert strategy._activation_checkpointing_kwargs  # the same blocks checkpointed
    assert strategy.kwargs["use_orig_params"] is True and strategy._state_dict_type == "full"


def test_a_mistyped_block_class_is_refused_and_a_missing_package_skipped():
    assert block_classes(["not_installed_pkg.layers.Block", "vlp.model.fusion.CrossAttentionLayer"])
    with pytest.raises(ValueError, match="vlp.model.fusion.CrossAttentionLayr is not a class"):
        block_classes(["vlp.model.fusion.CrossAttentionLayr"])


def test_the_slurm_launcher_asks_for_the_trainer_s_nodes_and_devices():
    from hydra import compose, initialize_config_dir

    from vlp.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)


@pytest.mark.slow
def test_a_sweep_runs_through_the_submitit_launcher(synth_data, tmp_path):
    command = [
        str(Path(sys.executable).with_name("vlp-train")), "-m", "hydra/launcher=submitit_local",
        f"data_dir={synth_data.root}", "debug=fast_dev_run", "data.num_workers=0", "data.batch_size=8",
        "data.eval_batch_size=8", "trainer.enable_progress_bar=false", "system.optimizer.lr=1e-4,3e-4",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun" / "train").iterdir()
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert "val/retrieval/r_mean" in metrics
    assert any((sweep / ".submitit").iterdir())  # submitit's own job folders: it really ran them
    # the sweep summary, read from the job folders whichever launcher ran them
    rows = json.loads((sweep / "summary.json").read_text())["trials"]
    assert [row["params"]["system.optimizer.lr"] for row in rows] == ["0.0001", "0.0003"]
    for row in rows:
        metrics = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())
        assert row["state"] == "COMPLETE" and row["value"] == metrics["val/retrieval/r_mean"]

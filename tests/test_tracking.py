"""Tracking: wandb online only with an API key, the config and git commit in every logger, progress bars."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate
from pytorch_lightning.callbacks import RichProgressBar

from tests.conftest import compose_train_config
from tests.test_train import vlp_train
from vlp.build import build_callbacks
from vlp.tracking import git_state


@pytest.fixture
def no_wandb_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # not there yet
    return tmp_path / "netrc"


def wandb_offline(run_dir: Path) -> bool:
    return compose_train_config([f"run_dir={run_dir}", "logger=wandb"]).logger.wandb.offline


def test_wandb_is_offline_without_an_api_key_and_online_with_one(no_wandb_key, monkeypatch, tmp_path):
    assert wandb_offline(tmp_path) is True
    no_wandb_key.write_text("machine example.org login me password other-key\n")
    assert wandb_offline(tmp_path) is True  # a netrc without the wandb host
    no_wandb_key.write_text("machine api.wandb.ai login user password abc123\n")  # what `wandb login` writes
    assert wandb_offline(tmp_path) is False
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a self-hosted server: its own entry
    assert wandb_offline(tmp_path) is True
    monkeypatch.setenv("WANDB_API_KEY", "abc123")
    assert wandb_offline(tmp_path) is False
    assert (
        compose_train_config([f"run_dir={tmp_path}", "logger=wandb", "logger.wandb.offline=true"])
        .logger["wandb"]
        .offline
    )  # an explicit choice wins


def test_git_state_names_the_commit_and_whether_the_checkout_changed(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}  # not a checkout

    def git(*args: str) -> str:
        command = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "a")
    assert git_state(tmp_path) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True
    git("checkout", "-q", "a.py")
    (tmp_path / "b.py").write_text("y = 1\n")  # a new module changes the code as much as an edit
    assert git_state(tmp_path)["dirty"] is True


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_the_logger_records_the_resolved_config_and_the_git_commit(logger, synth_data, tmp_path):
    vlp_train(
        synth_data, tmp_path, f"logger={logger}", "trainer.max_steps=2", "trainer.limit_val_batches=1",
        "data.batch_size=8", "data.eval_batch_size=8", "system.optimizer.lr=2.5e-4",
    )  # fmt: skip
    hparams = yaml.safe_load((tmp_path / logger / "hparams.yaml").read_text())
    assert hparams["git"] == git_state()  # the commit of this checkout, and its dirty flag
    assert hparams["git"]["commit"] is None or len(hparams["git"]["commit"]) == 40
    assert hparams["system"]["optimizer"]["lr"] == 2.5e-4  # the override, in the resolved config
    assert hparams["data"]["root"] == str(synth_data.shards)  # interpolations resolved
    if logger == "csv":
        header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
        assert "val/loss" in header and "train/loss_epoch" in header
    else:
        assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_training_and_evaluation_show_rich_progress_bars_unless_disabled(tmp_path):
    cfg = compose_train_config([f"run_dir={tmp_path}"])
    trainer = instantiate(cfg.trainer, callbacks=build_callbacks(cfg), logger=False)
    assert isinstance(trainer.progress_bar_callback, RichProgressBar)  # train, vlp-eval and validation
    cfg = compose_train_config([f"run_dir={tmp_path}", "trainer.enable_progress_bar=false"])
    assert (
        instantiate(cfg.trainer, callbacks=build_callbacks(cfg), logger=False).progress_bar_callback is None
    )


def test_shard_conversion_prints_one_progress_line_per_split_into_a_log(synth_data, tmp_path, capsys):
    """Not a terminal (a log file, CI): rich draws each bar once, when done, without redraw escapes."""
    from vlp.data.convert.coco import convert_karpathy

    convert_karpathy(synth_data.karpathy_json, synth_data.karpathy_json.parent, tmp_path, shard_size=16)
    lines = capsys.readouterr().err.splitlines()
    bars = [line for line in lines if "━" in line]
    by_split = {bar.split()[1]: bar for bar in bars if bar.startswith("coco ")}
    assert len(bars) == 3 and sorted(by_split) == ["test", "train", "val"]  # each drawn once
    assert "48/48" in by_split["train"] and "20/20" in by_split["val"]
    assert not any("\r" in line or "\x1b[" in line for line in lines)

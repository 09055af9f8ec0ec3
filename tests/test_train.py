"""vlp-train end to end on the tiny shards, through the installed console script."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

VLP_TRAIN = str(Path(sys.executable).with_name("vlp-train"))


def vlp_train(synth_data, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [VLP_TRAIN, f"data_dir={synth_data.root}", f"hydra.run.dir={run_dir}", "data.num_workers=0",
               "trainer.enable_progress_bar=false", *overrides]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_fast_dev_run_wires_up_the_whole_run(synth_data, tmp_path):
    vlp_train(synth_data, tmp_path, "debug=fast_dev_run", "data.batch_size=8", "data.eval_batch_size=8")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("val/itc/loss", "val/itm/acc", "val/mlm/acc", "val/mlm/majority_acc", "val/retrieval/img_r5"):
        assert key in metrics
    assert (tmp_path / "config.yaml").is_file()


@pytest.mark.slow
def test_a_short_run_writes_checkpoints_resolved_config_and_metrics(synth_data, tmp_path):
    result = vlp_train(
        synth_data, tmp_path, "debug=limit", "data.batch_size=8", "data.eval_batch_size=8",
        "trainer.max_epochs=2", "trainer.limit_val_batches=1.0", "system.scheduler.warmup_steps=2",
        "callbacks.telemetry.every_n_steps=2",
    )  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    speeds = [float(row["perf/samples_per_second"]) for row in rows if row.get("perf/samples_per_second")]
    assert len(speeds) == 5 and all(speed > 0 for speed in speeds)  # 2 epochs x 5 steps, every 2 steps
    waits = [float(row["perf/data_wait_fraction"]) for row in rows if row.get("perf/data_wait_fraction")]
    assert all(0.0 <= wait < 1.0 for wait in waits)
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2  # last + best by the monitored metric
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["data"]["root"] == str(synth_data.shards)  # interpolations resolved
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert all(key.startswith("val/") for key in metrics)
    assert 0.0 <= metrics["val/retrieval/r_mean"] <= 100.0
    assert metrics["val/retrieval/num_images"] == 20  # every val image, once
    # the best checkpoint's metrics: validated again, unless the last validation pass already scored it
    output = result.stderr + result.stdout
    validation_rows = [
        row for row in csv.DictReader((tmp_path / "csv" / "metrics.csv").open()) if row["val/loss"]
    ]
    if "is the last one validated" in output:
        assert len(validation_rows) == 2  # one per epoch
        assert metrics["val/loss"] == pytest.approx(float(validation_rows[-1]["val/loss"]))
    else:
        assert "validated the best checkpoint" in output and len(validation_rows) == 3


def test_the_task_function_returns_the_monitored_metric(synth_data, tmp_path, monkeypatch):
    """Hydra sweepers (e.g. Optuna) optimise what the task function returns."""
    from tests.conftest import compose_train_config
    from vlp import train as train_module

    monkeypatch.setattr(train_module, "train", lambda cfg: {"val/retrieval/r_mean": 12.5, "val/loss": 3.0})
    task = train_module.main.__wrapped__  # the function under @hydra.main
    assert task(compose_train_config([f"run_dir={tmp_path}"])) == 12.5
    assert task(compose_train_config([f"run_dir={tmp_path}", "monitor=val/loss"])) == 3.0
    assert task(compose_train_config([f"run_dir={tmp_path}", "monitor=val/nothing"])) is None


def test_a_wrong_config_key_fails_with_a_one_line_reason(synth_data, tmp_path):
    command = [VLP_TRAIN, f"data_dir={synth_data.root}", f"hydra.run.dir={tmp_path}", "trainer.max_epoch=1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "max_epoch" in result.stderr and "Traceback" not in result.stderr


def test_a_run_on_mostly_bad_data_stops_with_a_clear_message(synth_data, tmp_path):
    """Half the training images are garbage: the run must stop, naming the skip-rate limit, not crash."""
    import shutil
    import tarfile

    import webdataset as wds

    data_dir = tmp_path / "data"
    shutil.copytree(synth_data.root / "synth" / "tokenizer", data_dir / "synth" / "tokenizer")
    shutil.copytree(synth_data.shards, data_dir / "synth" / "shards" / "captions")
    train = data_dir / "synth" / "shards" / "captions" / "train"
    for shard in sorted(train.glob("train-*.tar")):
        samples: dict[str, dict] = {}
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, extension = member.name.split(".", 1)
                samples.setdefault(key, {"__key__": key})[extension] = tar.extractfile(member).read()
        with wds.TarWriter(str(shard)) as writer:
            for position, sample in enumerate(samples.values()):
                if position % 2 == 0:
                    sample["jpg"] = b"\xff\xd8\xff not an image"
                writer.write(sample)
    command = [VLP_TRAIN, f"data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}", "data.num_workers=0",
               "trainer.enable_progress_bar=false", "debug=limit", "data.batch_size=8",
               "callbacks.data_skips.min_samples=16", "callbacks.data_skips.max_skip_rate=0.2"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "over the limit callbacks.data_skips.max_skip_rate=0.2" in result.stderr
    assert "undecodable image" in result.stderr + (tmp_path / "run" / "train.log").read_text()


def test_vlp_eval_scores_a_checkpoint_on_the_test_split(synth_data, tmp_path):
    vlp_train(synth_data, tmp_path / "train", "debug=limit", "data.batch_size=8", "data.eval_batch_size=8",
              "trainer.max_epochs=1", "system.scheduler.warmup_steps=2")  # fmt: skip
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    command = [str(Path(sys.executable).with_name("vlp-eval")), f"data_dir={synth_data.root}",
               f"hydra.run.dir={tmp_path / 'eval'}", "data.num_workers=0",
               "trainer.enable_progress_bar=false",
               f"ckpt_path={checkpoint}", "eval_split=test", "data.eval_batch_size=8"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics_test.json").read_text())
    assert metrics["test/retrieval/num_images"] == 12  # every test image of the tiny benchmark
    assert 0.0 <= metrics["test/retrieval/img_r5"] <= 100.0 and "test/itm/acc" in metrics
    missing = subprocess.run([*command[:-3], "ckpt_path=null"], capture_output=True, text=True, timeout=600)
    assert missing.returncode != 0 and "vlp-eval needs the checkpoint" in missing.stderr


def test_itc_with_momentum_distillation_trains_and_checkpoints_its_queue(synth_data, tmp_path):
    vlp_train(
        synth_data, tmp_path, "objectives.itc.momentum=0.995", "objectives.itc.queue_size=20",
        "objectives.itc.distill_alpha=0.4", "objectives.itc.distill_warmup_steps=2", "trainer.max_steps=3",
        "trainer.limit_val_batches=1", "data.batch_size=8", "data.eval_batch_size=8",
    )  # fmt: skip
    import torch

    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu")["state_dict"]
    assert int(state["objectives.itc.queue.filled"]) == 20  # 3 steps x 8 rows through 20 slots
    assert int(state["objectives.itc.queue.position"]) == 4
    assert int(state["objectives.itc.training_steps"]) == 3
    momentum, online = (
        state["objectives.itc.momentum.encoders.vision_proj.weight"],
        state["model.vision_proj.weight"],
    )
    assert not torch.equal(momentum, online)  # the copy lags behind the trained weights
    assert torch.allclose(momentum, online, atol=0.05)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val/itc/queue_filled"] == 20

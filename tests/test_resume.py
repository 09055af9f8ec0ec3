"""Step-exact resume: a run SIGKILLed at a random step and resumed with the same command (resume=true)
ends with weights identical to the uninterrupted run's and has seen every training image exactly once
per epoch, in the same batches; a kill in the middle of writing a checkpoint, or a truncated newest
checkpoint, costs only the steps since the previous one."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT

VLP_TRAIN = str(Path(sys.executable).with_name("vlp-train"))
STEPS_PER_EPOCH, EPOCHS, CHECKPOINT_EVERY = 6, 3, 3  # 48 images / (batch 8 x 2 workers) = 3 batches each


def vlp_train(synth_data, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        VLP_TRAIN, f"data_dir={synth_data.root}", f"hydra.run.dir={run_dir}", "++data.resampled=false",
        "data.num_workers=2", "data.batch_size=8", f"trainer.max_epochs={EPOCHS}",
        "trainer.limit_val_batches=0", "trainer.deterministic=true", "trainer.enable_progress_bar=false",
        "callbacks.model_checkpoint=null",
        f"callbacks.step_checkpoint.every_n_train_steps={CHECKPOINT_EVERY}",
        "+callbacks.record._target_=tests.resume_helpers.RecordBatches",
        f"+callbacks.record.path={run_dir}.ids",
        *extra,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def batches_by_step(run_dir: Path) -> dict[int, tuple[int, list[int]]]:
    """(epoch, image ids) of every step; a step trained twice (before a kill and after the resume) counts
    as its last training."""
    steps = {}
    for line in Path(f"{run_dir}.ids").read_text().splitlines():
        record = json.loads(line)
        steps[record["step"]] = (record["epoch"], record["ids"])
    return steps


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(synth_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resume") / "uninterrupted"
    result = vlp_train(synth_data, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def assert_same_training(run_dir: Path, reference: Path, note: str) -> None:
    steps, expected = batches_by_step(run_dir), batches_by_step(reference)
    assert steps == expected, note
    train_ids = sorted(id for epoch, ids in expected.values() if epoch == 0 for id in ids)
    assert len(train_ids) == len(set(train_ids)) == 48  # epoch 0: every image once
    for epoch in range(EPOCHS):
        seen = sorted(id for step_epoch, ids in steps.values() if step_epoch == epoch for id in ids)
        assert seen == train_ids, (note, epoch)  # each image exactly once per epoch
    weights, expected_weights = final_weights(run_dir), final_weights(reference)
    assert weights.keys() == expected_weights.keys()
    different = [name for name in weights if not torch.equal(weights[name], expected_weights[name])]
    assert not different, (note, different[:5])


KILL_STEPS = sorted(random.sample(range(CHECKPOINT_EVERY + 1, STEPS_PER_EPOCH * EPOCHS), 3))


@pytest.mark.slow
@pytest.mark.parametrize("kill_step", KILL_STEPS)
def test_a_run_killed_at_a_random_step_resumes_exactly(synth_data, uninterrupted, tmp_path, kill_step):
    run_dir = tmp_path / "run"
    killed = vlp_train(synth_data, run_dir, "+callbacks.kill._target_=tests.resume_helpers.KillAtStep",
                       f"+callbacks.kill.step={kill_step}")  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: no cleanup, no last save
    resumed = vlp_train(synth_data, run_dir, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    newest = kill_step // CHECKPOINT_EVERY * CHECKPOINT_EVERY
    assert "resume=true: continuing from" in resumed.stderr + resumed.stdout
    assert_same_training(run_dir, uninterrupted, f"killed at step {kill_step}, newest checkpoint {newest}")


@pytest.mark.slow
def test_a_kill_while_writing_a_checkpoint_and_a_truncated_one_fall_back(synth_data, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    kill_at = 2 * STEPS_PER_EPOCH + CHECKPOINT_EVERY  # inside epoch 2, after its first step checkpoint
    killed = vlp_train(synth_data, run_dir, "+callbacks.kill._target_=tests.resume_helpers.KillDuringSave",
                       f"+callbacks.kill.step={kill_at}")  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = run_dir / "checkpoints"
    assert not (checkpoints / f"step{kill_at:08d}.ckpt").exists()  # the half-written file never appeared
    previous = checkpoints / f"step{kill_at - CHECKPOINT_EVERY:08d}.ckpt"
    torch.load(previous, map_location="cpu")  # intact and loadable
    # and the newest complete checkpoint is then damaged on disk: resume passes over it, naming it
    for name in ("last.ckpt", previous.name):
        (checkpoints / name).write_bytes((checkpoints / name).read_bytes()[:1000])
    resumed = vlp_train(synth_data, run_dir, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stderr + resumed.stdout
    assert f"passing over {previous} is truncated or corrupt" in log
    assert f"continuing from {checkpoints / f'step{kill_at - 2 * CHECKPOINT_EVERY:08d}.ckpt'}" in log
    assert_same_training(run_dir, uninterrupted, "killed while saving, then the newest checkpoint truncated")


class WritesAFileWhenUnpickled:
    """What a malicious checkpoint carries: unpickling it would run code (here: create a file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_checkpoint_carrying_pickled_code_is_refused_not_run(synth_data, tmp_path):
    marker = tmp_path / "code-ran"
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "global_step": 3, "payload": WritesAFileWhenUnpickled(str(marker))}, bad)
    command = [
        VLP_TRAIN,
        f"data_dir={synth_data.root}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"ckpt_path={bad}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"vlp-train: checkpoint error: {bad} holds pickled objects other than tensors and plain containers: "
        "refused (weights_only)"
    )
    assert not marker.exists()
    # resume=true passes over such a file in the run folder, naming it
    from vlp.resume import newest_checkpoint

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    bad.rename(tmp_path / "run" / "checkpoints" / "bad.ckpt")
    assert newest_checkpoint(tmp_path / "run" / "checkpoints") is None
    assert not marker.exists()

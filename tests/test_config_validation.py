"""Fail fast: every shipped recipe passes the config checks, and bad configs are refused in one line
before any data is read or model built."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import compose_train_config
from vlp.build import build_model
from vlp.validate import ConfigError, model_capabilities, validate

VLP_TRAIN = str(Path(sys.executable).with_name("vlp-train"))

RECIPES = [
    [],
    ["experiment=demo"],
    ["experiment=pretrain_vilt"],
    ["experiment=pretrain_meter"],
    ["experiment=pretrain_clip"],
    ["experiment=finetune_retrieval"],
    ["experiment=finetune_retrieval_itm", "model=vilt_tiny"],
    ["experiment=finetune_captioning"],
]


@pytest.mark.parametrize("overrides", RECIPES, ids=lambda o: " ".join(o) or "default")
def test_the_shipped_recipes_pass(synth_data, overrides):
    validate(compose_train_config([f"data_dir={synth_data.root}", "run_dir=unused", *overrides]))


def test_the_task_recipes_pass(synth_vqa, synth_nlvr2, synth_data):
    for experiment in ("finetune_vqa", "finetune_nlvr2"):
        validate(
            compose_train_config(
                [f"data_dir={synth_data.root}", "run_dir=unused", f"experiment={experiment}"]
            )
        )


@pytest.mark.parametrize("model", ["albef_tiny", "vilt_tiny", "meter_tiny", "clip_tiny"])
def test_capabilities_read_from_the_config_are_the_built_model_s(model):
    cfg = compose_train_config(["run_dir=unused", f"model={model}"])
    family, capabilities = model_capabilities(cfg.model)
    built = build_model(cfg, vocab_size=50).dims
    assert (family, capabilities) == (built.family, set(built.capabilities))


BAD_CONFIGS = {  # override -> words the one-line error must contain
    "data.batch_size=0": "data.batch_size=0: must be a positive integer",
    "data.batch_size=eight": "data.batch_size='eight': must be a positive integer",
    "trainer.precision=fp8": "trainer.precision='fp8': must be one of",
    "system.optimizer.lr=-0.001": "system.optimizer.lr=-0.001: must be a positive number",
    "data_dir=/nonexistent": "data.root=/nonexistent/synth/shards/captions: no such folder",
    "++data.val_split=valid": "data.val_split=valid: ",
    "objectives=[itc,vqa]": "objectives.vqa needs vqa data but data is CaptionDataModule",
    "evaluators=[nlvr2]": "evaluators.nlvr2 needs nlvr2 data",
    "model=clip_tiny": "objectives.itm needs a fusion encoder, which model family clip does not have",
    "model=vilt_tiny": "objectives.itc needs unimodal embeddings in a shared space",
    "model.vision.image_size=70": "model.vision.image_size=70 is not a multiple of the patch size 24",
    "model.init_from=/no/such.ckpt": "model.init_from=/no/such.ckpt: no such file",
    "monitor=val/vqa/overall": "monitor=val/vqa/overall is not logged by this run",
    "data=synth_retrieval": "objectives.mlm needs masked tokens but data.mlm_probability=0.0",
    "trainer.accumulate_grad_batches=0": "trainer.accumulate_grad_batches=0: must be a positive integer",
    "callbacks.step_checkpoint.every_n_train_steps=0": "every_n_train_steps=0: must be a positive integer",
}


@pytest.mark.parametrize("override", list(BAD_CONFIGS))
def test_a_bad_config_is_one_line_naming_key_value_and_fix(synth_data, override):
    with pytest.raises(ConfigError) as error:
        validate(compose_train_config([f"data_dir={synth_data.root}", "run_dir=unused", override]))
    message = str(error.value)
    assert BAD_CONFIGS[override] in message and "\n" not in message and ":" in message


def test_a_tokenizer_larger_than_the_pretrained_text_encoder_is_refused(synth_data, tmp_path):
    from transformers import BertConfig

    BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path / "bert"
    )
    cfg = compose_train_config(
        [f"data_dir={synth_data.root}", "run_dir=unused", f"model.text.name_or_path={tmp_path / 'bert'}"]
    )
    with pytest.raises(
        ConfigError, match=r"tokenizer: has \d+ tokens but model.text.name_or_path=.* embeds only 100"
    ):
        validate(cfg)


def test_vlp_train_prints_the_line_and_exits_2_within_seconds(synth_data, tmp_path):
    started = time.monotonic()
    command = [VLP_TRAIN, f"data_dir={synth_data.root}", f"hydra.run.dir={tmp_path}", "model=clip_tiny"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[-1]] or all("Warn" in line for line in lines[:-1]), result.stderr
    assert lines[-1].startswith("vlp-train: config error: objectives.itm needs a fusion encoder")
    assert not (tmp_path / "checkpoints").exists()
    assert time.monotonic() - started < 60


def test_a_mistyped_key_or_option_gets_the_closest_name():
    from vlp.train import CONFIG_DIR
    from vlp.validate import override_problem

    assert override_problem(["trainer.max_epoch=1"], CONFIG_DIR) == (
        "trainer.max_epoch=1: no such key (did you mean trainer.max_epochs?; a new key needs a leading +)"
    )
    assert override_problem(["model=albef_tiniest"], CONFIG_DIR).startswith(
        "model=albef_tiniest: no such option in conf/model/; options: albef, albef_tiny,"
    )
    assert override_problem(["trainer.max_epochs=1", "+extra=1"], CONFIG_DIR) is None


def test_the_wandb_run_id_belongs_to_the_run_folder():
    from omegaconf import OmegaConf

    ids = [
        OmegaConf.to_container(compose_train_config([f"run_dir={d}", "logger=wandb"]).logger, resolve=True)
        for d in ("/runs/a", "/runs/a", "/runs/b")
    ]
    assert ids[0]["wandb"]["id"] == ids[1]["wandb"]["id"] != ids[2]["wandb"]["id"]
    assert ids[0]["wandb"]["resume"] == "allow"

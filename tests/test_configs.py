"""Every experiment preset (and the main alternatives of each group) composes and builds."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import compose_train_config
from vlp.build import build_callbacks, build_loggers, build_run
from vlp.train import CONFIG_DIR

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def overrides_for(synth_data, tmp_path, *extra: str) -> list[str]:
    return [f"data_dir={synth_data.root}", f"run_dir={tmp_path}", *extra]


def test_there_are_experiments():
    assert "demo" in EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, synth_data, synth_vqa, synth_nlvr2, tmp_path):
    cfg = compose_train_config(overrides_for(synth_data, tmp_path, f"experiment={experiment}"))
    OmegaConf.resolve(cfg)  # every interpolation resolves
    run = build_run(cfg)
    assert run.system.objectives and run.system.model.dims.vocab_size == len(run.datamodule.tokenizer)
    trainer = instantiate(cfg.trainer, callbacks=build_callbacks(cfg), logger=build_loggers(cfg) or False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize(
    "choice",
    ["trainer=cpu", "trainer=ddp", "logger=csv", "logger=tensorboard", "logger=none", "debug=fast_dev_run",
     "debug=overfit", "debug=limit", "objectives=[itc]", "objectives=[itm,mlm]"],
)  # fmt: skip
def test_group_options_compose(choice, synth_data, tmp_path):
    cfg = compose_train_config(overrides_for(synth_data, tmp_path, choice))
    OmegaConf.resolve(cfg)
    build_callbacks(cfg)
    build_loggers(cfg)


DATA_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "data").glob("*.yaml"))


@pytest.mark.parametrize("data", DATA_CONFIGS)
def test_every_data_config_instantiates(data, synth_data, tmp_path):
    cfg = compose_train_config(overrides_for(synth_data, tmp_path, f"data={data}"))
    OmegaConf.resolve(cfg)
    datamodule = instantiate(cfg.data)
    assert datamodule.batch_size == cfg.data.batch_size


@pytest.mark.parametrize("data", ["synth_vqa", "synth_nlvr2"])
def test_synthetic_task_configs_find_their_shards(data, synth_data, synth_vqa, synth_nlvr2, tmp_path):
    cfg = compose_train_config(overrides_for(synth_data, tmp_path, f"data={data}"))
    datamodule = instantiate(cfg.data)
    assert datamodule.index("train").num_samples > 0 and datamodule.index("val").num_samples > 0


def test_wandb_logger_composes_offline_without_an_api_key(synth_data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cfg = compose_train_config(overrides_for(synth_data, tmp_path, "logger=wandb"))
    assert cfg.logger.wandb.offline is True


def test_unknown_keys_are_rejected(synth_data, tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_train_config(overrides_for(synth_data, tmp_path, "trainer.max_epoch=3"))
    with pytest.raises(ConfigCompositionException):
        compose_train_config(overrides_for(synth_data, tmp_path, "model=no_such_model"))

"""Turning a composed config into objects. Only the entry points (and tests) call this with a whole cfg.

Sizes that must agree are read from built objects here, never copied between config groups: the text
tower's vocabulary from the tokenizer, the image size and normalisation from the vision tower, and the
heads' widths from the model (``model.dims``).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from vlp.checkpoint import init_from_checkpoint
from vlp.model.vlp import VLPModel
from vlp.system import VLPSystem


@dataclass
class Run:
    datamodule: pl.LightningDataModule
    system: VLPSystem


def build_model(cfg: DictConfig, vocab_size: int) -> VLPModel:
    model_cfg = cfg.model.copy()  # init_from is applied by build_run, once the heads exist too
    with open_dict(model_cfg):
        model_cfg.pop("init_from", None)
    return instantiate(model_cfg, text={"vocab_size": vocab_size})


def from_data(factory: Any, datamodule: pl.LightningDataModule) -> dict[str, Any]:
    """What an objective or evaluator takes from the data: the VQA answer vocabulary (``answers``) or its
    size (``num_answers``), when its signature asks for them."""
    parameters = inspect.signature(getattr(factory, "func", factory)).parameters
    wanted = [name for name in ("num_answers", "answers") if name in parameters]
    if wanted and not hasattr(datamodule, "answers"):
        raise ValueError(
            "VQA objectives and evaluators need VQA data (an answer vocabulary): data=vqa or synth_vqa"
        )
    given = {"num_answers": lambda: len(datamodule.answers), "answers": lambda: datamodule.answers}
    return {name: given[name]() for name in wanted}


def build_run(cfg: DictConfig) -> Run:
    datamodule = instantiate(cfg.data)
    model = build_model(cfg, vocab_size=len(datamodule.tokenizer))
    datamodule.set_image_config(model.vision.image_size, model.vision.mean, model.vision.std)
    objectives = {
        name: factory(dims=model.dims, **from_data(factory, datamodule))
        for name, factory in instantiate(cfg.objectives).items()
    }
    evaluators = {
        name: evaluator(**from_data(evaluator, datamodule))
        if isinstance(evaluator, functools.partial)
        else evaluator
        for name, evaluator in instantiate(cfg.get("evaluators") or {}).items()
    }
    system = instantiate(cfg.system, model=model, objectives=objectives, evaluators=evaluators)
    if cfg.model.get("init_from"):
        init_from_checkpoint(system, cfg.model.init_from)
    return Run(datamodule=datamodule, system=system)


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def build_loggers(cfg: DictConfig) -> list[Any]:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]

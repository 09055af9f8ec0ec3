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
from vlp.types import CONTRASTIVE, CROSS_ATTENTION_LAYERS, FUSION, ModelDims


@dataclass
class Run:
    datamodule: pl.LightningDataModule
    system: VLPSystem


def build_model(cfg: DictConfig, vocab_size: int) -> VLPModel:
    model_cfg = cfg.model.copy()  # init_from is applied by build_run, once the heads exist too
    with open_dict(model_cfg):
        model_cfg.pop("init_from", None)
    return instantiate(model_cfg, text={"vocab_size": vocab_size})


def _special_token(tokenizer: Any, names: tuple[str, ...]) -> int:
    """The id of the first of ``names`` (e.g. ``cls_token_id``, ``bos_token_id``) the tokenizer has."""
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"the tokenizer has none of {', '.join(names)}, which caption generation needs")


# What objectives and evaluators can ask the data for, by signature parameter name.
DATA_PROVIDERS: dict[str, Any] = {
    "num_answers": lambda data: len(data.answers),
    "answers": lambda data: data.answers,
    "tokenizer": lambda data: data.tokenizer,
    # A caption decoder starts from [CLS] and stops at [SEP], the tokens every caption is framed by.
    "bos_token_id": lambda data: _special_token(data.tokenizer, ("cls_token_id", "bos_token_id")),
    "eos_token_id": lambda data: _special_token(data.tokenizer, ("sep_token_id", "eos_token_id")),
    "pad_token_id": lambda data: _special_token(data.tokenizer, ("pad_token_id",)),
    # token ids that are never words of a caption ([CLS], [SEP], [PAD], [MASK], [UNK])
    "special_token_ids": lambda data: list(data.tokenizer.all_special_ids),
}


def from_data(factory: Any, datamodule: Any) -> dict[str, Any]:
    """What an objective or evaluator takes from the data, when its signature asks for it: the VQA answer
    vocabulary (``answers``) or its size (``num_answers``), the ``tokenizer``, and the special token ids
    a caption decoder needs (``bos_token_id``, ``eos_token_id``, ``pad_token_id``)."""
    parameters = inspect.signature(getattr(factory, "func", factory)).parameters
    wanted = [name for name in DATA_PROVIDERS if name in parameters]
    if {"num_answers", "answers"} & set(wanted) and not hasattr(datamodule, "answers"):
        raise ValueError(
            "VQA objectives and evaluators need VQA data (an answer vocabulary): data=vqa or synth_vqa"
        )
    return {name: DATA_PROVIDERS[name](datamodule) for name in wanted}


CAPABILITY_WORDS = {
    CONTRASTIVE: "unimodal embeddings in a shared space",
    FUSION: "a fusion encoder",
    CROSS_ATTENTION_LAYERS: "fusion layers with cross-attention to the image (ALBEF/BLIP)",
}


def check_capabilities(kind: str, parts: dict[str, Any], dims: ModelDims) -> None:
    """Refuse, in one line, an objective or evaluator whose ``needs`` the model family lacks (ITM or MLM
    on a dual encoder, ITC on ViLT), naming the ones that would fit."""
    for name, part in parts.items():
        needs = getattr(getattr(part, "func", part), "needs", ())
        missing = [need for need in needs if need not in dims.capabilities]
        if missing:
            raise ValueError(
                f"{kind}.{name} needs {CAPABILITY_WORDS[missing[0]]}, which model family {dims.family} does "
                f"not have (it has: {', '.join(sorted(dims.capabilities)) or 'nothing'}): remove {name} "
                f"from {kind}"
            )


def build_objectives(factories: dict[str, Any], dims: ModelDims, data: Any) -> dict[str, Any]:
    """Objectives from their partially configured classes (``instantiate(cfg.objectives)``), given the
    model's sizes and what they take from the data (see :func:`from_data`; ``data`` is a datamodule, or
    anything with the attributes asked for, e.g. an exported model's tokenizer and answers)."""
    check_capabilities("objectives", factories, dims)
    return {name: factory(dims=dims, **from_data(factory, data)) for name, factory in factories.items()}


def build_run(cfg: DictConfig) -> Run:
    datamodule = instantiate(cfg.data)
    model = build_model(cfg, vocab_size=len(datamodule.tokenizer))
    datamodule.set_image_config(model.vision.image_size, model.vision.mean, model.vision.std)
    objectives = build_objectives(instantiate(cfg.objectives), model.dims, datamodule)
    evaluator_factories = instantiate(cfg.get("evaluators") or {})
    check_capabilities("evaluators", evaluator_factories, model.dims)
    evaluators = {
        name: evaluator(**from_data(evaluator, datamodule))
        if isinstance(evaluator, functools.partial)
        else evaluator
        for name, evaluator in evaluator_factories.items()
    }
    system = instantiate(cfg.system, model=model, objectives=objectives, evaluators=evaluators)
    if cfg.model.get("init_from"):
        init_from_checkpoint(system, cfg.model.init_from)
    return Run(datamodule=datamodule, system=system)


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def build_loggers(cfg: DictConfig) -> list[Any]:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]

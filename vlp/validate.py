"""Fail fast: check a composed config before any data is read or any model is built.

Hydra already refuses keys that are not in the config (struct mode). What it cannot see is checked here,
from the config alone (and small files: split indexes, tokenizer and text-encoder configs): values of
the wrong type or range, data that is not there, objectives that the data cannot feed or that the model
family cannot serve, an image size the patch size does not divide, a tokenizer whose vocabulary the
pretrained text encoder does not have, a monitored metric that nothing logs. Each problem is one line
naming the key, the value and the fix; vlp-train prints it and exits with status 2.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vlp.types import CONTRASTIVE, CROSS_ATTENTION_LAYERS, FUSION


class ConfigError(ValueError):
    """A config that cannot work, with the key, the value and the fix in one line."""


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _non_negative_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


# key -> (check, what the value must be). Only keys present in the config are checked.
SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.batch_size": (_positive_int, "a positive integer"),
    "data.eval_batch_size": (_positive_int, "a positive integer"),
    "data.num_workers": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "an integer >= 0",
    ),
    "data.max_length": (_positive_int, "a positive integer (tokens)"),
    "data.mlm_probability": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)"),
    "data.shuffle_buffer": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "trainer.max_epochs": (
        lambda v: v is None or (isinstance(v, int) and v >= -1),
        "an integer (-1: no limit)",
    ),
    "trainer.max_steps": (lambda v: isinstance(v, int) and v >= -1, "an integer (-1: no limit)"),
    "trainer.accumulate_grad_batches": (_positive_int, "a positive integer"),
    "trainer.gradient_clip_val": (lambda v: v is None or _non_negative_number(v), "a number >= 0, or null"),
    "trainer.precision": (
        lambda v: str(v) in {"32", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true"},
        "one of 32-true, 16-mixed, bf16-mixed, bf16-true, 16-true",
    ),
    "system.optimizer.lr": (lambda v: isinstance(v, (int, float)) and v > 0, "a positive number"),
    "system.weight_decay": (_non_negative_number, "a number >= 0"),
    "system.scheduler.warmup_steps": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "callbacks.step_checkpoint.every_n_train_steps": (_positive_int, "a positive integer"),
}

DATA_KINDS = {  # datamodule class -> what it feeds
    "VQADataModule": "vqa",
    "NLVR2DataModule": "nlvr2",
    "CaptionDataModule": "captions",
    "RetrievalDataModule": "captions",
}
NEEDS_DATA = {"vqa": "vqa", "nlvr2": "nlvr2", "itc": "captions", "itm": "captions", "mlm": "captions",
              "captioning": "captions", "retrieval": "captions", "zero_shot_retrieval": "captions",
              "itm_retrieval": "captions"}  # fmt: skip
DATA_CONFIGS = {"vqa": "data=vqa or data=synth_vqa", "nlvr2": "data=nlvr2 or data=synth_nlvr2",
                "captions": "a caption dataset, e.g. data=coco_captions or data=synth_captions"}  # fmt: skip


def _select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False, default=None)


def _has(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = _select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node


def check_schema(cfg: DictConfig) -> Iterator[str]:
    for key, (check, wanted) in SCHEMA.items():
        if _has(cfg, key) and not check(_select(cfg, key)):
            yield f"{key}={_select(cfg, key)!r}: must be {wanted}"


def _target_name(node: Any) -> str:
    return str(node.get("_target_", "")).rpartition(".")[2] if isinstance(node, DictConfig) else ""


def check_data(cfg: DictConfig) -> Iterator[str]:
    data = cfg.get("data")
    if data is None:
        return
    root = data.get("root")
    if root is not None and not data.get("train_datasets"):
        root_path = Path(str(root))
        if not root_path.is_dir():
            yield (f"data.root={root}: no such folder: prepare the shards (vlp-shards, see README) or point "
                   "data_dir (or $VLP_DATA_DIR) at them")  # fmt: skip
            return
        for split_key in ("train_split", "val_split"):
            splits = data.get(split_key)
            for split in [splits] if isinstance(splits, str) else list(splits or []):
                if not (root_path / split / "index.json").is_file():
                    yield (
                        f"data.{split_key}={split}: {root_path / split}/index.json is missing: "
                        "convert that split with vlp-shards or name one of the splits that exist"
                    )
    tokenizer = data.get("tokenizer")
    if tokenizer and str(tokenizer).startswith(("/", ".")) and not Path(str(tokenizer)).exists():
        yield (
            f"data.tokenizer={tokenizer}: no such folder: train one with vlp-tokenizer or name a hub "
            "tokenizer"
        )


def check_data_feeds_objectives(cfg: DictConfig) -> Iterator[str]:
    kind = DATA_KINDS.get(_target_name(cfg.get("data")))
    if kind is None:
        return
    for group in ("objectives", "evaluators"):
        for name in cfg.get(group) or {}:
            wanted = NEEDS_DATA.get(name)
            if wanted is not None and wanted != kind:
                yield (f"{group}.{name} needs {wanted} data but data is {_target_name(cfg.data)} ({kind}): "
                       f"use {DATA_CONFIGS[wanted]}, or remove {name} from {group}")  # fmt: skip
    objectives = cfg.get("objectives") or {}
    if "mlm" in objectives and _select(cfg, "data.mlm_probability") == 0:
        yield "objectives.mlm needs masked tokens but data.mlm_probability=0.0: set e.g. 0.15, or drop mlm"


def model_capabilities(model: DictConfig) -> tuple[str, set[str]]:
    """The family's name and capabilities, read from its config (vlp.types; the built model's
    ``dims.capabilities`` agree: tests/test_config_validation.py)."""
    family = str(model.get("family", "vilt" if _target_name(model) == "SingleStreamModel" else "albef"))
    if _target_name(model) == "SingleStreamModel":
        return family, {FUSION}
    capabilities = {CONTRASTIVE} if model.get("embed_dim") else set()
    fusion = model.get("fusion")
    if fusion is not None:
        capabilities.add(FUSION)
        if _target_name(fusion) == "CrossAttentionFusion":
            capabilities.add(CROSS_ATTENTION_LAYERS)
    return family, capabilities


def check_model_serves_objectives(cfg: DictConfig) -> Iterator[str]:
    from hydra.utils import get_class

    from vlp.build import CAPABILITY_WORDS

    if cfg.get("model") is None:
        return
    family, capabilities = model_capabilities(cfg.model)
    for group in ("objectives", "evaluators"):
        for name, node in (cfg.get(group) or {}).items():
            try:
                needs = getattr(get_class(str(node._target_)), "needs", ())
            except Exception:  # noqa: BLE001 - a wrong _target_ is Hydra's own one-line error later
                continue
            missing = [need for need in needs if need not in capabilities]
            if missing:
                has = ", ".join(sorted(capabilities)) or "nothing"
                yield (
                    f"{group}.{name} needs {CAPABILITY_WORDS[missing[0]]}, which model family {family} "
                    f"does not have (it has: {has}): remove {name} from {group} or pick another model"
                )


def check_image_size(cfg: DictConfig) -> Iterator[str]:
    vision = _select(cfg, "model.vision")
    if not isinstance(vision, DictConfig) or vision.get("image_size") is None:
        return
    kwargs = vision.get("model_kwargs") or {}
    patch = kwargs.get("patch_size")
    if patch is None and (match := re.search(r"patch(\d+)", str(vision.get("name", "")))):
        patch = int(match.group(1))
    size = vision.image_size
    if patch and (not isinstance(size, int) or size % int(patch)):
        yield (f"model.vision.image_size={size} is not a multiple of the patch size {patch} of "
               f"{vision.get('name')}: use e.g. {max(1, round(size / patch)) * patch}")  # fmt: skip


def check_tokenizer_vocabulary(cfg: DictConfig) -> Iterator[str]:
    """A pretrained text encoder (model.text.name_or_path) must have an embedding for every token id
    the tokenizer can produce."""
    name = _select(cfg, "model.text.name_or_path")
    tokenizer = _select(cfg, "data.tokenizer")
    if not name or not tokenizer:
        return
    from transformers import AutoConfig, AutoTokenizer

    try:
        vocab = AutoConfig.from_pretrained(str(name)).vocab_size
        tokens = len(AutoTokenizer.from_pretrained(str(tokenizer)))
    except (OSError, ValueError):
        return  # not readable here (offline hub name): the build reports it
    if tokens > vocab:
        yield (f"data.tokenizer={tokenizer}: has {tokens} tokens but model.text.name_or_path={name} embeds "
               f"only {vocab}: use that encoder's own tokenizer (data.tokenizer={name})")  # fmt: skip


def check_files(cfg: DictConfig) -> Iterator[str]:
    for key in ("model.init_from", "ckpt_path"):
        value = _select(cfg, key)
        if value and not Path(str(value)).is_file():
            yield f"{key}={value}: no such file: give the path of a checkpoint (.ckpt / .safetensors)"
    if cfg.get("resume") and cfg.get("ckpt_path"):
        yield f"resume=true picks the checkpoint itself but ckpt_path={cfg.ckpt_path} is set: drop one"


def check_monitor(cfg: DictConfig) -> Iterator[str]:
    """``monitor`` must be something the run logs: ``val/loss`` or ``val/<objective or evaluator>/...``."""
    monitor = cfg.get("monitor")
    if not monitor or cfg.get("callbacks") is None or _select(cfg, "callbacks.model_checkpoint") is None:
        return
    parts = str(monitor).split("/")
    names = set(cfg.get("objectives") or {}) | set(cfg.get("evaluators") or {})
    if (
        parts[0] != "val"
        or (len(parts) > 2 and parts[1] not in names)
        or (len(parts) == 2 and parts[1] != "loss")
    ):
        logged = ", ".join(sorted(names))
        yield (
            f"monitor={monitor} is not logged by this run (it logs val/loss and val/<name>/... for "
            f"{logged}): set monitor to one of those, e.g. monitor=val/loss"
        )


CHECKS = (check_schema, check_files, check_data, check_data_feeds_objectives, check_model_serves_objectives,
          check_image_size, check_tokenizer_vocabulary, check_monitor)  # fmt: skip


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError with the first problem found (the cheap checks first)."""
    for check in CHECKS:
        for problem in check(cfg):
            raise ConfigError(problem)


def override_problem(overrides: list[str], config_dir: str) -> str | None:
    """Compose ``overrides`` as vlp-train will, and turn what Hydra refuses (a key that does not exist,
    an option a group does not have) into one line with the closest names; None when it composes."""
    import difflib

    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException

    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
    except MissingConfigException as error:
        text = str(error)
        match = re.search(r"Could not find '([^']+)/([^']+)'", text)
        if match is None:
            return text.splitlines()[0]
        group, option = match.groups()
        options = re.findall(r"^\t(\S+)$", text, flags=re.MULTILINE)
        return f"{group}={option}: no such option in conf/{group}/; options: {', '.join(options)}"
    except ConfigCompositionException as error:
        full_key = getattr(error.__cause__, "full_key", None)
        if not full_key:
            return str(error).splitlines()[0]
        value = next(
            (o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == full_key), ""
        )
        parent, _, leaf = str(full_key).rpartition(".")
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            base = compose(config_name="train")
        siblings = list(_select(base, parent).keys()) if parent else list(base.keys())
        close = difflib.get_close_matches(leaf, [str(k) for k in siblings], n=1)
        hint = (
            f"did you mean {parent + '.' if parent else ''}{close[0]}?"
            if close
            else "see vlp-train --cfg job"
        )
        return f"{full_key}={value}: no such key ({hint}; a new key needs a leading +)"
    del cfg
    return None

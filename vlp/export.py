"""vlp-export: a training checkpoint -> a self-contained folder that ``vlp.load`` serves.

Usage: ``vlp-export CKPT OUT [--config RUN/config.yaml] [--data-dir DIR]``. ``CKPT`` is a Lightning
checkpoint of a vlp-train or vlp-eval run (or a state dict / safetensors file of one); its run config is
read from ``--config``, else from ``config.yaml`` next to the checkpoint or in the run folder above
``checkpoints/``. The tokenizer (and VQA answers) are read from the run's data folder; when it has moved
since training, ``--data-dir`` names where it is now. ``OUT`` must not exist or be empty. It receives:

- ``model.safetensors``: the model and the heads that serve inference (ITM, VQA, NLVR2, captioning);
  no optimizer state and nothing that exists only to train (ITC's temperature, momentum copies and
  queue, the MLM head);
- ``config.yaml``: the model and head configs that vlp's own builders rebuild them from (towers built
  from their configs, never from the hub or a weights file), and the text length the data used;
- ``tokenizer/``: the run's tokenizer, saved with its own ``save_pretrained``;
- ``image_processing.json``: the evaluation transform (image size, mean, std, resize and crop);
- ``answers.json``: the VQA answer vocabulary, when there is a VQA head.

Nothing in the folder points back at the run's data folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from vlp.build import build_model, build_objectives
from vlp.checkpoint import read_state_dict
from vlp.data.datamodule import eval_image_settings
from vlp.model.vlp import VLPModel
from vlp.objectives.captioning import Captioning
from vlp.objectives.itm import ImageTextMatching
from vlp.objectives.nlvr2 import NLVR2PairClassification
from vlp.objectives.vqa import VQAClassification

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
TOKENIZER_DIR = "tokenizer"
IMAGE_PROCESSING_FILE = "image_processing.json"
ANSWERS_FILE = "answers.json"  # the same {"answers": [...]} as vlp-shards vqa writes

# Objectives whose heads answer questions about new inputs; the others (ITC, MLM) exist only to train.
INFERENCE_HEADS = (ImageTextMatching, VQAClassification, NLVR2PairClassification, Captioning)


class ExportError(ValueError):
    """A checkpoint, config or output folder that vlp-export cannot use; the message says which and why."""


class InferenceModules(nn.Module):
    """The model and its inference heads under the names a VLPSystem gives them (``model.*``,
    ``objectives.<name>.*``), so that a training checkpoint's tensors load by name."""

    def __init__(self, model: VLPModel, objectives: dict[str, nn.Module]) -> None:
        super().__init__()
        self.model = model
        self.objectives = nn.ModuleDict(objectives)


def build_inference_modules(config: DictConfig, data: Any) -> InferenceModules:
    """Model and heads from an export's ``config.yaml`` (keys ``model``, ``objectives``); ``data`` gives
    what heads take from the data (``tokenizer``, ``answers``: see vlp.build.from_data)."""
    model = build_model(config, vocab_size=len(data.tokenizer))
    objectives = build_objectives(instantiate(config.objectives), model.dims, data)
    return InferenceModules(model, objectives).eval()


def exported_data(tokenizer: Any, answers: list[str] | None) -> SimpleNamespace:
    """What vlp.build.from_data reads from a datamodule, from an export's files. Without answers there is
    no ``answers`` attribute, so that a VQA head is refused as it is without VQA data."""
    return SimpleNamespace(tokenizer=tokenizer, **({"answers": answers} if answers is not None else {}))


def find_run_config(checkpoint: Path) -> Path | None:
    """``config.yaml`` beside the checkpoint, or in the run folder of ``RUN/checkpoints/CKPT``."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
    return None


def inference_objectives(objectives: DictConfig) -> DictConfig:
    """The run's objective configs whose classes are inference heads (by the class the config builds)."""
    factories = instantiate(objectives)  # partially configured classes: cheap, nothing is built yet
    keep = [
        name
        for name, factory in factories.items()
        if issubclass(getattr(factory, "func", type(factory)), INFERENCE_HEADS)
    ]
    return OmegaConf.create({name: OmegaConf.to_container(objectives[name]) for name in keep})


def self_contained_model_config(model: DictConfig, vocab_size: int) -> DictConfig:
    """The run's model config, rebuildable without the files it was first built from: the towers'
    weights come from ``model.safetensors``, so timm loads no pretrained weights and a HF text tower named
    by ``name_or_path`` is built from its HF config instead (read here, once, from the built tower)."""
    config = model.copy()
    with open_dict(config):
        config.pop("init_from", None)
        for tower in ("vision", "text", "fusion"):
            part = config.get(tower)
            if isinstance(part, DictConfig) and "gradient_checkpointing" in part:
                part.gradient_checkpointing = False  # a training memory trade, nothing to infer with
        vision = config.get("vision")
        if isinstance(vision, DictConfig):
            vision.pretrained = False
            vision.checkpoint_path = None
        text = config.get("text")
        if isinstance(text, DictConfig) and text.get("name_or_path"):
            tower = instantiate(text, vocab_size=vocab_size)
            text.config = tower.hf_config.to_diff_dict()
            text.name_or_path = None
    return config


def _check_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not an empty folder: choose a new OUT or empty it")


def _read_config(checkpoint: Path, config_path: Path | None) -> tuple[DictConfig, Path]:
    if config_path is None:
        config_path = find_run_config(checkpoint)
        if config_path is None:
            raise ExportError(
                f"no {CONFIG_FILE} next to {checkpoint} or in its run folder: pass --config RUN/{CONFIG_FILE}"
            )
    elif not config_path.is_file():
        raise ExportError(f"--config {config_path}: no such file")
    config = OmegaConf.load(config_path)
    missing = [key for key in ("model", "data", "objectives") if not config.get(key)]
    if missing:
        raise ExportError(f"{config_path} has no {', '.join(missing)}: it is not a vlp run's config.yaml")
    return config, config_path


def moved_data_dir(data: DictConfig, old: str, new: str) -> DictConfig:
    """The run's (resolved) data config with every path under its old ``data_dir`` moved under ``new``."""
    old_root = Path(old)

    def move(value: Any) -> Any:
        if isinstance(value, str) and Path(value).is_relative_to(old_root):
            return str(Path(new) / Path(value).relative_to(old_root))
        if isinstance(value, dict):
            return {key: move(item) for key, item in value.items()}
        if isinstance(value, list):
            return [move(item) for item in value]
        return value

    return OmegaConf.create(move(OmegaConf.to_container(data, resolve=True)))


def export(
    checkpoint: str | Path,
    out: str | Path,
    config_path: str | Path | None = None,
    data_dir: str | Path | None = None,
) -> Path:
    """Write the export folder ``out`` for ``checkpoint`` (see the module docstring); returns ``out``.
    ``data_dir``: where the run's data folder is now, when it has moved since training."""
    checkpoint, out = Path(checkpoint), Path(out)
    _check_output(out)
    if not checkpoint.is_file():
        raise ExportError(f"{checkpoint}: no such checkpoint file")
    run_config, config_path = _read_config(checkpoint, Path(config_path) if config_path else None)
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise ExportError(f"--data-dir {data_dir}: no such folder")
        if not run_config.get("data_dir"):
            raise ExportError(f"{config_path} has no data_dir to move: edit its data paths instead")
        run_config.data = moved_data_dir(run_config.data, str(run_config.data_dir), str(data_dir))
    try:
        state = read_state_dict(checkpoint)  # torch.load(weights_only=True), or safetensors
    except ValueError as error:
        raise ExportError(str(error).splitlines()[0]) from None

    datamodule = instantiate(run_config.data)
    try:
        tokenizer = datamodule.tokenizer
    except OSError as error:
        raise ExportError(
            f"data.tokenizer={run_config.data.tokenizer} of {config_path} cannot be loaded, and the export "
            f"copies it ({str(error).splitlines()[0]}); if the data folder has moved, pass --data-dir"
        ) from None
    config = OmegaConf.create(
        {
            "vlp_export": FORMAT_VERSION,
            "source": {"checkpoint": str(checkpoint.resolve()), "config": str(config_path.resolve())},
            "model": self_contained_model_config(run_config.model, len(tokenizer)),
            "objectives": inference_objectives(run_config.objectives),
            # the tokenizer's max_length in the data pipeline: longer texts are cut as training cut them
            "text": {"max_length": int(run_config.data.max_length)},
        }
    )
    try:
        modules = build_inference_modules(config, datamodule)
    except FileNotFoundError as error:  # a VQA head without its answers.json
        raise ExportError(
            f"{error} (the export copies the answer vocabulary: if the data folder moved, pass --data-dir)"
        ) from None
    _load_checkpoint_tensors(modules, state, checkpoint, config_path)
    datamodule.set_image_config(modules.model.vision.image_size, modules.model.vision.mean,
                                modules.model.vision.std)  # fmt: skip
    answers = (
        datamodule.answers
        if any(isinstance(head, VQAClassification) for head in modules.objectives.values())
        else None
    )
    _write_folder(out, modules, config, tokenizer, eval_image_settings(**datamodule.image_config), answers)
    return out


def _load_checkpoint_tensors(
    modules: InferenceModules, state: dict[str, Any], checkpoint: Path, config_path: Path
) -> None:
    """Every tensor of ``modules`` from the checkpoint, exactly: a head or tower missing from it means the
    checkpoint and the config are not of the same run."""
    wanted = modules.state_dict()
    problems = [
        f"{name} (missing)" if name not in state else f"{name} {tuple(state[name].shape)} != {tuple(t.shape)}"
        for name, t in wanted.items()
        if name not in state or state[name].shape != t.shape
    ]
    if problems:
        raise ExportError(
            f"{checkpoint} does not match the model of {config_path}: {len(problems)} tensors missing or of "
            f"another shape, e.g. {'; '.join(problems[:3])}: pass the run's own config with --config"
        )
    modules.load_state_dict({name: state[name] for name in wanted}, strict=True)


def _write_folder(
    out: Path,
    modules: InferenceModules,
    config: DictConfig,
    tokenizer: Any,
    image_settings: dict[str, Any],
    answers: list[str] | None,
) -> None:
    """Write everything into a hidden sibling folder, then rename it: an export that fails half-way
    leaves no folder that looks complete."""
    from safetensors.torch import save_model  # handles tied tensors (the caption LM head) by name

    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_model(modules, str(partial / WEIGHTS_FILE), metadata={"format": "pt", "vlp_export": "1"})
    (partial / CONFIG_FILE).write_text(OmegaConf.to_yaml(config))
    # safetensors writes through a private temporary file (mode 0600); share the weights as the other
    # files are shared, by the user's umask
    shutil.copymode(partial / CONFIG_FILE, partial / WEIGHTS_FILE)
    tokenizer.save_pretrained(partial / TOKENIZER_DIR)
    (partial / IMAGE_PROCESSING_FILE).write_text(json.dumps(image_settings, indent=2) + "\n")
    if answers is not None:
        (partial / ANSWERS_FILE).write_text(json.dumps({"answers": list(answers)}, indent=1) + "\n")
    if out.exists():  # an empty folder, checked at the start
        out.rmdir()
    partial.rename(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vlp-export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", type=Path, help="a vlp-train checkpoint (.ckpt), state dict or safetensors"
    )
    parser.add_argument("out", type=Path, help="the folder to write (must not exist, or be empty)")
    parser.add_argument(
        "--config", type=Path, default=None, help=f"the run's {CONFIG_FILE} (default: found beside CKPT)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="where the run's data folder is now, if it has moved"
    )
    args = parser.parse_args(argv)
    try:
        out = export(args.checkpoint, args.out, args.config, args.data_dir)
    except ExportError as error:
        print(f"vlp-export: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    heads = ", ".join(OmegaConf.load(out / CONFIG_FILE).objectives) or "none"
    print(f"vlp-export: wrote {out} (heads: {heads}); load it with vlp.load({str(out)!r})")


if __name__ == "__main__":
    main()

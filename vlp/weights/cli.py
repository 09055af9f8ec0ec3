"""vlp-convert: a published checkpoint (HF ``save_pretrained`` folder) -> a vlp state dict for init_from.

Usage::

    vlp-convert vilt SRC OUT.safetensors   # ViltModel or any ViltFor* folder
    vlp-convert clip SRC OUT.safetensors   # CLIPModel folder

Every source tensor is mapped or reported (a conversion with tensors it does not know fails). The tool
prints the ``vlp-train`` overrides that build the matching architecture, e.g. for a converted ViLT::

    vlp-train model=vilt model.init_from=OUT.safetensors <printed overrides> data.tokenizer=SRC
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import transformers
from safetensors.torch import save_file
from torch import Tensor

from vlp.weights.clip import convert_clip
from vlp.weights.mapping import Conversion
from vlp.weights.vilt import convert_vilt


def load_hf(source: Path, expected: tuple[str, ...]) -> tuple[Any, dict[str, Tensor]]:
    """The folder's config and the state dict of the model class its config names (tied tensors included,
    as the loaded model has them)."""
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source}: no config.json (not a save_pretrained folder)")
    config = transformers.AutoConfig.from_pretrained(source)
    architecture = (config.architectures or [None])[0]
    if config.model_type not in expected:
        raise ValueError(f"{source} holds a {config.model_type} model, not one of {', '.join(expected)}")
    model_class = getattr(transformers, architecture or "", None) or transformers.AutoModel
    model = model_class.from_pretrained(source)
    return config, {key: value.detach().cpu() for key, value in model.state_dict().items()}


def timm_vit_size(config: Any) -> dict[str, Any]:
    """timm ``create_model`` arguments for the ViT an HF vision config describes."""
    return {
        "patch_size": config.patch_size,
        "embed_dim": config.hidden_size,
        "depth": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "mlp_ratio": config.intermediate_size / config.hidden_size,
    }


def vilt_overrides(config: Any) -> list[str]:
    """``vlp-train`` overrides that build model=vilt with this ViLT config's sizes."""
    size = timm_vit_size(config)
    return [
        "model=vilt",
        "model.vision.pretrained=false",
        f"model.vision.image_size={config.image_size}",
        f"++model.vision.model_kwargs={_flow(size)}",
        f"model.text.config.hidden_size={config.hidden_size}",
        f"model.text.config.num_attention_heads={config.num_attention_heads}",
        f"model.text.config.max_position_embeddings={config.max_position_embeddings}",
        f"++model.text.config.type_vocab_size={config.type_vocab_size}",
        f"model.modality_types={config.modality_type_vocab_size}",
    ]


def clip_overrides(config: Any) -> list[str]:
    vision, text = config.vision_config, config.text_config
    if vision.hidden_act != "quick_gelu":
        raise ValueError(f"CLIP vision hidden_act={vision.hidden_act}: vlp's preset is the QuickGELU ViT")
    size = timm_vit_size(vision)
    text_config = {
        "model_type": "clip_text_model",
        "hidden_size": text.hidden_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "intermediate_size": text.intermediate_size,
        "max_position_embeddings": text.max_position_embeddings,
        "hidden_act": text.hidden_act,
    }
    return [
        "model=clip",
        "model.vision.name=vit_base_patch16_clip_quickgelu_224",
        "model.vision.pretrained=false",
        f"model.vision.image_size={vision.image_size}",
        f"++model.vision.model_kwargs={_flow(size)}",
        "model.text.name_or_path=null",
        f"++model.text.config={_flow(text_config)}",
        f"model.embed_dim={config.projection_dim}",
    ]


def _flow(mapping: dict[str, Any]) -> str:
    """A dict as a Hydra override value: ``{key: value, ...}``."""
    return "{" + ",".join(f"{key}:{json.dumps(value)}" for key, value in mapping.items()) + "}"


CONVERTERS = {
    "vilt": (("vilt",), lambda config, state: convert_vilt(state, config.num_hidden_layers), vilt_overrides),
    "clip": (
        ("clip",),
        lambda config, state: convert_clip(state, config.vision_config.num_hidden_layers),
        clip_overrides,
    ),
}


def convert(kind: str, source: Path, out: Path) -> tuple[Conversion, list[str]]:
    """Convert ``source`` and write ``out`` (safetensors); returns the conversion and the overrides."""
    expected, run, overrides = CONVERTERS[kind]
    config, state = load_hf(source, expected)
    conversion = run(config, state)
    target = conversion.finish(f"vlp-convert {kind} {source}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(target, str(out), metadata={"converted_from": str(source), "converter": kind})
    return conversion, overrides(config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vlp-convert", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(CONVERTERS))
    parser.add_argument("source", type=Path, help="HF save_pretrained folder")
    parser.add_argument("out", type=Path, help="output .safetensors")
    args = parser.parse_args(argv)
    try:
        conversion, overrides = convert(args.kind, args.source, args.out)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"vlp-convert: {error}", file=sys.stderr)
        raise SystemExit(1) from error
    print(conversion.report())
    print(f"wrote {args.out}; build the matching model with:")
    print("  vlp-train " + " ".join(f"'{item}'" for item in overrides) + f" model.init_from={args.out}")


if __name__ == "__main__":
    main()

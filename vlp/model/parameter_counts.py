"""Parameter counts of the full-size model presets against the reference implementations.

``python -m vlp.model.parameter_counts`` builds each preset on the meta device (no memory, no download:
random init with the published architecture) and prints its count next to the reference's. The references
count the model without pretraining heads and without what vlp keeps elsewhere (CLIP's ``logit_scale`` is
the ITC objective's temperature here); each entry says where its number comes from and why vlp differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Reference:
    preset: str
    overrides: tuple[str, ...]  # beyond model=<preset>: the published architecture, random init
    vocab_size: int  # the published tokenizer's
    count: int  # the reference implementation's model, heads excluded
    source: str
    paper: str  # what the paper states, when it states a number
    difference: str  # why vlp's count differs, when it does


RANDOM_INIT = ("model.vision.pretrained=false",)

REFERENCES = (
    Reference(
        "vilt",
        RANDOM_INIT,
        30522,
        111_595_008,
        "transformers ViltModel(ViltConfig()) (= dandelin/ViLT ViLTransformerSS backbone with pooler)",
        "87.4M (ViLT paper), which matches the ViT part alone: it leaves out the 23.4M text embeddings",
        "none",
    ),
    Reference(
        "albef",
        (*RANDOM_INIT, "model.text.name_or_path=null"),
        30522,
        209_313_536,
        "salesforce/ALBEF model_pretrain.py at 256 px without momentum copies: 209,937,725 less the MLM "
        "head (622,650), ITM head (1,538) and temperature",
        "about 210M (ALBEF: BERT-base 123.7M + ViT-B/16 85.8M)",
        "+1,536: the final LayerNorm of vlp's pre-norm fusion encoder",
    ),
    Reference(
        "meter",
        (*RANDOM_INIT, "model.text.name_or_path=null"),
        50265,
        319_281_152,
        "zdou0830/METER meter_module.py, CLIP-ViT-B/16 (11 blocks, 288 px) + RoBERTa-base + 6+6 co-attention "
        "layers, without MLM/ITM heads",
        "not stated",
        "-631,040: parameters the reference builds and never uses (RoBERTa's pooler, 590,592; the CLIP "
        "wrapper's unused text positions and final norm, 40,448)",
    ),
    Reference(
        "clip",
        (*RANDOM_INIT, "model.text.name_or_path=null"),
        49408,
        149_620_737,
        "open_clip docs/model_profile.csv ViT-B-16 (149.62M) = transformers CLIPModel, published config",
        "149.62M (open_clip)",
        "-1: logit_scale is the ITC objective's temperature, not a model parameter",
    ),
)


def count_preset(reference: Reference) -> int:
    """Parameters of ``model=<preset>`` with the published architecture, built on the meta device."""
    from hydra import compose, initialize_config_dir

    from vlp.build import build_model
    from vlp.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train", overrides=["run_dir=unused", f"model={reference.preset}", *reference.overrides]
        )
    with torch.device("meta"):
        model = build_model(cfg, vocab_size=reference.vocab_size)
    return sum(parameter.numel() for parameter in model.parameters())


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="full-size presets: parameters (model only, no pretraining heads)")
    for column in ("preset", "vlp", "reference", "difference", "reference source", "paper", "why"):
        table.add_column(column, overflow="fold")
    for reference in REFERENCES:
        count = count_preset(reference)
        difference = (count - reference.count) / reference.count
        table.add_row(
            reference.preset,
            f"{count:,}",
            f"{reference.count:,}",
            f"{difference:+.4%}",
            reference.source,
            reference.paper,
            reference.difference,
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()

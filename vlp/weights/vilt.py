"""HF ViLT (``ViltModel`` and the ``ViltFor*`` task models) -> vlp's single-stream model (model=vilt).

The ViT blocks become timm blocks (``model.vision.backbone``), the text embeddings BERT's embedding layer
(``model.text.encoder``), the modality-type embeddings and pooler ``model.fusion``; task heads map to
the objectives that play the same part: VQA and NLVR2 classifiers have vlp's head layout, the MLM head
too, and the retrieval model's single ranking score becomes ITM's match logit (with the no-match logit
held at zero, ``match - no_match`` is the same score).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlp.weights.mapping import Conversion, skip_position_id_buffers

VISION = "model.vision.backbone."
TEXT = "model.text.encoder."
FUSION = "model.fusion."

# HF ViltLayer part -> timm Block part
LAYER_PARTS = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def convert_vilt(source: dict[str, Tensor], num_layers: int) -> Conversion:
    """Map a ViLT state dict (keys ``vilt.*`` in task models, bare in ``ViltModel``) to vlp names."""
    prefix = "vilt." if any(key.startswith("vilt.") for key in source) else ""
    conversion = Conversion(source)
    skip_position_id_buffers(conversion)
    text = f"{prefix}embeddings.text_embeddings."
    for part in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
        for key in [k for k in source if k.startswith(f"{text}{part}.")]:
            conversion.copy(key, TEXT + key[len(text) :])
    embeddings = f"{prefix}embeddings."
    conversion.copy(f"{embeddings}cls_token", VISION + "cls_token")
    conversion.copy(f"{embeddings}position_embeddings", VISION + "pos_embed")
    for suffix in ("weight", "bias"):
        conversion.copy(
            f"{embeddings}patch_embeddings.projection.{suffix}", f"{VISION}patch_embed.proj.{suffix}"
        )
    conversion.copy(f"{embeddings}token_type_embeddings.weight", FUSION + "modality_embeddings.weight")
    qkv = tuple(f"attention.attention.{name}" for name in ("query", "key", "value"))
    for i in range(num_layers):
        conversion.transformer_layer(f"{prefix}encoder.layer.{i}.", qkv, LAYER_PARTS, f"{VISION}blocks.{i}.")
    for suffix in ("weight", "bias"):
        conversion.copy(f"{prefix}layernorm.{suffix}", f"{VISION}norm.{suffix}")
        if f"{prefix}pooler.dense.{suffix}" in source:
            conversion.copy(f"{prefix}pooler.dense.{suffix}", f"{FUSION}pooler.{suffix}")
    _convert_heads(conversion)
    return conversion


def _convert_heads(conversion: Conversion) -> None:
    source = conversion.source
    if "classifier.0.weight" in source:  # VQA (ViltForQuestionAnswering) or NLVR2 (...ImagesAndText...)
        first = source["classifier.0.weight"]  # VQA: hidden -> 2 hidden; NLVR2: 2 hidden -> 2 hidden
        task = "nlvr2" if first.shape[0] == first.shape[1] else "vqa"
        for index in (0, 1, 3):  # Linear, LayerNorm, (GELU), Linear: vlp's classifier_head
            for suffix in ("weight", "bias"):
                conversion.copy(f"classifier.{index}.{suffix}", f"objectives.{task}.head.{index}.{suffix}")
    if "rank_output.weight" in source:  # ViltForImageAndTextRetrieval: one score -> ITM [no match, match]
        weight, bias = conversion.take("rank_output.weight"), conversion.take("rank_output.bias")
        conversion.target["objectives.itm.head.weight"] = torch.cat([torch.zeros_like(weight), weight])
        conversion.target["objectives.itm.head.bias"] = torch.cat([torch.zeros_like(bias), bias])
    if "mlm_score.transform.dense.weight" in source:  # ViltForMaskedLM
        for hf_part, index in (("transform.dense", 0), ("transform.LayerNorm", 2)):
            for suffix in ("weight", "bias"):
                conversion.copy(f"mlm_score.{hf_part}.{suffix}", f"objectives.mlm.head.{index}.{suffix}")
        conversion.copy("mlm_score.decoder.weight", "objectives.mlm.head.3.weight")
        bias_key = "mlm_score.bias" if "mlm_score.bias" in source else "mlm_score.decoder.bias"
        conversion.copy(bias_key, "objectives.mlm.head.3.bias")
        if bias_key == "mlm_score.bias" and "mlm_score.decoder.bias" in source:
            conversion.skip("mlm_score.decoder.bias", "the same tensor as mlm_score.bias (tied)")

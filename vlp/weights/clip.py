"""HF ``CLIPModel`` -> vlp's dual encoder (model=clip): the vision transformer becomes timm's CLIP ViT
(``model.vision.backbone``), the text transformer stays HF's ``CLIPTextModel`` (``model.text.encoder``),
the projections are vlp's (bias-free, as CLIP's), and ``logit_scale`` becomes the ITC temperature."""

from __future__ import annotations

from torch import Tensor

from vlp.weights.mapping import Conversion, skip_position_id_buffers

VISION = "model.vision.backbone."

LAYER_PARTS = {
    "layer_norm1": "norm1",
    "self_attn.out_proj": "attn.proj",
    "layer_norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def convert_clip(source: dict[str, Tensor], num_layers: int) -> Conversion:
    conversion = Conversion(source)
    skip_position_id_buffers(conversion)
    # CLIPModel keeps its text transformer under text_model.; a CLIPTextModel (vlp's text tower) of the
    # pinned transformers has the same modules at its top level
    conversion.copy_prefix("text_model.", "model.text.encoder.")
    vision = "vision_model."
    conversion.copy(
        f"{vision}embeddings.class_embedding", VISION + "cls_token", lambda t: t.reshape(1, 1, -1)
    )
    conversion.copy(f"{vision}embeddings.patch_embedding.weight", VISION + "patch_embed.proj.weight")
    conversion.copy(f"{vision}embeddings.position_embedding.weight", VISION + "pos_embed", lambda t: t[None])
    for hf_norm, timm_norm in (("pre_layrnorm", "norm_pre"), ("post_layernorm", "norm")):
        for suffix in ("weight", "bias"):
            conversion.copy(f"{vision}{hf_norm}.{suffix}", f"{VISION}{timm_norm}.{suffix}")
    qkv = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    for i in range(num_layers):
        conversion.transformer_layer(f"{vision}encoder.layers.{i}.", qkv, LAYER_PARTS, f"{VISION}blocks.{i}.")
    conversion.copy("visual_projection.weight", "model.vision_proj.weight")
    conversion.copy("text_projection.weight", "model.text_proj.weight")
    conversion.copy("logit_scale", "objectives.itc.log_logit_scale")
    return conversion

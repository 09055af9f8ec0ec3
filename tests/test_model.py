import pytest
import torch
from transformers import BertConfig, BertModel

from vlp.model.fusion import CrossAttentionFusion
from vlp.model.text import HFTextEncoder
from vlp.model.vision import TimmVisionEncoder


@pytest.mark.parametrize(
    ("name", "kwargs", "tokens"),
    [
        ("vit_tiny_patch16_224", {"patch_size": 8, "depth": 1}, 16 + 1),  # 4x4 patches + class token
        ("resnet18", {}, 1),  # 32 px / stride 32 = a 1x1 feature map
        ("convnext_atto", {}, 1),
        # DeiT's distillation token is a second prefix token
        ("deit_tiny_distilled_patch16_224", {"depth": 1, "embed_dim": 32, "num_heads": 2}, 4 + 2),
        ("vit_base_patch16_clip_quickgelu_224", {"depth": 1, "embed_dim": 32, "num_heads": 2}, 4 + 1),
    ],
)
def test_any_timm_model_gives_tokens_and_a_pooled_vector(name, kwargs, tokens):
    encoder = TimmVisionEncoder(name, image_size=32, model_kwargs=kwargs)
    token_states, pooled = encoder(torch.randn(2, 3, 32, 32))
    assert token_states.shape == (2, tokens, encoder.width)
    assert pooled.shape == (2, encoder.width)
    assert len(encoder.mean) == len(encoder.std) == 3


def test_swin_gives_its_last_stage_grid_as_tokens():
    encoder = TimmVisionEncoder(
        "swin_tiny_patch4_window7_224",
        image_size=224,
        model_kwargs={"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)},
    )
    tokens, pooled = encoder(torch.randn(1, 3, 224, 224))
    assert tokens.shape == (1, 7 * 7, encoder.width) and pooled.shape == (1, encoder.width)


def test_a_local_vit_file_at_another_resolution_loads_with_resized_position_embeddings(tmp_path):
    """Weights saved at 32 px (2x2 patches) start a 64 px tower (4x4): timm's loader interpolates."""
    from timm.layers import resample_abs_pos_embed

    kwargs = {"patch_size": 16, "depth": 1, "embed_dim": 32, "num_heads": 2}
    torch.manual_seed(0)
    saved = TimmVisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=kwargs).backbone
    torch.save(saved.state_dict(), tmp_path / "vit.pth")
    encoder = TimmVisionEncoder(
        "vit_tiny_patch16_224", image_size=64, checkpoint_path=str(tmp_path / "vit.pth"), model_kwargs=kwargs
    )
    expected = resample_abs_pos_embed(saved.pos_embed.detach(), new_size=[4, 4], num_prefix_tokens=1)
    assert torch.allclose(encoder.backbone.pos_embed, expected)
    assert torch.equal(encoder.backbone.blocks[0].attn.qkv.weight, saved.blocks[0].attn.qkv.weight)


def test_roberta_loads_from_a_local_folder_and_clip_text_pools_its_last_token(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=20)  # fmt: skip
    RobertaModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "roberta")
    roberta = HFTextEncoder(vocab_size=40, name_or_path=str(tmp_path / "roberta"))
    assert type(roberta.encoder).__name__ == "RobertaModel"

    sizes = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    clip_config = CLIPTextConfig(vocab_size=40, max_position_embeddings=20, eos_token_id=39, **sizes)
    CLIPTextModel(clip_config).save_pretrained(tmp_path / "clip")
    clip = HFTextEncoder(
        vocab_size=40,
        name_or_path=str(tmp_path / "clip"),
        model_class="CLIPTextModel",
        pooled_output="last_token",
    ).eval()
    ids = torch.tensor([[5, 6, 39, 0], [5, 6, 7, 39]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    tokens, pooled = clip.encode(ids, mask)
    expected = CLIPTextModel.from_pretrained(tmp_path / "clip").eval()(input_ids=ids, attention_mask=mask)
    assert torch.allclose(pooled, expected.pooler_output, atol=1e-6)
    with pytest.raises(ValueError, match="not a transformers model class"):
        HFTextEncoder(vocab_size=40, name_or_path=str(tmp_path / "clip"), model_class="NoSuchModel")


def test_text_encoder_loads_a_local_pretrained_folder(tmp_path):
    config = BertConfig(
        vocab_size=30, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    saved = BertModel(config, add_pooling_layer=False)
    saved.save_pretrained(tmp_path)  # the same code path as a hub name, without the network
    encoder = HFTextEncoder(
        vocab_size=30, name_or_path=str(tmp_path), model_kwargs={"add_pooling_layer": False}
    )
    ids = torch.tensor([[2, 7, 9, 3]])
    mask = torch.ones_like(ids)
    expected = saved.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(encoder.eval()(ids, mask), expected)
    with pytest.raises(ValueError, match="vocab_size 30 but the tokenizer has 31"):
        HFTextEncoder(vocab_size=31, name_or_path=str(tmp_path))


def test_text_encoder_from_config_needs_a_model_type():
    with pytest.raises(ValueError, match="model_type"):
        HFTextEncoder(vocab_size=10, config={"hidden_size": 16})
    encoder = HFTextEncoder(
        vocab_size=10,
        config={"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2},
    )
    assert encoder.width == 16 and encoder.encoder.config.vocab_size == 10


def test_fusion_ignores_padding_and_looks_at_the_image():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(text_width=16, image_width=24, num_layers=2, num_heads=2).eval()
    text = torch.randn(1, 5, 16)
    image = torch.randn(1, 7, 24)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    fused = fusion(text, mask, image).tokens
    changed_padding = text.clone()
    changed_padding[0, 3:] = 100.0
    assert torch.allclose(fusion(changed_padding, mask, image).tokens[0, :3], fused[0, :3], atol=1e-5)
    assert not torch.allclose(fusion(text, mask, torch.randn(1, 7, 24)).tokens[0, 0], fused[0, 0])


def test_model_encodes_and_fuses(tiny_model):
    size = tiny_model.vision.image_size
    pixels = torch.randn(3, 3, size, size)
    ids = torch.randint(5, 50, (3, 6))
    encoded = tiny_model.encode(pixels, ids, torch.ones_like(ids))
    assert encoded.image.embedding.shape == encoded.text.embedding.shape == (3, tiny_model.dims.embed_dim)
    assert torch.allclose(encoded.image.embedding.norm(dim=-1), torch.ones(3))
    fused = tiny_model.fuse(encoded.text.tokens, encoded.text.attention_mask, encoded.image.tokens)
    assert fused.tokens.shape == (3, 6, tiny_model.dims.fusion_width)
    assert torch.equal(fused.pooled, fused.tokens[:, 0])  # ALBEF's heads read the fused [CLS] state

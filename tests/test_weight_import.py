"""vlp-convert: randomly initialised HF ViLT and CLIP models, saved with save_pretrained, converted and
loaded through model.init_from, give the outputs HF gives on the same inputs."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from tests.conftest import compose_train_config
from vlp.build import build_model
from vlp.checkpoint import init_from_checkpoint
from vlp.weights.cli import convert, main
from vlp.weights.mapping import UnmappedWeights

VOCAB = 60
TOLERANCE = 1e-4


class Holder(nn.Module):
    """Stands in for a VLPSystem: vlp's parameter names start with ``model.`` and ``objectives.``."""

    def __init__(self, model: nn.Module, objectives: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.model = model
        self.objectives = nn.ModuleDict(objectives or {})


def text_inputs(batch: int, length: int, eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids whose last real token is ``eos`` (CLIP pools there), with different lengths."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, eos, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row, real in enumerate(range(length, length - batch, -1)):
        ids[row, real - 1] = eos
        ids[row, real:] = 0
        mask[row, real:] = 0
    return ids, mask


def vilt_config(**extra) -> transformers.ViltConfig:
    return transformers.ViltConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=16,
        max_position_embeddings=16,
        max_image_length=-1,
        **extra,
    )


def build_vlp(overrides: list[str]) -> nn.Module:
    return build_model(compose_train_config(["run_dir=unused", *overrides]), vocab_size=VOCAB).eval()


def test_vilt_converts_to_the_same_pooled_state_and_vqa_logits(tmp_path):
    torch.manual_seed(0)
    config = vilt_config(num_labels=7, id2label={i: str(i) for i in range(7)})
    hf = transformers.ViltForQuestionAnswering(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    conversion, overrides = convert("vilt", tmp_path / "hf", tmp_path / "vilt.safetensors")
    assert not conversion.skipped or all("buffer" in why for why in conversion.skipped.values())

    from vlp.objectives.vqa import VQAClassification

    model = build_vlp(overrides)
    holder = Holder(model, {"vqa": VQAClassification(model.dims, num_answers=7)}).eval()
    report = init_from_checkpoint(holder, tmp_path / "vilt.safetensors")
    assert not report.missing and not report.mismatched and not report.unexpected

    ids, mask = text_inputs(3, 9, eos=VOCAB - 1)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = hf.vilt(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        expected_logits = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        encoded = model.encode(pixels, ids, mask)
        fused = model.fuse(encoded.text.tokens, mask, encoded.image.tokens)
        logits = holder.objectives["vqa"].logits(encoded, model)
    assert torch.allclose(fused.pooled, expected.pooler_output, atol=TOLERANCE)
    real = mask.bool()
    assert torch.allclose(
        fused.tokens[real], expected.last_hidden_state[:, : ids.shape[1]][real], atol=TOLERANCE
    )
    assert torch.allclose(logits, expected_logits, atol=TOLERANCE)


def test_vilt_nlvr2_converts_to_the_same_pair_logits(tmp_path):
    """ViLT's NLVR2 model fuses the right image with a third modality type; vlp's pair objective too."""
    torch.manual_seed(0)
    hf = transformers.ViltForImagesAndTextClassification(
        vilt_config(num_images=2, modality_type_vocab_size=3, num_labels=2)
    ).eval()
    hf.save_pretrained(tmp_path / "hf")
    _, overrides = convert("vilt", tmp_path / "hf", tmp_path / "nlvr2.safetensors")
    assert "model.modality_types=3" in overrides

    from vlp.objectives.nlvr2 import NLVR2PairClassification

    model = build_vlp(overrides)
    holder = Holder(model, {"nlvr2": NLVR2PairClassification(model.dims)}).eval()
    report = init_from_checkpoint(holder, tmp_path / "nlvr2.safetensors")
    assert not report.missing and not report.mismatched and not report.unexpected
    ids, mask = text_inputs(2, 8, eos=VOCAB - 1)
    pixels = torch.randn(2, 2, 3, 32, 32)  # [pairs, (left, right), ...]
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        encoded = model.encode(pixels.flatten(0, 1), ids, mask)  # images ordered left0, right0, left1, ...
        logits = holder.objectives["nlvr2"].logits(encoded, model)
    assert torch.allclose(logits, expected, atol=TOLERANCE)


def test_vilt_task_heads_map_to_vlp_objectives(tmp_path):
    """Retrieval's single score becomes ITM's match logit; the MLM head keeps its layout."""
    torch.manual_seed(0)
    retrieval = transformers.ViltForImageAndTextRetrieval(vilt_config()).eval()
    retrieval.save_pretrained(tmp_path / "retrieval")
    conversion, _ = convert("vilt", tmp_path / "retrieval", tmp_path / "retrieval.safetensors")
    head = conversion.target
    score = torch.randn(4, 32)
    itm_logits = score @ head["objectives.itm.head.weight"].t() + head["objectives.itm.head.bias"]
    expected = retrieval.rank_output(score).squeeze(1)
    assert torch.allclose(itm_logits[:, 1] - itm_logits[:, 0], expected, atol=1e-6)

    mlm = transformers.ViltForMaskedLM(vilt_config()).eval()
    mlm.save_pretrained(tmp_path / "mlm")
    conversion, _ = convert("vilt", tmp_path / "mlm", tmp_path / "mlm.safetensors")
    assert conversion.target["objectives.mlm.head.3.weight"].shape == (VOCAB, 32)
    assert "objectives.mlm.head.2.weight" in conversion.target  # the transform's LayerNorm


def test_clip_converts_to_the_same_normalised_embeddings_and_temperature(tmp_path):
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": VOCAB,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": VOCAB - 2,
            "eos_token_id": VOCAB - 1,  # HF pools at the first end-of-text token, vlp at the last real one
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=16,
    )
    hf = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        hf.logit_scale.fill_(2.5)
    hf.save_pretrained(tmp_path / "hf")
    conversion, overrides = convert("clip", tmp_path / "hf", tmp_path / "clip.safetensors")

    from vlp.objectives.itc import ImageTextContrastive

    model = build_vlp(overrides)
    holder = Holder(model, {"itc": ImageTextContrastive(model.dims)}).eval()
    report = init_from_checkpoint(holder, tmp_path / "clip.safetensors")
    assert not report.missing and not report.mismatched and not report.unexpected

    ids, mask = text_inputs(3, 10, eos=VOCAB - 1)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        image_features = _features(hf.get_image_features(pixel_values=pixels))
        text_features = _features(hf.get_text_features(input_ids=ids, attention_mask=mask))
        encoded = model.encode(pixels, ids, mask)
    assert torch.allclose(
        encoded.image.embedding, nn.functional.normalize(image_features, dim=-1), atol=TOLERANCE
    )
    assert torch.allclose(
        encoded.text.embedding, nn.functional.normalize(text_features, dim=-1), atol=TOLERANCE
    )
    assert holder.objectives["itc"].logit_scale().item() == pytest.approx(
        float(torch.tensor(2.5).exp()), rel=1e-6
    )


def _features(output) -> torch.Tensor:
    """transformers returns the projected features as a tensor (or, in some versions, in an output)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def test_an_unmapped_tensor_fails_the_conversion(tmp_path):
    torch.manual_seed(0)
    transformers.ViltModel(vilt_config()).save_pretrained(tmp_path / "hf")
    from vlp.weights.vilt import convert_vilt

    state = transformers.ViltModel.from_pretrained(tmp_path / "hf").state_dict()
    state["extra_adapter.weight"] = torch.zeros(2, 2)
    with pytest.raises(UnmappedWeights, match="extra_adapter.weight"):
        convert_vilt(state, num_layers=2).finish("test")


def test_cli_refuses_the_wrong_kind_of_folder(tmp_path, capsys):
    transformers.ViltModel(vilt_config()).save_pretrained(tmp_path / "hf")
    with pytest.raises(SystemExit):
        main(["clip", str(tmp_path / "hf"), str(tmp_path / "out.safetensors")])
    assert "not one of clip" in capsys.readouterr().err

"""The four model families (ALBEF, ViLT, METER, CLIP): tiny presets train with every objective that
applies to them, objectives that do not apply are refused in one line, full-size presets have the
reference implementations' parameter counts, and position embeddings follow a change of resolution."""

from __future__ import annotations

import pytest
import torch
import transformers
from omegaconf import open_dict

from tests.conftest import compose_train_config
from vlp.build import build_model, build_run
from vlp.model.parameter_counts import REFERENCES, count_preset
from vlp.train import train

FAST = ["debug=fast_dev_run", "data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0"]


def fast_run(synth_data, tmp_path, *overrides: str) -> dict[str, float]:
    cfg = compose_train_config([f"data_dir={synth_data.root}", f"run_dir={tmp_path}", *FAST, *overrides])
    return train(cfg)


@pytest.mark.parametrize(
    "overrides, logged",
    [
        (["experiment=pretrain_vilt"], ["val/itm/loss", "val/mlm/loss"]),
        (["experiment=pretrain_meter"], ["val/itm/loss", "val/mlm/loss"]),
        (["experiment=pretrain_clip"], ["val/itc/loss", "val/retrieval/r_mean"]),
        (["model=vilt_tiny", "experiment=finetune_vqa"], ["val/vqa/loss", "val/vqa/accuracy"]),
        (["model=meter_tiny", "experiment=finetune_vqa"], ["val/vqa/loss", "val/vqa/accuracy"]),
        (["model=vilt_tiny", "experiment=finetune_nlvr2"], ["val/nlvr2/loss", "val/nlvr2/accuracy"]),
        (["model=meter_tiny", "experiment=finetune_nlvr2"], ["val/nlvr2/loss", "val/nlvr2/accuracy"]),
        (["experiment=finetune_retrieval_itm"], ["val/itm/loss", "val/retrieval/r_mean"]),
        (["experiment=finetune_retrieval_itm", "model=meter_tiny"], ["val/retrieval/itm_passes"]),
    ],
    ids=[
        "vilt-itm-mlm",
        "meter-itm-mlm",
        "clip-itc",
        "vilt-vqa",
        "meter-vqa",
        "vilt-nlvr2",
        "meter-nlvr2",
        "vilt-retrieval",
        "meter-retrieval",
    ],  # fmt: skip
)
def test_tiny_presets_run_their_objectives(overrides, logged, synth_data, synth_vqa, synth_nlvr2, tmp_path):
    metrics = fast_run(synth_data, tmp_path, *overrides)
    for key in logged:
        assert key in metrics and torch.isfinite(torch.tensor(metrics[key])), key


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=clip_tiny", "objectives=[itc,itm]"], "objectives.itm needs a fusion encoder"),
        (["model=clip_tiny", "objectives=[itc,mlm]"], "objectives.mlm needs a fusion encoder"),
        (["model=vilt_tiny", "objectives=[itc]"], "objectives.itc needs unimodal embeddings"),
        (
            ["experiment=pretrain_vilt", "evaluators=[zero_shot_retrieval]"],
            "evaluators.retrieval needs unimodal",
        ),
        (["model=meter_tiny", "objectives=[captioning]"], "objectives.captioning needs fusion layers"),
        (["model=vilt_tiny", "objectives=[itm]"], "set objectives.itm.hard_negatives=false"),
    ],
)
def test_objectives_a_family_cannot_serve_are_refused(overrides, message, synth_data, tmp_path):
    cfg = compose_train_config([f"data_dir={synth_data.root}", f"run_dir={tmp_path}", *overrides])
    with pytest.raises(ValueError, match=message):
        build_run(cfg)


@pytest.mark.parametrize("reference", REFERENCES, ids=[r.preset for r in REFERENCES])
def test_full_size_presets_match_the_reference_parameter_counts(reference):
    count = count_preset(reference)
    explained = {"vilt": 0, "albef": 1_536, "meter": -(590_592 + 40_448), "clip": -1}[reference.preset]
    assert count - reference.count == explained
    assert abs(count - reference.count) / reference.count < 0.02


def test_the_vilt_and_clip_references_are_what_transformers_builds():
    """The two references that transformers implements are recomputed, not copied."""
    with torch.device("meta"):
        vilt = transformers.ViltModel(transformers.ViltConfig())
        clip = transformers.CLIPModel(
            transformers.CLIPConfig(
                text_config={
                    "vocab_size": 49408,
                    "hidden_size": 512,
                    "intermediate_size": 2048,
                    "num_attention_heads": 8,
                    "num_hidden_layers": 12,
                    "max_position_embeddings": 77,
                },
                vision_config={
                    "hidden_size": 768,
                    "intermediate_size": 3072,
                    "num_attention_heads": 12,
                    "num_hidden_layers": 12,
                    "image_size": 224,
                    "patch_size": 16,
                },
                projection_dim=512,
            )  # fmt: skip
        )
    counts = {r.preset: r.count for r in REFERENCES}
    assert sum(p.numel() for p in vilt.parameters()) == counts["vilt"]
    assert sum(p.numel() for p in clip.parameters()) == counts["clip"]


def test_finetuning_at_a_higher_resolution_interpolates_position_embeddings(synth_data, tmp_path):
    """A 72 px pretraining checkpoint (3x3 patches) starts a 96 px run (4x4): pos_embed is resized as timm
    resizes its own weights, everything else loads unchanged."""
    from timm.layers import resample_abs_pos_embed

    from vlp.checkpoint import init_from_checkpoint

    base = [f"data_dir={synth_data.root}", f"run_dir={tmp_path}"]
    torch.manual_seed(0)
    pretrained = build_run(compose_train_config(base)).system
    torch.save({"state_dict": pretrained.state_dict()}, tmp_path / "pretrained.ckpt")

    cfg = compose_train_config([*base, "model.vision.image_size=96"])
    with open_dict(cfg):
        cfg.model.init_from = None
    system = build_run(cfg).system
    report = init_from_checkpoint(system, tmp_path / "pretrained.ckpt")
    name = "model.vision.backbone.pos_embed"
    assert report.resized == [f"{name}: (1, 10, 128) -> (1, 17, 128)"] and not report.mismatched
    expected = resample_abs_pos_embed(pretrained.state_dict()[name], new_size=[4, 4], num_prefix_tokens=1)
    assert torch.equal(system.state_dict()[name], expected)
    assert torch.equal(system.state_dict()[name][:, 0], pretrained.state_dict()[name][:, 0])  # class token
    weight = "model.vision.backbone.blocks.0.attn.qkv.weight"
    assert torch.equal(system.state_dict()[weight], pretrained.state_dict()[weight])


@pytest.mark.parametrize("preset", ["albef_tiny", "meter_tiny", "vilt_tiny"])
def test_gradient_checkpointing_gives_the_same_gradients(preset):
    """Per tower and in the fusion: recomputing activations changes memory, not the result."""
    torch.manual_seed(0)
    plain = build_model(compose_train_config(["run_dir=unused", f"model={preset}"]), vocab_size=50)
    remat_overrides = ["run_dir=unused", f"model={preset}", "model.vision.gradient_checkpointing=true",
                       "model.text.gradient_checkpointing=true"]  # fmt: skip
    if preset != "vilt_tiny":  # ViLT's fusion is the ViT's blocks: the vision flag covers it
        remat_overrides.append("model.fusion.gradient_checkpointing=true")
    remat = build_model(compose_train_config(remat_overrides), vocab_size=50)
    remat.load_state_dict(plain.state_dict())
    assert remat.vision.backbone.grad_checkpointing
    size = plain.vision.image_size  # each preset at its own size
    pixels, ids = torch.randn(2, 3, size, size), torch.randint(5, 50, (2, 7))
    mask = torch.ones_like(ids)
    grads = []
    for model in (plain, remat):
        model.train()
        torch.manual_seed(1)  # the same dropout masks in both (checkpointing replays the RNG state)
        encoded = model.encode(pixels, ids, mask)
        loss = model.fuse(encoded.text.tokens, mask, encoded.image.tokens).pooled.square().sum()
        if encoded.image.embedding is not None:  # the contrastive projections too, where there are some
            loss = loss + encoded.image.embedding.sum() + encoded.text.embedding.sum()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name

import pytest
import torch
from torch import nn

from vlp.optim import warmup_cosine, weight_decay_groups


def test_norms_biases_and_declared_exemptions_get_no_weight_decay(tiny_model):
    groups = weight_decay_groups(tiny_model, weight_decay=0.05)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert len(decayed) + len(exempt) == len(names)
    assert all(p.ndim >= 2 for p in decay["params"])
    assert "vision.backbone.pos_embed" in exempt and "vision.backbone.cls_token" in exempt
    assert "fusion.layers.0.cross_attention.query.weight" in decayed
    assert "fusion.layers.0.cross_attention.query.bias" in exempt
    assert any("LayerNorm.weight" in name for name in exempt)


def test_frozen_parameters_are_left_out():
    module = nn.Linear(3, 3)
    module.bias.requires_grad_(False)
    decay, no_decay = weight_decay_groups(module, 0.1)
    assert len(decay["params"]) == 1 and not no_decay["params"]


def test_warmup_then_cosine_to_the_floor():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    lrs = []
    for _ in range(110):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_schedule_needs_steps():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="total_steps"):
        warmup_cosine(optimizer, total_steps=0)


def test_lr_multipliers_split_groups_by_the_longest_matching_prefix(tiny_model):
    from vlp.optim import parameter_groups

    groups = parameter_groups(
        tiny_model, 0.05, base_lr=1e-3, lr_multipliers={"vision": 0.1, "vision.proj": 2.0}
    )
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    lr_of = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    assert len(lr_of) == len(names)  # every parameter exactly once
    assert lr_of["vision.backbone.pos_embed"] == pytest.approx(1e-4)
    assert lr_of["fusion.layers.0.cross_attention.query.weight"] == pytest.approx(1e-3)
    assert lr_of["vision_proj.weight"] == pytest.approx(1e-3)  # "vision" is a name prefix, not a string one
    decay_of = {names[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}
    assert (
        decay_of["vision.backbone.pos_embed"] == 0.0
        and decay_of["fusion.layers.0.cross_attention.query.weight"] == 0.05
    )


def test_lr_multipliers_need_a_base_lr(tiny_model):
    from vlp.optim import parameter_groups

    with pytest.raises(ValueError, match="system.optimizer.lr"):
        parameter_groups(tiny_model, 0.0, base_lr=None, lr_multipliers={"vision": 0.1})

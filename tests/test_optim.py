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
        tiny_model, 0.05, base_lr=1e-3, lr_multipliers={"vision": 0.1, "vision.backbone.blocks.0": 2.0}
    )
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    lr_of = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    assert len(lr_of) == len(names)  # every parameter exactly once
    assert lr_of["vision.backbone.pos_embed"] == pytest.approx(1e-4)
    assert lr_of["vision.backbone.blocks.0.attn.qkv.weight"] == pytest.approx(2e-3)
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


def tiny_towers() -> nn.Module:
    """A timm ViT (3 blocks) and an HF BERT (2 layers) named as in a VLPSystem, with a head beside them."""
    import timm
    import transformers

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=32, depth=3, num_heads=2, num_classes=0
    )
    bert = transformers.BertModel(
        transformers.BertConfig(
            vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
    )
    model = nn.ModuleDict({
        "vision": nn.ModuleDict({"backbone": vit}), "vision_proj": nn.Linear(32, 8), "text": bert,
    })  # fmt: skip
    return nn.ModuleDict({"model": model, "objectives": nn.ModuleDict({"head": nn.Linear(32, 2)})})


def by_name(module: nn.Module, groups: list[dict], key: str) -> dict:
    """Full parameter name -> ``key`` of the group that holds it; each parameter in at most one group."""
    names = {id(p): n for n, p in module.named_parameters()}
    held = [names[id(p)] for g in groups for p in g["params"]]
    assert len(held) == len(set(held))
    return {names[id(p)]: g[key] for g in groups for p in g["params"]}


def test_layer_decay_numbers_vit_and_bert_layers_as_beit():
    from vlp.optim import parameter_groups

    towers = tiny_towers()
    groups = parameter_groups(towers, 0.05, base_lr=1.0, layer_decay={"model.vision": 0.5, "model.text": 0.8})
    lr = by_name(towers, groups, "lr")
    assert len(lr) == len(list(towers.parameters()))
    vit, bert = "model.vision.backbone.", "model.text."
    for stem in ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed"):
        assert lr[vit + stem] == pytest.approx(0.5**4)  # d^(L+1), L = 3 blocks
    for i in range(3):
        assert lr[f"{vit}blocks.{i}.attn.qkv.weight"] == pytest.approx(0.5 ** (3 - i))
        assert lr[f"{vit}blocks.{i}.norm1.bias"] == pytest.approx(0.5 ** (3 - i))
    assert lr[vit + "norm.weight"] == pytest.approx(1.0)
    assert lr[bert + "embeddings.word_embeddings.weight"] == pytest.approx(0.8**3)
    assert lr[bert + "encoder.layer.0.attention.self.query.weight"] == pytest.approx(0.8**2)
    assert lr[bert + "encoder.layer.1.output.dense.weight"] == pytest.approx(0.8)
    assert lr[bert + "pooler.dense.weight"] == pytest.approx(1.0)
    assert lr["objectives.head.weight"] == lr["model.vision_proj.weight"] == 1.0  # not under a prefix
    decay = by_name(towers, groups, "weight_decay")
    assert decay[vit + "blocks.1.attn.qkv.weight"] == 0.05 and decay[bert + "pooler.dense.weight"] == 0.05
    for exempt in ("blocks.1.attn.qkv.bias", "blocks.1.norm1.weight", "pos_embed", "cls_token"):
        assert decay[vit + exempt] == 0.0
    name = by_name(towers, groups, "name")
    assert name[vit + "blocks.2.attn.qkv.weight"] == "model.vision/layer_3/decay"
    assert name[vit + "blocks.2.attn.qkv.bias"] == "model.vision/layer_3/no_decay"
    assert len({g["name"] for g in groups}) == len(groups)  # LearningRateMonitor refuses duplicates


def test_lr_multipliers_compose_with_layer_decay():
    from vlp.optim import parameter_groups

    towers = tiny_towers()
    groups = parameter_groups(
        towers,
        0.05,
        base_lr=1e-3,
        lr_multipliers={"model": 0.2, "objectives": 5.0},
        layer_decay={"model.vision": 0.5},
    )
    lr, name = by_name(towers, groups, "lr"), by_name(towers, groups, "name")
    qkv = "model.vision.backbone.blocks.0.attn.qkv.weight"
    assert lr[qkv] == pytest.approx(1e-3 * 0.2 * 0.5**3) and name[qkv] == "model/model.vision/layer_1/decay"
    assert lr["model.vision.backbone.norm.weight"] == pytest.approx(1e-3 * 0.2)
    assert lr["model.text.encoder.layer.0.output.dense.weight"] == pytest.approx(1e-3 * 0.2)
    assert (
        lr["objectives.head.weight"] == pytest.approx(5e-3)
        and name["objectives.head.weight"] == "objectives/decay"
    )
    optimizer = torch.optim.AdamW(groups, lr=1e-3)  # the names ride along in AdamW's groups
    assert {g["name"] for g in optimizer.param_groups} == {g["name"] for g in groups}


def test_layer_ids_of_swin_clip_and_fusion_names():
    import timm
    import transformers

    from vlp.optim import layer_ids

    swin = timm.create_model(
        "swin_tiny_patch4_window7_224", img_size=32, window_size=4, embed_dim=16, depths=(1, 2),
        num_heads=(1, 2), num_classes=0,
    )  # fmt: skip
    ids, num_layers = layer_ids([f"backbone.{n}" for n, _ in swin.named_parameters()])
    assert num_layers == 3  # Swin blocks are counted across stages: 1 + 2
    assert ids["backbone.patch_embed.proj.weight"] == 0
    assert ids["backbone.layers.0.blocks.0.attn.qkv.weight"] == 1
    assert ids["backbone.layers.1.downsample.reduction.weight"] == 2  # opens stage 1, with its first block
    assert ids["backbone.layers.1.blocks.1.attn.relative_position_bias_table"] == 3
    assert ids["backbone.norm.weight"] == 4
    clip = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
        )
    )  # fmt: skip
    clip_names = [name for name, _ in clip.named_parameters()]
    ids, num_layers = layer_ids(clip_names)
    assert num_layers == 2
    by_suffix = {name.split("text_model.")[-1]: layer for name, layer in ids.items()}
    assert by_suffix["embeddings.token_embedding.weight"] == 0
    assert by_suffix["encoder.layers.1.mlp.fc1.weight"] == 2
    assert by_suffix["final_layer_norm.weight"] == 3
    fusion = ["layers.0.cross_attention.query.weight", "layers.1.mlp.0.weight", "norm.weight"]
    assert layer_ids(fusion) == ({fusion[0]: 1, fusion[1]: 2, fusion[2]: 3}, 2)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr_multipliers": {"model.visoin": 0.1}}, "system.lr_multipliers prefix 'model.visoin' matches no"),
        ({"lr_multipliers": {"model.vision.proj": 2.0}}, "'model.vision.proj' matches no"),  # not vision_proj
        ({"layer_decay": {"model.txt": 0.8}}, "system.layer_decay prefix 'model.txt' holds no blocks"),
        ({"layer_decay": {"objectives.head": 0.8}}, "'objectives.head' holds no blocks"),
        ({"layer_decay": {"model.text": 1.5}}, r"system.layer_decay.model.text=1.5 is not in \(0, 1\]"),
    ],
)
def test_prefixes_that_select_nothing_raise(settings, message):
    from vlp.optim import parameter_groups

    with pytest.raises(ValueError, match=message):
        parameter_groups(tiny_towers(), 0.05, base_lr=1e-3, **settings)


def test_frozen_parameters_are_in_no_group_and_keep_their_layer_ids(caplog):
    from vlp.optim import freeze_parameters, parameter_groups

    towers = tiny_towers()
    with caplog.at_level("INFO", logger="vlp.optim"):
        frozen = freeze_parameters(towers, [r"model\.vision\..*", r"model\.text\.encoder\.layer\.0\..*"])
    vision = [n for n, _ in towers.named_parameters() if n.startswith("model.vision.")]
    assert set(vision) < set(frozen) and "model.vision_proj.weight" not in frozen
    assert "model.text.encoder.layer.0.output.dense.weight" in frozen
    assert all(not p.requires_grad for n, p in towers.named_parameters() if n in frozen)
    assert f"{len(frozen)} of {len(list(towers.parameters()))} tensors frozen" in caplog.text
    # A frozen tower may keep its layer_decay entry: the prefix still names real parameters.
    groups = parameter_groups(towers, 0.05, base_lr=1.0, layer_decay={"model.vision": 0.5, "model.text": 0.8})
    lr = by_name(towers, groups, "lr")
    assert not set(frozen) & set(lr)
    assert set(lr) == {n for n, p in towers.named_parameters() if p.requires_grad}
    assert lr["model.text.encoder.layer.1.output.dense.weight"] == pytest.approx(0.8)  # still block 1 of 2


@pytest.mark.parametrize(
    ("pattern", "message"),
    [(r"model\.vision", "matches no whole parameter name"), ("model.vision[", "is not a regex")],
)
def test_freeze_patterns_that_match_no_whole_name_raise(pattern, message):
    from vlp.optim import freeze_parameters

    towers = tiny_towers()
    with pytest.raises(ValueError, match=f"system.freeze pattern .* {message}"):
        freeze_parameters(towers, [pattern])
    assert all(p.requires_grad for p in towers.parameters())


def test_the_system_freezes_at_construction_and_gives_its_optimizer_the_groups(synth_data, tmp_path):
    from tests.conftest import compose_train_config
    from vlp.build import build_run

    def system(*overrides: str):
        base = [f"data_dir={synth_data.root}", f"run_dir={tmp_path}", "system.scheduler=null"]
        return build_run(compose_train_config([*base, *overrides])).system

    built = system(
        r"system.freeze=[model\.vision\..*]", "+system.layer_decay={model.text: 0.5}",
        "+system.lr_multipliers={objectives: 5.0}",  # + adds keys to the empty dicts of system/default
    )  # fmt: skip
    assert not any(p.requires_grad for p in built.model.vision.parameters())  # before Lightning wraps it
    optimizer = built.configure_optimizers()["optimizer"]
    lr = by_name(built, optimizer.param_groups, "lr")
    assert set(lr) == {n for n, p in built.named_parameters() if p.requires_grad}
    assert not any(name.startswith("model.vision.") for name in lr)
    base = optimizer.defaults["lr"]
    assert lr["model.text.encoder.embeddings.word_embeddings.weight"] == pytest.approx(base * 0.5**3)  # L = 2
    assert all(lr[name] == pytest.approx(5 * base) for name in lr if name.startswith("objectives."))
    with pytest.raises(Exception, match="system.lr_multipliers prefix 'model.visoin' matches no"):
        system("+system.lr_multipliers={model.visoin: 0.1}")  # at construction, before any data is read

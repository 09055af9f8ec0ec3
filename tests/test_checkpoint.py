"""model.init_from: what loads, what stays fresh, and when it is an error."""

from __future__ import annotations

import pickle

import pytest
import torch

from tests.conftest import compose_train_config
from vlp.build import build_run
from vlp.checkpoint import init_from_checkpoint, read_state_dict


def build(synth_data, tmp_path, *overrides: str):
    torch.manual_seed(len(overrides))
    cfg = compose_train_config([f"data_dir={synth_data.root}", f"run_dir={tmp_path}", *overrides])
    return build_run(cfg).system


def save_lightning_style(system, path):
    torch.save({"epoch": 3, "global_step": 10, "state_dict": system.state_dict()}, path)


def test_encoders_and_same_heads_load_new_heads_stay_fresh(synth_data, tmp_path):
    pretrained = build(synth_data, tmp_path)  # itc + itm + mlm
    save_lightning_style(pretrained, tmp_path / "pre.ckpt")
    finetune = build(synth_data, tmp_path, "objectives=[itc,itm]")
    fresh_itm = finetune.objectives.itm.head.weight.detach().clone()
    report = init_from_checkpoint(finetune, tmp_path / "pre.ckpt")
    for name, tensor in finetune.state_dict().items():
        assert torch.equal(tensor, pretrained.state_dict()[name]), name
    assert not torch.equal(fresh_itm, finetune.objectives.itm.head.weight)
    assert any(name.startswith("objectives.mlm.") for name in report.unexpected)
    assert not report.missing and not report.mismatched


def test_a_new_head_is_reported_and_kept(synth_data, tmp_path):
    pretrained = build(synth_data, tmp_path, "objectives=[itc]")
    save_lightning_style(pretrained, tmp_path / "pre.ckpt")
    finetune = build(synth_data, tmp_path, "objectives=[itc,itm]")
    fresh_head = finetune.objectives.itm.head.weight.detach().clone()
    report = init_from_checkpoint(finetune, tmp_path / "pre.ckpt")
    assert "objectives.itm.head.weight" in report.missing
    assert torch.equal(finetune.objectives.itm.head.weight, fresh_head)
    assert torch.equal(finetune.model.vision_proj.weight, pretrained.model.vision_proj.weight)
    assert "kept fresh (not in the checkpoint): objectives.itm.head" in report.summary()


def test_mismatched_encoders_are_an_error(synth_data, tmp_path):
    pretrained = build(synth_data, tmp_path, "model.embed_dim=32")
    save_lightning_style(pretrained, tmp_path / "pre.ckpt")
    finetune = build(synth_data, tmp_path)
    with pytest.raises(ValueError, match="does not match this model's encoders.*vision_proj"):
        init_from_checkpoint(finetune, tmp_path / "pre.ckpt")


def test_init_from_through_the_config(synth_data, tmp_path):
    pretrained = build(synth_data, tmp_path)
    save_lightning_style(pretrained, tmp_path / "pre.ckpt")
    finetune = build(synth_data, tmp_path, f"model.init_from={tmp_path / 'pre.ckpt'}")
    assert torch.equal(finetune.model.text_proj.weight, pretrained.model.text_proj.weight)


def test_pickled_objects_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.ckpt"
    with path.open("wb") as handle:
        pickle.dump({"state_dict": {}, "x": Payload()}, handle)
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(path)


def test_a_file_that_is_no_checkpoint_is_not_reported_as_pickled_code(tmp_path):
    (tmp_path / "notes.ckpt").write_bytes(b"not a checkpoint at all")
    (tmp_path / "notes.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        read_state_dict(tmp_path / "notes.ckpt")
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        read_state_dict(tmp_path / "notes.safetensors")


def test_safetensors_and_missing_files(synth_data, tmp_path):
    from safetensors.torch import save_file

    pretrained = build(synth_data, tmp_path)
    tensors = {k: v.contiguous() for k, v in pretrained.state_dict().items()}
    save_file(tensors, str(tmp_path / "pre.safetensors"))
    assert set(read_state_dict(tmp_path / "pre.safetensors")) == set(tensors)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_state_dict(tmp_path / "absent.ckpt")

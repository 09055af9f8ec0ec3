"""Shared fixtures: one tiny synthetic benchmark, its shards and tokenizer, built once per test session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from vlp.data.convert.coco import convert_karpathy
from vlp.data.synthetic import generate_captions_benchmark
from vlp.data.tokenizer import karpathy_train_captions, train_wordpiece

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SynthData:
    root: Path  # the data_dir that configs point at: <root>/synth/{raw,shards,tokenizer}
    karpathy_json: Path
    shards: Path
    tokenizer: Path


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> SynthData:
    root = tmp_path_factory.mktemp("data")
    raw = root / "synth" / "raw"
    karpathy_json = generate_captions_benchmark(raw, n_train=48, n_val=20, n_test=12, image_size=64, seed=3)
    shards = root / "synth" / "shards"
    convert_karpathy(karpathy_json, raw, shards, shard_size=16)
    tokenizer = root / "synth" / "tokenizer"
    train_wordpiece(karpathy_train_captions(karpathy_json), vocab_size=200).save_pretrained(tokenizer)
    return SynthData(root=root, karpathy_json=karpathy_json, shards=shards, tokenizer=tokenizer)


def compose_train_config(overrides: list[str]):
    """The config ``vlp-train <overrides>`` would run with (Hydra's compose API, no run directory)."""
    from hydra import compose, initialize_config_dir

    from vlp.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.fixture
def tiny_model():
    """The demo's model architecture with a 50-token vocabulary, randomly initialised."""
    import torch

    from vlp.build import build_model

    torch.manual_seed(0)
    return build_model(compose_train_config(["run_dir=unused"]), vocab_size=50).eval()

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
    shards = root / "synth" / "shards" / "captions"
    convert_karpathy(karpathy_json, raw, shards, shard_size=16)
    tokenizer = root / "synth" / "tokenizer"
    train_wordpiece(karpathy_train_captions(karpathy_json), vocab_size=200).save_pretrained(tokenizer)
    return SynthData(root=root, karpathy_json=karpathy_json, shards=shards, tokenizer=tokenizer)


@dataclass(frozen=True)
class SynthTask:
    raw: Path  # official-format files written by vlp-synth
    shards: Path  # vlp-shards output
    tokenizer: Path


@pytest.fixture(scope="session")
def synth_vqa(synth_data: SynthData) -> SynthTask:
    """Synthetic VQA v2 files (24 / 10 / 6 images) converted with vlp-shards vqa."""
    from vlp.data.convert.vqa import convert_vqa
    from vlp.data.synthetic_tasks import generate_vqa_benchmark

    raw, shards = synth_data.root / "synth" / "raw" / "vqa", synth_data.root / "synth" / "shards" / "vqa"
    generate_vqa_benchmark(raw, n_train=24, n_val=10, n_test=6, image_size=64, seed=5)
    convert_vqa(raw, shards, ["train2014", "val2014", "test-dev2015"], min_answer_count=2, shard_size=8)
    return SynthTask(raw=raw, shards=shards, tokenizer=synth_data.tokenizer)


@pytest.fixture(scope="session")
def synth_nlvr2(synth_data: SynthData) -> SynthTask:
    """Synthetic NLVR2 files (16 / 8 / 8 pairs) converted with vlp-shards nlvr2."""
    from vlp.data.convert.nlvr2 import convert_nlvr2
    from vlp.data.synthetic_tasks import generate_nlvr2_benchmark

    raw, shards = synth_data.root / "synth" / "raw" / "nlvr2", synth_data.root / "synth" / "shards" / "nlvr2"
    generate_nlvr2_benchmark(raw, n_train=16, n_dev=8, n_test=8, image_size=64, seed=5)
    convert_nlvr2(raw / "data", raw / "images", shards, shard_size=8)
    return SynthTask(raw=raw, shards=shards, tokenizer=synth_data.tokenizer)


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

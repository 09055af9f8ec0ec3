"""Bad data through the training pipeline: every bad sample skipped and counted, every good one kept."""

from __future__ import annotations

import io
import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from vlp.callbacks import DataSkipMonitor
from vlp.data.datamodule import CaptionDataModule
from vlp.data.images import BadImage, decode_rgb, inspect_image
from vlp.data.shards import CAPTION_SCHEMA, SplitIndex

IMAGE_CONFIG = (32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def encode(image: Image.Image, image_format: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **kwargs)
    return buffer.getvalue()


def rgb_jpeg(seed: int, size: int = 24) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG")


def caption_json(image_id: int, captions=("a red circle.",)) -> bytes:
    return json.dumps({"image_id": image_id, "captions": list(captions), "source": "test"}).encode()


def bomb_png() -> bytes:
    """A tiny file that claims 20000 x 20000 pixels (400 M, over the decompression-bomb limit)."""
    return encode(Image.new("1", (20000, 20000)), "PNG")


def odd_but_good_images() -> dict[str, bytes]:
    """Modes real datasets contain: all must be kept and converted to RGB."""
    gray = Image.fromarray(np.full((16, 16), 128, dtype=np.uint8), mode="L")
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 128))
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    sixteen = Image.fromarray(np.full((16, 16), 30000, dtype=np.uint16))
    palette = Image.new("P", (16, 16), 3)
    return {
        "grayscale": encode(gray, "PNG"),
        "rgba": encode(rgba, "PNG"),
        "cmyk": encode(cmyk, "JPEG"),
        "16-bit": encode(sixteen, "PNG"),
        "palette": encode(palette, "PNG"),
    }


def bad_samples() -> list[tuple[str, dict]]:
    """(expected reason fragment, sample members) for every kind of bad sample we know of."""
    good = rgb_jpeg(0)
    large = rgb_jpeg(1, size=64)
    return [
        ("truncated", {"jpg": large[: len(large) * 3 // 4], "json": caption_json(900)}),
        ("undecodable", {"jpg": b"\xff\xd8\xff\xe0 not a jpeg at all", "json": caption_json(901)}),
        ("undecodable", {"png": b"", "json": caption_json(902)}),
        ("too large", {"png": bomb_png(), "json": caption_json(903)}),
        ("no usable caption", {"jpg": good}),  # no json, no txt
        ("no usable caption", {"jpg": good, "json": caption_json(905, captions=())}),
        ("no usable caption", {"jpg": good, "json": caption_json(906, captions=(3, None, "  "))}),
        ("unparseable json", {"jpg": good, "json": b"{not json"}),
        ("missing image", {"json": caption_json(908)}),
        ("missing image_id", {"jpg": good, "json": json.dumps({"captions": ["x"]}).encode()}),
        (
            "not a successful download",
            {"jpg": good, "json": json.dumps({"status": "failed_to_download"}).encode()},
        ),
    ]


def write_shards(folder, samples: list[dict], shard_size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(folder / "val-%06d.tar"), maxcount=shard_size, verbose=0) as writer:
        for sample in samples:
            writer.write(sample)
    shards = sorted(p.name for p in folder.glob("val-*.tar"))
    SplitIndex("val", "test", len(samples), shards, CAPTION_SCHEMA).write(folder)


def run_eval_pass(root, tokenizer, num_workers: int = 0) -> tuple[list[int], int]:
    """(image ids of every sample that came out, total data_skipped) for one pass over root/val."""
    datamodule = CaptionDataModule(str(root), str(tokenizer), batch_size=4, num_workers=num_workers)
    datamodule.set_image_config(*IMAGE_CONFIG)
    image_ids, skipped = [], 0
    for batch in datamodule.val_dataloader():
        assert batch["pixel_values"].shape[1:] == (3, 32, 32)
        assert torch.isfinite(batch["pixel_values"]).all()
        image_ids += batch["image_id"].tolist()
        skipped += int(batch["data_skipped"])
    return image_ids, skipped


def test_every_known_kind_of_bad_sample_is_skipped_and_counted(tmp_path, synth_data, caplog):
    good = [{"__key__": f"good{i:03d}", "jpg": rgb_jpeg(i), "json": caption_json(i)} for i in range(10)]
    odd = [
        {"__key__": f"odd{i:03d}", "png" if kind != "cmyk" else "jpg": data, "json": caption_json(100 + i)}
        for i, (kind, data) in enumerate(odd_but_good_images().items())
    ]
    bad = [dict(members, __key__=f"bad{i:03d}") for i, (_, members) in enumerate(bad_samples())]
    samples = good + odd + bad
    random.Random(0).shuffle(samples)
    # Bad samples at the very end as well: their count must still reach the last batch.
    samples += [dict(bad_samples()[0][1], __key__="zzlast")]
    write_shards(tmp_path / "val", samples, shard_size=7)

    with caplog.at_level("WARNING"):
        image_ids, skipped = run_eval_pass(tmp_path, synth_data.tokenizer)
    assert sorted(image_ids) == list(range(10)) + list(range(100, 105))
    assert skipped == len(bad) + 1
    for reason, _ in bad_samples():
        assert reason in caplog.text, reason


def test_random_corruption_fuzz_never_crashes_and_accounts_for_every_sample(tmp_path, synth_data):
    rng = random.Random(1234)
    samples = []
    for i in range(60):
        data = bytearray(rgb_jpeg(i))
        meta = caption_json(i)
        kind = rng.choice(["intact", "flip", "cut", "junk-json", "swap"])
        if kind == "flip":
            for _ in range(rng.randint(1, 40)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == "cut":
            data = data[: rng.randrange(len(data))]
        elif kind == "junk-json":
            meta = bytes(rng.randrange(256) for _ in range(rng.randint(0, 30)))
        elif kind == "swap":
            data, meta = bytearray(meta), bytes(data)
        samples.append({"__key__": f"s{i:03d}", "jpg": bytes(data), "json": meta})
    write_shards(tmp_path / "val", samples, shard_size=16)
    image_ids, skipped = run_eval_pass(tmp_path, synth_data.tokenizer, num_workers=2)
    assert len(image_ids) + skipped == len(samples)
    assert len(set(image_ids)) == len(image_ids)
    assert skipped > 0 and len(image_ids) > 0


def test_a_truncated_shard_is_counted_and_the_other_shards_are_read(tmp_path, synth_data):
    samples = [{"__key__": f"k{i:03d}", "jpg": rgb_jpeg(i), "json": caption_json(i)} for i in range(12)]
    write_shards(tmp_path / "val", samples, shard_size=6)
    first = tmp_path / "val" / "val-000000.tar"
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    image_ids, skipped = run_eval_pass(tmp_path, synth_data.tokenizer)
    assert set(range(6, 12)) <= set(image_ids)  # the intact shard entirely
    assert len(image_ids) < 12 and skipped >= 1


def test_training_stream_skips_bad_samples_without_stopping(tmp_path, synth_data):
    samples = [{"__key__": f"g{i:03d}", "jpg": rgb_jpeg(i), "json": caption_json(i)} for i in range(24)]
    samples += [dict(members, __key__=f"b{i:03d}") for i, (_, members) in enumerate(bad_samples())]
    write_shards(tmp_path / "train", samples, shard_size=8)
    for path in (tmp_path / "train").glob("val-*"):
        path.rename(path.with_name(path.name.replace("val-", "train-")))
    index = SplitIndex.read(tmp_path / "train")
    index.shards = [name.replace("val-", "train-") for name in index.shards]
    index.write(tmp_path / "train")
    datamodule = CaptionDataModule(str(tmp_path), str(synth_data.tokenizer), batch_size=4, num_workers=0)
    datamodule.set_image_config(*IMAGE_CONFIG)
    batches = list(datamodule.train_dataloader())
    assert len(batches) == datamodule.steps_per_epoch(world_size=1) == 9  # 35 samples / 4
    assert all(b["pixel_values"].shape[0] == 4 for b in batches)
    assert sum(int(b["data_skipped"]) for b in batches) > 0


@pytest.mark.parametrize("kind", ["grayscale", "rgba", "cmyk", "16-bit", "palette"])
def test_odd_image_modes_become_sensible_rgb(kind):
    image = decode_rgb(odd_but_good_images()[kind])
    assert image.mode == "RGB"
    pixel = np.asarray(image)[8, 8].astype(int)
    expected = {
        "grayscale": (128, 128, 128),
        "rgba": (255, 127, 127),  # half-transparent red over white
        "cmyk": (255, 0, 0),
        "16-bit": (117, 117, 117),  # 30000 / 65535 of full scale, not clipped to white
        "palette": tuple(np.asarray(Image.new("P", (1, 1), 3).convert("RGB"))[0, 0]),
    }[kind]
    assert np.abs(pixel - np.array(expected)).max() <= 2, (kind, pixel)


def test_inspect_image_names_the_real_format_and_rejects_bombs():
    assert inspect_image(encode(Image.new("RGB", (4, 4)), "JPEG")) == ("jpg", "")
    assert inspect_image(odd_but_good_images()["grayscale"]) == ("png", "grayscale")
    with pytest.raises(BadImage, match="too large"):
        inspect_image(bomb_png())


class FakeStrategy:
    def reduce(self, tensor, reduce_op):
        return tensor


def test_skip_monitor_logs_and_stops_when_the_rate_exceeds_the_limit():
    logged = {}
    module = SimpleNamespace(
        device=torch.device("cpu"), log=lambda key, value, **_: logged.update({key: value})
    )
    trainer = SimpleNamespace(strategy=FakeStrategy())
    monitor = DataSkipMonitor(max_skip_rate=0.1, min_samples=100)
    batch = {"input_ids": torch.zeros(10, 3), "data_skipped": torch.tensor(1)}
    for step in range(10):  # 10 skipped of 110 read: 9.1%, under the limit
        given = dict(batch)
        monitor.on_train_batch_start(trainer, module, given, step)
        assert "data_skipped" not in given  # consumed here: the model never sees it
    assert logged["train/data/skipped"] == 10.0
    with pytest.raises(RuntimeError, match="max_skip_rate=0.1"):
        for step in range(10):
            monitor.on_train_batch_start(trainer, module, {**batch, "data_skipped": torch.tensor(5)}, step)
    assert monitor.state_dict()["skipped"] > 10


def test_a_stream_of_only_bad_samples_stops_with_the_reasons_instead_of_spinning():
    from vlp.data.pipeline import DecodeOrSkip, SkipCounter
    from vlp.data.samples import decode_caption_sample

    bad = ({"__key__": f"k{i}", "jpg": b"junk", "json": caption_json(i)} for i in range(10**6))
    stage = DecodeOrSkip(
        decode_caption_sample, transform=None, counter=SkipCounter(), max_consecutive_skips=50
    )
    with pytest.raises(RuntimeError, match="50 bad samples in a row.*undecodable image: 50"):
        next(stage(bad))

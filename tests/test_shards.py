import io
import json
import shutil
import tarfile
from collections import Counter

import pytest
from PIL import Image

from vlp.data.convert.cli import main as shards_main
from vlp.data.convert.coco import convert_karpathy
from vlp.data.shards import SplitIndex


def read_samples(split_dir):
    index = SplitIndex.read(split_dir)
    samples = {}
    for name in index.shards:
        with tarfile.open(split_dir / name) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return index, samples


def test_converts_every_split_with_all_captions_and_restval_in_train(synth_data):
    payload = json.loads(synth_data.karpathy_json.read_text())
    expected_captions = {}
    split_counts = Counter()
    for image in payload["images"]:
        split = "train" if image["split"] == "restval" else image["split"]
        split_counts[split] += 1
        expected_captions[image["cocoid"]] = [s["raw"] for s in image["sentences"]]
    assert any(image["split"] == "restval" for image in payload["images"])
    for split in ("train", "val", "test"):
        index, samples = read_samples(synth_data.shards / split)
        assert index.num_samples == len(samples) == split_counts[split]
        assert index.schema and index.extra["num_captions"] == sum(
            len(json.loads(s["json"])["captions"]) for s in samples.values()
        )
        for sample in samples.values():
            meta = json.loads(sample["json"])
            assert meta["captions"] == expected_captions[meta["image_id"]]
            Image.open(io.BytesIO(sample["jpg"])).verify()


def test_shard_size_sets_the_number_of_shards(synth_data):
    index = SplitIndex.read(synth_data.shards / "train")
    assert len(index.shards) == 3  # 48 images, 16 per shard
    assert all((synth_data.shards / "train" / name).is_file() for name in index.shards)


@pytest.fixture
def damaged_copy(synth_data, tmp_path):
    """A copy of the raw synthetic data with one missing image, one corrupt image, one caption-less entry
    and one entry with 7 captions."""
    raw = tmp_path / "raw"
    shutil.copytree(synth_data.karpathy_json.parent, raw)
    payload = json.loads((raw / "dataset_coco.json").read_text())
    val = [image for image in payload["images"] if image["split"] == "val"]
    (raw / val[0]["filepath"] / val[0]["filename"]).unlink()
    (raw / val[1]["filepath"] / val[1]["filename"]).write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    val[2]["sentences"] = []
    val[3]["sentences"] = val[3]["sentences"] + [
        dict(val[3]["sentences"][0], raw=f"Extra {i}.") for i in range(3)
    ]
    (raw / "dataset_coco.json").write_text(json.dumps(payload))
    return raw, val


def test_bad_entries_are_skipped_counted_and_explained(damaged_copy, tmp_path, capsys):
    raw, val = damaged_copy
    out = tmp_path / "shards"
    shards_main(
        [
            "coco",
            "--karpathy-json",
            str(raw / "dataset_coco.json"),
            "--image-root",
            str(raw),
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "val: 17 samples" in printed
    assert "skipped: 3" in printed
    for reason in ("missing image file: 1", "undecodable image: 1", "no usable caption: 1"):
        assert reason in printed
    _, samples = read_samples(out / "val")
    kept = {json.loads(s["json"])["image_id"]: json.loads(s["json"])["captions"] for s in samples.values()}
    assert len(kept) == 17
    assert val[0]["cocoid"] not in kept and val[1]["cocoid"] not in kept and val[2]["cocoid"] not in kept
    assert len(kept[val[3]["cocoid"]]) == len(val[3]["sentences"]) > 5


def test_reconverting_replaces_the_old_output(synth_data, tmp_path):
    out = tmp_path / "shards"
    convert_karpathy(synth_data.karpathy_json, synth_data.karpathy_json.parent, out, shard_size=5)
    convert_karpathy(synth_data.karpathy_json, synth_data.karpathy_json.parent, out, shard_size=50)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["index.json", "train-000000.tar"]


def test_not_a_karpathy_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "captions.json"
    bad.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="Karpathy"):
        convert_karpathy(bad, tmp_path, tmp_path / "out")


def test_missing_index_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="vlp-shards"):
        SplitIndex.read(tmp_path)


def test_shards_are_byte_reproducible_with_one_header_per_member(synth_data, tmp_path):
    """A fixed integer mtime: converting twice gives the same bytes, and no member needs a PAX header
    (which would double the time to read a shard)."""
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        convert_karpathy(synth_data.karpathy_json, synth_data.karpathy_json.parent, out, shard_size=16)
    shards = sorted(path.relative_to(first) for path in first.rglob("*.tar"))
    assert shards and shards == sorted(path.relative_to(second) for path in second.rglob("*.tar"))
    for shard in shards:
        assert (first / shard).read_bytes() == (second / shard).read_bytes()
        with tarfile.open(first / shard) as tar:
            assert all(not member.pax_headers for member in tar.getmembers())

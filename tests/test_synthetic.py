import hashlib
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from vlp.data.synthetic import COLOURS, DEFAULT_IMAGE_SIZE, GRID, SHAPES, main
from vlp.train import CONFIG_DIR


def digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        main(
            [
                "--out",
                str(tmp_path / name),
                "--n-train",
                "6",
                "--n-val",
                "2",
                "--n-test",
                "2",
                "--seed",
                str(seed),
            ]
        )
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_writes_the_karpathy_format_with_all_splits(synth_data):
    payload = json.loads(synth_data.karpathy_json.read_text())
    images = payload["images"]
    assert payload["dataset"] == "coco"
    splits = [image["split"] for image in images]
    assert splits.count("val") == 20 and splits.count("test") == 12
    assert splits.count("train") + splits.count("restval") == 48
    sentence_ids = []
    for image in images:
        assert {"filepath", "filename", "imgid", "split", "sentids", "sentences", "cocoid"} <= set(image)
        assert 4 <= len(image["sentences"]) <= 6
        assert image["sentids"] == [s["sentid"] for s in image["sentences"]]
        for sentence in image["sentences"]:
            assert sentence["imgid"] == image["imgid"]
            assert (
                sentence["tokens"]
                == sentence["raw"]
                .lower()
                .replace(".", "")
                .replace(",", "")
                .replace(":", "")
                .replace(";", "")
                .split()
            )
        sentence_ids += image["sentids"]
        with Image.open(synth_data.karpathy_json.parent / image["filepath"] / image["filename"]) as picture:
            assert picture.size == (64, 64)
    assert len(set(sentence_ids)) == len(sentence_ids)


def test_captions_name_the_objects_in_the_picture(synth_data):
    images = json.loads(synth_data.karpathy_json.read_text())["images"]
    partial = 0
    for image in images:
        for sentence in image["sentences"]:
            words = set(sentence["tokens"])
            assert any(shape in token for token in words for shape in SHAPES), sentence["raw"]
            if sentence["raw"].startswith("The picture contains"):  # one object, maybe by shape alone
                partial += 1
                continue
            assert words & set(COLOURS), sentence["raw"]
    assert 0 < partial < sum(len(image["sentences"]) for image in images) / 3


def test_rejects_an_image_size_too_small_to_draw(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--image-size", "8"])
    assert "too small" in capsys.readouterr().err


def test_demo_tower_has_one_patch_per_scene_cell(tmp_path):
    """The demo's vision tower and vlp-synth's default scenes agree: one 24 px patch per cell of the 3x3
    object grid (with cells straddling patches the tiny tower learned shape far slower), and the default
    scenes are drawn at the tower's size, so nothing is resized."""
    tower = OmegaConf.load(Path(CONFIG_DIR) / "model" / "vision" / "vit_tiny.yaml")
    assert tower.image_size == DEFAULT_IMAGE_SIZE
    assert tower.image_size == GRID * tower.model_kwargs.patch_size
    main(["--out", str(tmp_path), "--tasks", "captions", "--n-train", "1", "--n-val", "1", "--n-test", "1"])
    with Image.open(next((tmp_path / "images").glob("*.jpg"))) as image:
        assert image.size == (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)

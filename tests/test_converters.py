"""vlp-shards on tiny fixtures written in the exact official formats (docs/FORMATS.md).

Every fixture is built in tmp_path: COCO Karpathy / official caption files, Flickr30k, VQA v2, NLVR2 and an
img2dataset output folder, with real 8x8 images written by PIL. The converters run through the CLI entry
point (``vlp.data.convert.cli.main``), as ``vlp-shards <source> ...`` does.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from vlp.data.convert import common
from vlp.data.convert.cli import main as shards_main
from vlp.data.shards import SplitIndex

RED, BLUE, GREEN, YELLOW = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 0)
PALETTE = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


# ----------------------------------------------------------------------------------------------- helpers


def image_bytes(color: tuple[int, int, int], fmt: str = "JPEG", size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def write_image(path: Path, color: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = image_bytes(color, fmt)
    path.write_bytes(data)
    return data


def center_color(data: bytes) -> tuple[int, int, int]:
    return Image.open(io.BytesIO(data)).convert("RGB").getpixel((4, 4))


def close_to(color: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(color, expected, strict=True))


def read_split(split_dir: Path) -> tuple[SplitIndex, dict[str, dict[str, bytes]]]:
    """The split's index and its samples, ``key -> {member extension: bytes}``, in shard order."""
    index = SplitIndex.read(split_dir)
    samples: dict[str, dict[str, bytes]] = {}
    for url in index.urls(split_dir):
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return index, samples


def metas(samples: dict[str, dict[str, bytes]]) -> dict[str, dict]:
    return {key: json.loads(sample["json"]) for key, sample in samples.items()}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``vlp-shards argv`` and return what it printed on stdout (the summary)."""
    capsys.readouterr()
    shards_main([str(a) for a in argv])
    return capsys.readouterr().out


def split_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir())


def tokens(raw: str) -> list[str]:
    return [w.strip(".,!?").lower() for w in raw.split() if w.strip(".,!?")]


def karpathy_entry(imgid: int, filename: str, split: str, raws: list[str], sentid: int, **extra) -> dict:
    sentences = [
        {"tokens": tokens(raw), "raw": raw, "imgid": imgid, "sentid": sentid + i}
        for i, raw in enumerate(raws)
    ]
    return {
        **({"filepath": extra["filepath"]} if "filepath" in extra else {}),
        "sentids": [s["sentid"] for s in sentences],
        "filename": filename,
        "imgid": imgid,
        "split": split,
        "sentences": sentences,
        **({"cocoid": extra["cocoid"]} if "cocoid" in extra else {}),
    }


def five(subject: str) -> list[str]:
    return [f"{subject} number {i}." for i in range(1, 6)]


# ------------------------------------------------------------------------------ COCO, Karpathy split

COCO_SEVEN = [
    "A man with a red helmet on a small moped on a dirt road. ",
    "Man riding a motor bike on a dirt road on the countryside.",
    "A man riding on the back of a motorcycle.",
    "A dirt path with a young person on a motor bike rests to the foreground of a verdant area.",
    "A man in a red shirt and a red hat is on a motorcycle on a hill side.",
    "A man on a motorbike in the country.",
    "Someone rides a motorcycle on a muddy road.",
]
COCO_THREE_RAW = [
    "A woman wearing a net on her head cutting a cake. ",
    " \n ",  # whitespace only: dropped
    "A woman cutting a large white sheet cake.",
    "A woman wearing a hair net cutting a large sheet cake.",
]
COCO_THREE = [
    "A woman wearing a net on her head cutting a cake.",
    "A woman cutting a large white sheet cake.",
    "A woman wearing a hair net cutting a large sheet cake.",
]
# cocoid, filepath, Karpathy split, raw captions
COCO_KARPATHY = [
    (391895, "val2014", "val", COCO_SEVEN),
    (522418, "val2014", "test", COCO_THREE_RAW),
    (184613, "train2014", "train", five("A child holding a flowered umbrella")),
    (318219, "val2014", "restval", five("A young boy at a computer")),
    (554625, "val2014", "restval", five("A boy wearing headphones")),
    (60623, "val2014", "val", five("A young girl inhales with the intent of blowing out a candle")),
]


def build_coco_karpathy(root: Path) -> list[str]:
    images, sentid = [], 0
    for imgid, (cocoid, filepath, split, raws) in enumerate(COCO_KARPATHY):
        filename = f"COCO_{filepath}_{cocoid:012d}.jpg"
        write_image(root / "coco" / filepath / filename, PALETTE[imgid])
        images.append(karpathy_entry(imgid, filename, split, raws, sentid, filepath=filepath, cocoid=cocoid))
        sentid += len(raws)
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return ["coco", "--karpathy-json", root / "dataset_coco.json", "--image-root", root / "coco"]


def test_coco_karpathy_splits_captions_keys_and_index(tmp_path, capsys):
    out = tmp_path / "out"
    printed = run_cli([*build_coco_karpathy(tmp_path), "--out", out, "--shard-size", "2"], capsys)

    assert split_dirs(out) == ["test", "train", "val"]  # restval went into train
    expected = {  # split -> (keys, captions, shards)
        "train": ({"000000184613", "000000318219", "000000554625"}, 15, 2),
        "val": ({"000000391895", "000000060623"}, 12, 1),
        "test": ({"000000522418"}, 3, 1),
    }
    for split, (keys, num_captions, num_shards) in expected.items():
        index, samples = read_split(out / split)
        assert set(samples) == keys
        assert index.num_samples == len(keys)
        assert index.extra["num_captions"] == num_captions
        assert len(index.shards) == num_shards
        assert index.source == "coco"
        assert sorted(p.name for p in (out / split).glob("*.tar")) == index.shards
    _, val = read_split(out / "val")
    seven = json.loads(val["000000391895"]["json"])
    assert seven["image_id"] == 391895
    assert seven["source"] == "coco"
    assert seven["file"] == "COCO_val2014_000000391895.jpg"
    assert seven["captions"] == [c.strip() for c in COCO_SEVEN] and len(seven["captions"]) == 7
    # the original bytes, never re-encoded
    original = (tmp_path / "coco" / "val2014" / "COCO_val2014_000000391895.jpg").read_bytes()
    assert val["000000391895"]["jpg"] == original
    _, test = read_split(out / "test")
    assert json.loads(test["000000522418"]["json"])["captions"] == COCO_THREE
    _, train = read_split(out / "train")
    assert set(train["000000184613"]) == {"jpg", "json"}
    assert json.loads(train["000000318219"]["json"])["captions"] == five("A young boy at a computer")

    assert "  train: 3 samples, 15 captions" in printed.splitlines()
    assert "  val: 2 samples, 12 captions" in printed.splitlines()
    assert "  test: 1 samples, 3 captions" in printed.splitlines()
    assert "  skipped: 0" in printed.splitlines()


# ------------------------------------------------------------------------------ COCO, official files

OFFICIAL_SIX = [  # (annotation id, caption), listed out of id order on purpose
    (781998, "A bicycle replica with a clock as the front wheel."),
    (770337, "The bike has a clock as a tire."),
    (789366, "A black metal bicycle with a clock inside the front wheel."),
    (771687, "A bicycle figurine in which the front wheel is replaced with a clock"),
    (776154, "A clock with the appearance of the wheel of a bicycle "),
    (772707, "A bike with a clock as the front wheel."),
]


def coco_official_payload(subtype: str, images: dict[int, list[tuple[int, str]]]) -> dict:
    return {
        "info": {"description": "COCO 2014 Dataset", "version": "1.0", "year": 2014},
        "licenses": [
            {"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1, "name": "BY-NC-SA"}
        ],
        "images": [
            {
                "license": 1,
                "file_name": f"COCO_{subtype}_{image_id:012d}.jpg",
                "coco_url": f"http://images.cocodataset.org/{subtype}/COCO_{subtype}_{image_id:012d}.jpg",
                "height": 8,
                "width": 8,
                "date_captured": "2013-11-14 11:18:45",
                "flickr_url": "http://farm.staticflickr.com/photo.jpg",
                "id": image_id,
            }
            for image_id in images
        ],
        "annotations": [
            {"image_id": image_id, "id": annotation_id, "caption": caption}
            for image_id, captions in images.items()
            for annotation_id, caption in captions
        ],
    }


def build_coco_official(root: Path) -> list[str]:
    files = {
        "val2014": {
            391895: OFFICIAL_SIX,
            522418: [],  # no caption at all: skipped and counted
            60623: [(1000 + i, c) for i, c in enumerate(five("A girl and a candle"))],
        },
        "train2014": {
            9: [(2000 + i, c) for i, c in enumerate(five("A bowl of food"))],
            25: [(3000 + i, c) for i, c in enumerate(five("A giraffe eating leaves"))],
        },
    }
    paths = []
    for n, (subtype, images) in enumerate(files.items()):
        for m, image_id in enumerate(images):
            write_image(root / "coco" / subtype / f"COCO_{subtype}_{image_id:012d}.jpg", PALETTE[n * 3 + m])
        path = root / "annotations" / f"captions_{subtype}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(coco_official_payload(subtype, images)))
        paths.append(path)
    return ["coco", "--captions-json", *paths, "--image-root", root / "coco"]


def test_coco_official_captions_one_split_per_subtype(tmp_path, capsys):
    out = tmp_path / "out"
    printed = run_cli([*build_coco_official(tmp_path), "--out", out], capsys)

    assert split_dirs(out) == ["train2014", "val2014"]
    index, samples = read_split(out / "val2014")
    assert set(samples) == {"000000391895", "000000060623"}
    assert index.num_samples == 2
    assert index.extra["num_captions"] == 11
    six = json.loads(samples["000000391895"]["json"])
    assert six["captions"] == [  # ordered by annotation id
        "The bike has a clock as a tire.",
        "A bicycle figurine in which the front wheel is replaced with a clock",
        "A bike with a clock as the front wheel.",
        "A clock with the appearance of the wheel of a bicycle",
        "A bicycle replica with a clock as the front wheel.",
        "A black metal bicycle with a clock inside the front wheel.",
    ]
    assert six["image_id"] == 391895 and six["source"] == "coco"
    original = (tmp_path / "coco" / "val2014" / "COCO_val2014_000000391895.jpg").read_bytes()
    assert samples["000000391895"]["jpg"] == original
    index, samples = read_split(out / "train2014")
    assert set(samples) == {"000000000009", "000000000025"}
    assert index.num_samples == 2 and index.extra["num_captions"] == 10

    lines = printed.splitlines()
    assert "  train2014: 2 samples, 10 captions" in lines
    assert "  val2014: 2 samples, 11 captions" in lines
    assert "  skipped: 1" in lines
    assert "    no usable caption: 1 (e.g. COCO_val2014_000000522418.jpg)" in lines


# ------------------------------------------------------------------------------------------ Flickr30k

FLICKR = [  # file name, split
    ("1000092795.jpg", "train"),
    ("10002456.jpg", "train"),
    ("1000268201.jpg", "train"),
    ("1000344755.jpg", "val"),
    ("1000366164.jpg", "test"),
    ("1000523639.jpg", "test"),
]


def build_flickr30k(root: Path) -> list[str]:
    images = []
    for imgid, (filename, split) in enumerate(FLICKR):
        write_image(root / "flickr30k-images" / filename, PALETTE[imgid])
        images.append(karpathy_entry(imgid, filename, split, five(f"Photo {filename}"), imgid * 5))
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return [
        "flickr30k",
        "--karpathy-json",
        root / "dataset_flickr30k.json",
        "--image-root",
        root / "flickr30k-images",
    ]


def test_flickr30k_splits_numeric_image_ids_and_source(tmp_path, capsys):
    out = tmp_path / "out"
    printed = run_cli([*build_flickr30k(tmp_path), "--out", out], capsys)

    assert split_dirs(out) == ["test", "train", "val"]
    expected = {
        "train": {1000092795, 10002456, 1000268201},
        "val": {1000344755},
        "test": {1000366164, 1000523639},
    }
    for split, image_ids in expected.items():
        index, samples = read_split(out / split)
        assert index.num_samples == len(image_ids)
        assert index.source == "flickr30k"
        assert index.extra["num_captions"] == 5 * len(image_ids)
        assert set(samples) == {f"{image_id:012d}" for image_id in image_ids}
        for key, meta in metas(samples).items():
            assert meta["image_id"] == int(key)
            assert meta["source"] == "flickr30k"
            assert meta["file"] == f"{meta['image_id']}.jpg"
            assert meta["captions"] == five(f"Photo {meta['image_id']}.jpg")
    _, samples = read_split(out / "train")
    assert samples["000010002456"]["jpg"] == (tmp_path / "flickr30k-images" / "10002456.jpg").read_bytes()
    assert "  train: 3 samples, 15 captions" in printed.splitlines()
    assert "  val: 1 samples, 5 captions" in printed.splitlines()
    assert "  test: 2 samples, 10 captions" in printed.splitlines()


# --------------------------------------------------------------------------------------------- VQA v2

Q1_ANSWERS = ["two", "two", "2", "Three", "two", "2", "none", "two", "2", "Three"]  # 4 two, 3 2, 2 Three


def vqa_annotation(qid, image_id, question_type, answer_type, mc, answers):
    confidences = ("yes", "maybe", "no")
    return {
        "question_type": question_type,
        "multiple_choice_answer": mc,
        "answers": [
            {"answer": a, "answer_confidence": confidences[i % 3], "answer_id": i + 1}
            for i, a in enumerate(answers)
        ],
        "image_id": image_id,
        "answer_type": answer_type,
        "question_id": qid,
    }


# subtype -> [(question_id, image_id, question, annotation args or None)]; None: no annotation
VQA_QUESTIONS = {
    "train2014": [
        (458752000, 458752, "How many people are there?", ("how many", "number", "two", Q1_ANSWERS)),
        (458752001, 458752, "Is this a game?", ("is this", "yes/no", "yes", ["yes"] * 10)),
        (458752002, 458752, "What is this?", ("what is this", "other", "Net", ["net"] * 6 + ["netting"] * 4)),
        (262146000, 262146, "Is it sunny?", ("is it", "yes/no", "yes", ["yes"] * 8 + ["no"] * 2)),
        (
            262146001,
            262146,
            "How many dogs?",
            ("how many", "number", "3", ["3"] * 5 + ["three"] * 3 + ["4"] * 2),
        ),
        (262146002, 262146, "What color is the sky?", None),  # question without annotation: skipped
    ],
    "val2014": [
        (393225000, 393225, "Is the man smiling?", ("is the man", "yes/no", "no", ["no"] * 9 + ["yes"])),
        (393225001, 393225, "What is he holding?", ("what is he", "other", "the net", ["the net"] * 10)),
        (393225002, 393225, "What color is the bus?", ("what color is the", "other", "Red", ["Red"] * 10)),
        (262148000, 262148, "Is this outside?", ("is this", "yes/no", "No.", ["no"] * 7 + ["No."] * 3)),
        (262148001, 262148, "Is it raining?", ("is it", "yes/no", "yes", ["yes"] * 10)),
        (524291000, 524291, "How many cats?", ("how many", "number", "three", ["three"] * 10)),
        (524291001, 524291, "How many cups?", ("how many", "number", "2", ["2"] * 10)),
        (524291002, 524291, "Is it night?", ("is it", "yes/no", "no", ["no"] * 10)),
    ],
    "test-dev2015": [
        (262144000, 262144, "What is the man doing?", None),
        (262144001, 262144, "Is the grass green?", None),
        (393226000, 393226, "Where is the dog?", None),
    ],
}
# normalized multiple_choice_answer counts over train+val: no 3, yes 3, 2 2, 3 2, net 2, red 1
VQA_VOCABULARY = ["no", "yes", "2", "3", "net"]


def build_vqa(root: Path) -> list[str]:
    for n, (subtype, rows) in enumerate(VQA_QUESTIONS.items()):
        folder = "test2015" if subtype.startswith("test") else subtype
        for m, image_id in enumerate(sorted({image_id for _, image_id, _, _ in rows})):
            write_image(root / "images" / folder / f"COCO_{folder}_{image_id:012d}.jpg", PALETTE[(n + m) % 6])
        header = {
            "info": {"description": "VQA v2"},
            "license": {"name": "CC BY 4.0"},
            "data_subtype": subtype,
        }
        questions = {
            **header,
            "task_type": "Open-Ended",
            "data_type": "mscoco",
            "questions": [{"image_id": i, "question": q, "question_id": qid} for qid, i, q, _ in rows],
        }
        (root / "vqa").mkdir(parents=True, exist_ok=True)
        (root / "vqa" / f"v2_OpenEnded_mscoco_{subtype}_questions.json").write_text(json.dumps(questions))
        if subtype.startswith("test"):
            continue
        annotations = [vqa_annotation(qid, i, *a) for qid, i, _, a in rows if a is not None]
        (root / "vqa" / f"v2_mscoco_{subtype}_annotations.json").write_text(
            json.dumps({**header, "annotations": annotations})
        )
    return [
        "vqa",
        "--root",
        root / "vqa",
        "--image-root",
        root / "images",
        "--splits",
        "train2014",
        "val2014",
        "test-dev2015",
        "--min-answer-count",
        "2",
    ]


def test_vqa_vocabulary_soft_targets_and_per_image_samples(tmp_path, capsys):
    out = tmp_path / "out"
    printed = run_cli([*build_vqa(tmp_path), "--out", out], capsys)

    vocabulary = json.loads((out / "answers.json").read_text())
    assert vocabulary == {
        "answers": VQA_VOCABULARY,
        "min_answer_count": 2,
        "vocab_splits": ["train2014", "val2014"],
    }
    assert split_dirs(out) == ["test-dev2015", "train2014", "val2014"]

    index, samples = read_split(out / "train2014")
    assert set(samples) == {"000000458752", "000000262146"}
    assert index.num_samples == 2
    assert index.extra["num_questions"] == 5  # the question without annotation is not there
    assert index.extra["num_answers"] == 5
    assert index.source == "vqa"
    meta = json.loads(samples["000000458752"]["json"])
    assert meta["image_id"] == 458752 and meta["source"] == "vqa"
    assert [q["question_id"] for q in meta["questions"]] == [458752000, 458752001, 458752002]
    assert meta["questions"][0] == {
        "question_id": 458752000,
        "question": "How many people are there?",
        "question_type": "how many",
        "answer_type": "number",
        "multiple_choice_answer": "two",
        "answers": Q1_ANSWERS,  # the 10 raw answers, unchanged
        # normalized "2" x7 -> 1.0 (label 2), "3" x2 -> 0.6 (label 3); "0" x1 is not in the vocabulary
        "targets": {"labels": [2, 3], "scores": [1.0, 0.6]},
    }
    assert meta["questions"][1]["targets"] == {"labels": [1], "scores": [1.0]}  # 10 x yes
    assert meta["questions"][2]["targets"] == {"labels": [4], "scores": [1.0]}  # 6 net; netting not kept
    other = json.loads(samples["000000262146"]["json"])
    assert [q["question_id"] for q in other["questions"]] == [262146000, 262146001]
    assert other["questions"][0]["targets"] == {"labels": [0, 1], "scores": [0.6, 1.0]}  # 2 no, 8 yes
    assert other["questions"][1]["targets"] == {"labels": [3], "scores": [1.0]}  # 3 x8; "4" x2 not kept
    assert (
        samples["000000458752"]["jpg"]
        == (tmp_path / "images" / "train2014" / "COCO_train2014_000000458752.jpg").read_bytes()
    )

    index, samples = read_split(out / "val2014")
    assert set(samples) == {"000000393225", "000000262148", "000000524291"}
    assert index.extra["num_questions"] == 8
    assert index.extra["num_questions_without_vocabulary_answer"] == 1  # "Red" x10
    val = metas(samples)
    red = val["000000393225"]["questions"][2]
    assert red["multiple_choice_answer"] == "Red" and red["answers"] == ["Red"] * 10
    assert red["targets"] == {"labels": [], "scores": []}
    assert val["000000393225"]["questions"][1]["targets"] == {"labels": [4], "scores": [1.0]}  # "the net"
    assert val["000000262148"]["questions"][0]["targets"] == {"labels": [0], "scores": [1.0]}  # no / No.

    index, samples = read_split(out / "test-dev2015")
    assert set(samples) == {"000000262144", "000000393226"}
    assert index.extra["num_questions"] == 3
    test = metas(samples)
    assert test["000000262144"]["questions"] == [
        {"question_id": 262144000, "question": "What is the man doing?"},
        {"question_id": 262144001, "question": "Is the grass green?"},
    ]
    assert (
        samples["000000393226"]["jpg"]
        == (tmp_path / "images" / "test2015" / "COCO_test2015_000000393226.jpg").read_bytes()
    )

    lines = printed.splitlines()
    assert "  train2014: 2 samples, 5 questions" in lines
    assert "  val2014: 3 samples, 8 questions, 1 questions without vocabulary answer" in lines
    assert "  test-dev2015: 2 samples, 3 questions" in lines
    assert "  skipped: 1" in lines
    assert "    question without annotation: 1 (e.g. 262146002)" in lines


# ---------------------------------------------------------------------------------------------- NLVR2


def nlvr2_row(identifier: str, sentence: str, label: str, directory: int | None = None) -> dict:
    split, set_id, pair, _ = identifier.split("-")
    row = {
        "validation": {"AN0000": label, "AN0001": label},
        "sentence": sentence,
        "left_url": f"https://example.com/{set_id}-{pair}-left.jpg",
        "writer": "WR0042",
        "label": label,
        "right_url": f"https://example.com/{set_id}-{pair}-right.jpg",
        "synset": "n02109047",
        "query": "great dane dog",
        "identifier": identifier,
        "extra_validations": {},
    }
    if directory is not None:
        row["directory"] = directory
    return row


def build_nlvr2(root: Path) -> list[str]:
    images = root / "images"
    # train: directory sub-folders; the second row shares the first row's image pair
    write_image(images / "train" / "1" / "train-10171-0-img0.png", RED, "PNG")
    write_image(images / "train" / "1" / "train-10171-0-img1.png", BLUE, "PNG")
    write_image(images / "train" / "7" / "train-2853-1-img0.png", GREEN, "JPEG")  # a .png holding a JPEG
    write_image(images / "train" / "7" / "train-2853-1-img1.png", YELLOW, "PNG")
    write_image(images / "dev" / "dev-850-0-img0.png", BLUE, "PNG")
    write_image(images / "dev" / "dev-850-0-img1.png", RED, "PNG")
    write_image(images / "dev" / "dev-850-1-img0.png", GREEN, "PNG")  # its img1 is missing
    write_image(images / "dev" / "dev-12-3-img0.png", YELLOW, "PNG")
    write_image(images / "dev" / "dev-12-3-img1.png", GREEN, "PNG")
    train = [
        nlvr2_row("train-10171-0-0", "The left image is red.", "True", directory=1),
        nlvr2_row("train-10171-0-1", "Both images are blue.", "False", directory=1),
        nlvr2_row("train-2853-1-0", "There are two dogs.", "False", directory=7),
    ]
    dev = [
        nlvr2_row("dev-850-0-0", "One image shows exactly two dogs.", "True"),
        nlvr2_row("dev-850-1-0", "A dog is lying down.", "True"),
        nlvr2_row("dev-12-3-2", "The right image has a cat.", "False"),
    ]
    data = root / "nlvr" / "nlvr2" / "data"
    data.mkdir(parents=True)
    (data / "train.json").write_text("".join(json.dumps(row) + "\n" for row in train))
    (data / "dev.json").write_text("".join(json.dumps(row) + "\n" for row in dev))
    return ["nlvr2", "--json-dir", data, "--image-root", images, "--splits", "train", "dev"]


def test_nlvr2_pairs_labels_real_formats_and_missing_image(tmp_path, capsys):
    out = tmp_path / "out"
    printed = run_cli([*build_nlvr2(tmp_path), "--out", out], capsys)

    assert split_dirs(out) == ["dev", "train"]
    index, samples = read_split(out / "train")
    assert list(samples) == ["train-10171-0-0", "train-10171-0-1", "train-2853-1-0"]
    assert index.num_samples == 3 and index.source == "nlvr2"
    assert index.extra["num_labelled_true"] == 1 and index.extra["num_labelled_false"] == 2
    first = samples["train-10171-0-0"]
    assert set(first) == {"img0.png", "img1.png", "json"}
    assert center_color(first["img0.png"]) == RED  # left
    assert center_color(first["img1.png"]) == BLUE  # right
    assert json.loads(first["json"]) == {
        "source": "nlvr2",
        "identifier": "train-10171-0-0",
        "sentence": "The left image is red.",
        "label": True,
    }
    assert json.loads(samples["train-10171-0-1"]["json"])["label"] is False
    jpeg_pair = samples["train-2853-1-0"]
    assert set(jpeg_pair) == {"img0.jpg", "img1.png", "json"}  # stored under its real format
    assert (
        jpeg_pair["img0.jpg"] == (tmp_path / "images" / "train" / "7" / "train-2853-1-img0.png").read_bytes()
    )
    assert close_to(center_color(jpeg_pair["img0.jpg"]), GREEN)
    assert center_color(jpeg_pair["img1.png"]) == YELLOW

    index, samples = read_split(out / "dev")
    assert list(samples) == ["dev-850-0-0", "dev-12-3-2"]
    assert index.num_samples == 2
    assert center_color(samples["dev-850-0-0"]["img0.png"]) == BLUE
    assert center_color(samples["dev-850-0-0"]["img1.png"]) == RED
    assert json.loads(samples["dev-12-3-2"]["json"])["label"] is False

    lines = printed.splitlines()
    assert "  train: 3 samples, 2 labelled false, 1 labelled true" in lines
    assert "  dev: 2 samples, 1 labelled false, 1 labelled true" in lines
    assert "  skipped: 1" in lines
    missing = tmp_path / "images" / "dev" / "dev-850-1-img1.png"
    assert f"    missing image file: 1 (e.g. {missing})" in lines


# ---------------------------------------------------------------------------------------- img2dataset

# 16 samples per shard -> 7-digit keys; failed downloads are absent from the tars
I2D_FAILED = {3, 7, 12, 19}
I2D_CORRUPT = 5
I2D_EMPTY_CAPTION = 20
I2D_SHARDS = {0: range(0, 16), 1: range(16, 22)}


def i2d_caption(index: int) -> str:
    return "" if index == I2D_EMPTY_CAPTION else f"a photo number {index} of a mountain lake"


def i2d_columns(index: int, data: bytes) -> dict:
    key = f"{index:07d}"
    return {
        "caption": i2d_caption(index),
        "url": f"https://cdn.example.com/photos/{index}.jpg",
        "key": key,
        "status": "success",
        "error_message": None,
        "width": 8,
        "height": 8,
        "original_width": 640,
        "original_height": 480,
        "exif": json.dumps({"Image Make": "Canon"}) if index % 2 else None,
        "sha256": hashlib.sha256(data).hexdigest(),
        "similarity": round(0.25 + index / 100, 4),
    }


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def build_img2dataset_folder(root: Path) -> Path:
    folder = root / "cc3m"
    folder.mkdir(parents=True)
    for shard, indices in I2D_SHARDS.items():
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for index in indices:
                if index in I2D_FAILED:
                    continue
                key = f"{index:07d}"
                data = image_bytes(PALETTE[index % 6])
                columns = i2d_columns(index, data)
                if index == I2D_CORRUPT:
                    data = data[:-10]  # truncated download
                add_member(tar, f"{key}.jpg", data)
                add_member(tar, f"{key}.txt", i2d_caption(index).encode())
                add_member(tar, f"{key}.json", json.dumps(columns).encode())
        failed = len([i for i in indices if i in I2D_FAILED])
        stats = {
            "count": len(indices),
            "successes": len(indices) - failed,
            "failed_to_download": failed,
            "failed_to_resize": 0,
            "duration": 1.5,
            "start_time": 1_700_000_000.0,
            "end_time": 1_700_000_001.5,
            "status_dict": {"success": len(indices) - failed, "<urlopen error timed out>": failed},
        }
        (folder / f"{shard:05d}_stats.json").write_text(json.dumps(stats))
    return folder


def build_img2dataset(root: Path, mode: str = "reindex") -> list[str]:
    return ["img2dataset", "--input", build_img2dataset_folder(root), "--mode", mode, "--name", "cc3m"]


I2D_GOOD = [i for i in range(22) if i not in I2D_FAILED | {I2D_CORRUPT, I2D_EMPTY_CAPTION}]


def test_img2dataset_reindex_keeps_keys_captions_metadata(tmp_path, capsys):
    out = tmp_path / "out"
    printed = run_cli([*build_img2dataset(tmp_path, "reindex"), "--out", out, "--shard-size", "10"], capsys)

    index, samples = read_split(out / "train")
    assert list(samples) == [f"{i:07d}" for i in I2D_GOOD]
    assert index.num_samples == 16 and index.extra["num_captions"] == 16
    assert index.shards == ["train-000000.tar", "train-000001.tar"]
    assert index.source == "cc3m"
    original = image_bytes(PALETTE[17 % 6])
    assert samples["0000017"]["jpg"] == original
    assert json.loads(samples["0000017"]["json"]) == {
        "image_id": 17,
        "captions": ["a photo number 17 of a mountain lake"],
        "source": "cc3m",
        "key": "0000017",
        "metadata": {  # every column but caption, key, status and error_message
            "url": "https://cdn.example.com/photos/17.jpg",
            "width": 8,
            "height": 8,
            "original_width": 640,
            "original_height": 480,
            "exif": json.dumps({"Image Make": "Canon"}),
            "sha256": hashlib.sha256(original).hexdigest(),
            "similarity": 0.42,
        },
    }
    lines = printed.splitlines()
    assert "  train: 16 samples, 16 captions" in lines
    assert "  skipped: 2" in lines
    assert [line for line in lines if line.endswith(": 1 (e.g. 00000.tar:0000005)")] == [
        "    undecodable or truncated image: 1 (e.g. 00000.tar:0000005)"
    ]
    assert "    no usable caption: 1 (e.g. 00001.tar:0000020)" in lines
    assert "  not in the input shards (failed to download): 4" in lines


def test_img2dataset_passthrough_indexes_the_original_tars(tmp_path, capsys):
    out = tmp_path / "out"
    argv = build_img2dataset(tmp_path, "passthrough")
    printed = run_cli([*argv, "--out", out], capsys)

    assert sorted(p.name for p in (out / "train").iterdir()) == ["index.json"]  # nothing copied
    index = SplitIndex.read(out / "train")
    folder = tmp_path / "cc3m"
    assert index.shards == [str((folder / "00000.tar").resolve()), str((folder / "00001.tar").resolve())]
    assert all(Path(s).is_absolute() for s in index.shards)
    # passthrough does not decode images (documented: bad images are skipped when read for training), so
    # the truncated jpg is counted; the empty caption is not
    assert index.num_samples == 17
    assert index.extra["mode"] == "passthrough" and index.extra["num_captions"] == 17
    assert index.source == "cc3m"
    _, samples = read_split(out / "train")  # the pipeline reads the original members in place
    assert len(samples) == 18 and set(samples["0000000"]) == {"jpg", "txt", "json"}
    lines = printed.splitlines()
    assert "  train: 17 samples, 17 captions" in lines
    assert "  skipped: 1" in lines
    assert "    no usable caption: 1 (e.g. 00001.tar:0000020)" in lines
    assert "  not in the input shards (failed to download): 4" in lines


# ------------------------------------------------------------------ every converter: re-runs, workers

SCENARIOS: dict[str, Callable[[Path], list[str]]] = {
    "coco-karpathy": build_coco_karpathy,
    "coco-official": build_coco_official,
    "flickr30k": build_flickr30k,
    "vqa": build_vqa,
    "nlvr2": build_nlvr2,
    "img2dataset-reindex": lambda root: build_img2dataset(root, "reindex"),
    "img2dataset-passthrough": lambda root: build_img2dataset(root, "passthrough"),
}
SCENARIO_SPLITS = {
    "coco-karpathy": ["test", "train", "val"],
    "coco-official": ["train2014", "val2014"],
    "flickr30k": ["test", "train", "val"],
    "vqa": ["test-dev2015", "train2014", "val2014"],
    "nlvr2": ["dev", "train"],
    "img2dataset-reindex": ["train"],
    "img2dataset-passthrough": ["train"],
}
SCENARIO_SAMPLES = {
    "coco-karpathy": {"test": 1, "train": 3, "val": 2},
    "coco-official": {"train2014": 2, "val2014": 2},
    "flickr30k": {"test": 2, "train": 3, "val": 1},
    "vqa": {"test-dev2015": 2, "train2014": 2, "val2014": 3},
    "nlvr2": {"dev": 2, "train": 3},
    "img2dataset-reindex": {"train": 16},
    "img2dataset-passthrough": {"train": 17},
}


def scenario_params():
    return [pytest.param(name, id=name) for name in SCENARIOS]


def snapshot(out: Path, splits: list[str]) -> dict:
    """Per split: the shard files (name -> inode), the index and every sample's members."""
    state = {}
    for split in splits:
        index, samples = read_split(out / split)
        tars = {p.name: p.stat().st_ino for p in sorted((out / split).glob("*.tar"))}
        state[split] = {
            "tars": tars,
            "index": json.loads((out / split / "index.json").read_text()),
            "samples": samples,
        }
    return state


@pytest.mark.parametrize("name", scenario_params())
def test_rerun_is_up_to_date_and_overwrite_redoes(name, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*SCENARIOS[name](tmp_path), "--out", out, "--shard-size", "2", "--workers", "1"]
    splits = SCENARIO_SPLITS[name]
    first_printed = run_cli(argv, capsys)
    assert split_dirs(out) == splits
    first = snapshot(out, splits)
    for split in splits:
        assert first[split]["index"]["num_samples"] == SCENARIO_SAMPLES[name][split]
        assert len(first[split]["samples"]) == (
            18 if name.endswith("passthrough") else SCENARIO_SAMPLES[name][split]
        )
        assert f"  {split}: {SCENARIO_SAMPLES[name][split]} samples" in first_printed

    again = run_cli(argv, capsys)
    for split in splits:
        assert f"  {split}: up to date, not rewritten (pass --overwrite to redo)" in again.splitlines()
    assert not [line for line in again.splitlines() if line.endswith(" samples") or " samples, " in line]
    assert snapshot(out, splits) == first  # same files (same inodes), no duplicates

    redone = run_cli([*argv, "--overwrite"], capsys)
    assert not [line for line in redone.splitlines() if "up to date" in line]
    for split in splits:
        assert f"  {split}: {SCENARIO_SAMPLES[name][split]} samples" in redone
    after = snapshot(out, splits)
    for split in splits:
        assert after[split]["samples"] == first[split]["samples"]
        assert after[split]["index"] == first[split]["index"]
        assert list(after[split]["tars"]) == list(first[split]["tars"])
        if first[split]["tars"]:  # rewritten: new files
            assert all(after[split]["tars"][n] != ino for n, ino in first[split]["tars"].items())


@pytest.mark.parametrize("name", scenario_params())
def test_two_workers_write_the_same_shards_as_one(name, tmp_path, capsys):
    argv = SCENARIOS[name](tmp_path)
    splits = SCENARIO_SPLITS[name]
    run_cli([*argv, "--out", tmp_path / "one", "--shard-size", "2", "--workers", "1"], capsys)
    run_cli([*argv, "--out", tmp_path / "two", "--shard-size", "2", "--workers", "2"], capsys)
    one, two = snapshot(tmp_path / "one", splits), snapshot(tmp_path / "two", splits)
    for split in splits:
        assert list(two[split]["samples"]) == list(one[split]["samples"])  # same keys, same order
        assert two[split]["samples"] == one[split]["samples"]  # same json and image bytes
        assert two[split]["index"] == one[split]["index"]
        assert list(two[split]["tars"]) == list(one[split]["tars"])
    if name == "vqa":
        assert (tmp_path / "two" / "answers.json").read_text() == (
            tmp_path / "one" / "answers.json"
        ).read_text()


# ------------------------------------------------------------------------------------- clear errors


def test_captions_file_passed_as_karpathy_json_is_a_clear_error(tmp_path, capsys):
    build_coco_official(tmp_path)
    captions = tmp_path / "annotations" / "captions_val2014.json"
    out = tmp_path / "out"
    argv = ["coco", "--karpathy-json", captions, "--image-root", tmp_path / "coco", "--out", out]
    try:
        shards_main([str(a) for a in argv])
    except SystemExit as error:
        exit_code = error.code
    else:
        exit_code = 0
    err = "".join(capsys.readouterr().err.splitlines())
    assert exit_code == 1
    assert str(captions) in err
    assert not out.exists() or split_dirs(out) == []


def test_missing_vqa_train_annotations_is_a_clear_error(tmp_path, capsys):
    build_vqa(tmp_path)
    missing = tmp_path / "vqa" / "v2_mscoco_train2014_annotations.json"
    missing.unlink()
    with pytest.raises(SystemExit) as exited:
        shards_main(
            ["vqa", "--root", str(tmp_path / "vqa"), "--splits", "train2014", "--out", str(tmp_path / "o")]
        )
    assert exited.value.code == 1
    captured = capsys.readouterr()
    err = "".join(captured.err.splitlines())  # rich may wrap at the console width
    assert str(missing) in err
    assert "not found" in err
    assert err.startswith("vlp-shards vqa: ")
    assert captured.out == ""
    assert not (tmp_path / "o" / "train2014").exists()


def test_error_is_one_line_in_an_80_column_log(tmp_path, capsys, monkeypatch):
    build_vqa(tmp_path)
    missing = tmp_path / "vqa" / "v2_mscoco_train2014_annotations.json"
    missing.unlink()
    monkeypatch.setattr(common.console, "_width", 80)  # what rich uses when stderr is not a terminal
    with pytest.raises(SystemExit):
        shards_main(
            ["vqa", "--root", str(tmp_path / "vqa"), "--splits", "train2014", "--out", str(tmp_path / "o")]
        )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1
    assert str(missing) in lines[0]

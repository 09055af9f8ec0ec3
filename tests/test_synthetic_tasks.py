"""vlp-synth's VQA v2 and NLVR2 output: the official layouts, sound ids, noisy but truthful annotations."""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlp.data.synthetic import COLOURS, NUMBER_WORDS, SHAPES, SceneObject, main, sample_scene
from vlp.data.synthetic_tasks import (
    STATEMENT_TEMPLATES,
    generate_nlvr2_benchmark,
    generate_vqa_benchmark,
    nlvr2_sets,
    nlvr2_template,
    relation_holds,
    vqa_image,
)

SEED = 5
SIZES = {"train": 12, "val": 6, "test": 6}
VQA_QUESTION_FILES = {
    "train2014": "v2_OpenEnded_mscoco_train2014_questions.json",
    "val2014": "v2_OpenEnded_mscoco_val2014_questions.json",
    "test-dev2015": "v2_OpenEnded_mscoco_test-dev2015_questions.json",
}
VQA_ANNOTATION_FILES = {
    "train2014": "v2_mscoco_train2014_annotations.json",
    "val2014": "v2_mscoco_val2014_annotations.json",
}
IMAGE_SUBTYPE = {"train2014": "train2014", "val2014": "val2014", "test-dev2015": "test2015"}
FAMILY_OF_TYPE = {
    "what color is the": "colour",
    "how many": "count",
    "is there a": "existence",
    "what shape is the": "shape",
    "is the": "spatial",
    "what shape is": "spatial",
}
NLVR2_FIELDS = {
    "identifier",
    "sentence",
    "label",
    "left_url",
    "right_url",
    "synset",
    "query",
    "writer",
    "validation",
    "extra_validations",
}
NLVR2_ID = re.compile(r"^(train|dev|test1)-(\d+)-([0-3])-([01])$")
DIGITS = {word: str(n) for n, word in enumerate(NUMBER_WORDS)} | {"none": "0", "five": "5", "six": "6"}


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def normalise(answer: str) -> str:
    """Roughly the VQA evaluation's normalisation: lower case, no punctuation or articles, digits."""
    words = answer.lower().translate(str.maketrans("", "", string.punctuation)).split()
    return " ".join(DIGITS.get(w, w) for w in words if w not in {"a", "an", "the"})


@pytest.fixture(scope="module")
def vqa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vqa")
    generate_vqa_benchmark(out, SIZES["train"], SIZES["val"], SIZES["test"], image_size=64, seed=SEED)
    return out


@pytest.fixture(scope="module")
def nlvr2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nlvr2")
    generate_nlvr2_benchmark(out, SIZES["train"], SIZES["val"], SIZES["test"], image_size=64, seed=SEED)
    return out


def load_vqa(root: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    questions = {sub: json.loads((root / name).read_text()) for sub, name in VQA_QUESTION_FILES.items()}
    annotations = {sub: json.loads((root / name).read_text()) for sub, name in VQA_ANNOTATION_FILES.items()}
    return questions, annotations


def all_annotations(root: Path) -> list[dict]:
    return [a for payload in load_vqa(root)[1].values() for a in payload["annotations"]]


# ---------------------------------------------------------------------------------------------- VQA


def test_vqa_writes_exactly_the_official_files_and_fields(vqa):
    expected = set(VQA_QUESTION_FILES.values()) | set(VQA_ANNOTATION_FILES.values())
    assert {p.name for p in vqa.iterdir() if p.is_file()} == expected
    assert {p.name for p in vqa.iterdir() if p.is_dir()} == {"train2014", "val2014", "test2015"}
    questions, annotations = load_vqa(vqa)
    for subtype, payload in questions.items():
        assert set(payload) == {"info", "task_type", "data_type", "license", "data_subtype", "questions"}
        assert (payload["task_type"], payload["data_type"]) == ("Open-Ended", "mscoco")
        assert payload["data_subtype"] == subtype
        for question in payload["questions"]:
            assert set(question) == {"image_id", "question", "question_id"}
            assert isinstance(question["image_id"], int) and isinstance(question["question_id"], int)
    for subtype, payload in annotations.items():
        assert {"info", "license", "data_subtype", "annotations"} <= set(payload)
        assert payload["data_subtype"] == subtype
        for annotation in payload["annotations"]:
            assert set(annotation) == {
                "question_id",
                "image_id",
                "question_type",
                "answer_type",
                "multiple_choice_answer",
                "answers",
            }


def test_vqa_images_live_where_the_official_names_say(vqa):
    questions, _ = load_vqa(vqa)
    for subtype, payload in questions.items():
        folder = IMAGE_SUBTYPE[subtype]
        image_ids = {q["image_id"] for q in payload["questions"]}
        assert len(image_ids) == SIZES[{"train2014": "train", "val2014": "val"}.get(subtype, "test")]
        expected = {f"COCO_{folder}_{image_id:012d}.jpg" for image_id in image_ids}
        assert {p.name for p in (vqa / folder).iterdir()} == expected
        for name in expected:
            with Image.open(vqa / folder / name) as picture:
                assert picture.format == "JPEG" and picture.size == (64, 64)


def test_vqa_ids_are_unique_and_every_annotation_has_its_question(vqa):
    questions, annotations = load_vqa(vqa)
    image_ids = [q["image_id"] for payload in questions.values() for q in payload["questions"]]
    per_split = [{q["image_id"] for q in payload["questions"]} for payload in questions.values()]
    assert sum(len(ids) for ids in per_split) == len(set(image_ids)), "an image id is reused across splits"
    question_ids = [q["question_id"] for payload in questions.values() for q in payload["questions"]]
    assert len(question_ids) == len(set(question_ids))
    for payload in questions.values():
        for question in payload["questions"]:
            assert question["question_id"] // 1000 == question["image_id"]
    for subtype, payload in annotations.items():
        asked = {q["question_id"]: q["image_id"] for q in questions[subtype]["questions"]}
        answered = {a["question_id"]: a["image_id"] for a in payload["annotations"]}
        assert answered == asked
    assert set(Counter(image_ids).values()) <= {4, 5, 6}


def test_vqa_has_ten_disagreeing_answers_from_every_family(vqa):
    annotations = all_annotations(vqa)
    assert {FAMILY_OF_TYPE[a["question_type"]] for a in annotations} == {
        "colour",
        "count",
        "existence",
        "shape",
        "spatial",
    }
    unanimous = 0
    for annotation in annotations:
        answers = annotation["answers"]
        assert [a["answer_id"] for a in answers] == list(range(1, 11))
        assert all(set(a) == {"answer", "answer_confidence", "answer_id"} for a in answers)
        assert {a["answer_confidence"] for a in answers} <= {"yes", "maybe", "no"}
        assert annotation["answer_type"] in {"yes/no", "number", "other"}
        counts = Counter(a["answer"].strip().lower() for a in answers)
        assert counts[annotation["multiple_choice_answer"]] == max(counts.values())
        unanimous += len({a["answer"] for a in answers}) == 1
    assert 0 < unanimous < len(annotations) / 2, "answers should sometimes, not mostly, agree exactly"
    forms = {a["answer"] for annotation in annotations for a in annotation["answers"]}
    assert forms & {"Yes", "No", "yes.", "no."}, "no surface variation in yes/no answers"
    confidences = Counter(a["answer_confidence"] for annotation in annotations for a in annotation["answers"])
    assert confidences["yes"] > confidences["maybe"] > 0


def find(
    objects: list[SceneObject], colour: str | None = None, shape: str | None = None
) -> list[SceneObject]:
    return [o for o in objects if colour in (None, o.colour) and shape in (None, o.shape)]


def derive_answer(question: str, objects: list[SceneObject]) -> str:
    """An independent reading of each question template against the scene."""
    colours, shapes = "|".join(COLOURS), "|".join(SHAPES)
    if m := re.fullmatch(r"How many (shapes|objects) are (there|in the picture)\?", question):
        return str(len(objects))
    if m := re.fullmatch(rf"How many ({colours}) objects are there\?", question):
        return str(len(find(objects, colour=m[1])))
    if m := re.fullmatch(rf"How many ({shapes})s are (there|in the image)\?", question):
        return str(len(find(objects, shape=m[1])))
    if m := re.fullmatch(rf"Is there a ({colours}) ({shapes})\?", question):
        return "yes" if find(objects, m[1], m[2]) else "no"
    if m := re.fullmatch(rf"What color is the (?:(small|large) )?({shapes})\?", question):
        (target,) = [o for o in find(objects, shape=m[2]) if m[1] in (None, o.size)]
        return target.colour
    if m := re.fullmatch(rf"What shape is the ({colours}) (object|thing)\?", question):
        (target,) = find(objects, colour=m[1])
        return target.shape
    relation = r"(to the left of|to the right of|above|below)"
    names = {"to the left of": "left", "to the right of": "right", "above": "above", "below": "below"}
    if m := re.fullmatch(rf"Is the ({colours}) ({shapes}) {relation} the ({colours}) ({shapes})\?", question):
        (a,), (b,) = find(objects, m[1], m[2]), find(objects, m[4], m[5])
        return "yes" if relation_holds(a, b, names[m[3]]) else "no"
    if m := re.fullmatch(rf"What shape is {relation} the ({colours}) ({shapes})\?", question):
        (reference,) = find(objects, m[2], m[3])
        (there,) = [o for o in objects if o != reference and relation_holds(o, reference, names[m[1]])]
        return there.shape
    raise AssertionError(f"unknown question template: {question}")


def test_vqa_answers_are_true_of_the_scene(vqa):
    questions, annotations = load_vqa(vqa)
    answers = {a["question_id"]: a for payload in annotations.values() for a in payload["annotations"]}
    images = {image.image_id: image for image in (vqa_image(SEED, i) for i in range(sum(SIZES.values())))}
    checked = majority_right = 0
    yes_no: dict[str, Counter[str]] = defaultdict(Counter)
    for payload in questions.values():
        for question in payload["questions"]:
            image = images[question["image_id"]]
            truth = derive_answer(question["question"], image.objects)
            generated = image.questions[question["question_id"] % 1000]
            assert (generated.text, generated.answer) == (question["question"], truth)
            annotation = answers.get(question["question_id"])
            if annotation is None:  # test-dev: no answers to check
                continue
            plurality = Counter(normalise(a["answer"]) for a in annotation["answers"]).most_common(1)[0][0]
            checked += 1
            majority_right += plurality == truth
            if annotation["answer_type"] == "yes/no":
                yes_no[annotation["question_type"]][truth] += 1
    assert checked > 50
    assert majority_right / checked >= 0.85, f"truth is the plurality for {majority_right}/{checked}"
    assert set(yes_no) == {"is there a", "is the"}
    for question_type, truths in yes_no.items():  # balanced, so that always answering "yes" is no use
        assert 0.25 <= truths["yes"] / truths.total() <= 0.75, (question_type, truths)


def test_vqa_is_deterministic_in_the_seed(tmp_path):
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        generate_vqa_benchmark(tmp_path / name, 3, 2, 2, image_size=32, seed=seed)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


# -------------------------------------------------------------------------------------------- NLVR2


def load_rows(root: Path) -> dict[str, list[dict]]:
    rows = {}
    for split in ("train", "dev", "test1"):
        lines = (root / "data" / f"{split}.json").read_text().splitlines()
        rows[split] = [json.loads(line) for line in lines]
    return rows


def image_paths(root: Path, split: str, row: dict) -> tuple[Path, Path]:
    stem = row["identifier"].rsplit("-", 1)[0]
    folder = root / "images" / split / (str(row["directory"]) if split == "train" else "")
    return folder / f"{stem}-img0.png", folder / f"{stem}-img1.png"


def test_nlvr2_rows_have_the_official_fields_and_identifiers(nlvr2):
    assert sorted(p.name for p in (nlvr2 / "data").iterdir()) == ["dev.json", "test1.json", "train.json"]
    labels = Counter()
    for split, rows in load_rows(nlvr2).items():
        assert rows, split
        for row in rows:
            expected = NLVR2_FIELDS | ({"directory"} if split == "train" else set())
            assert set(row) == expected
            m = NLVR2_ID.match(row["identifier"])
            assert m and m[1] == split, row["identifier"]
            assert row["label"] in {"True", "False"}
            labels[row["label"]] += 1
            assert set(row["validation"].values()) <= {"True", "False"} and len(row["validation"]) == 1
            assert len(row["extra_validations"]) == (0 if split == "train" else 4)
            assert isinstance(row["writer"], str)
            if split == "train":
                assert isinstance(row["directory"], int)
        assert len({r["identifier"] for r in rows}) == len(rows)
    assert 0.3 <= labels["True"] / sum(labels.values()) <= 0.7, labels


def test_nlvr2_images_exist_at_the_official_paths(nlvr2):
    formats = Counter()
    for split, rows in load_rows(nlvr2).items():
        listed = set()
        for row in rows:
            left, right = image_paths(nlvr2, split, row)
            assert left.read_bytes() != right.read_bytes()
            for path in (left, right):
                listed.add(path)
                with Image.open(path) as picture:  # opened by content, whatever the extension says
                    formats[picture.format] += 1
                    assert picture.size == (64, 64)
        assert set((nlvr2 / "images" / split).rglob("*.png")) == listed
        if split == "train":
            assert all(p.parent.parent == nlvr2 / "images" / "train" for p in listed)
    assert formats["JPEG"] > 0 and formats["PNG"] > 4 * formats["JPEG"], formats


def test_nlvr2_sentences_are_judged_against_every_pair_of_their_set(nlvr2):
    for rows in load_rows(nlvr2).values():
        sentences: dict[tuple[str, str], set[str]] = defaultdict(set)
        pairs: dict[tuple[str, str], set[str]] = defaultdict(set)
        images: dict[tuple[str, str], set[tuple]] = defaultdict(set)
        for row in rows:
            _, set_id, pair, sentence = row["identifier"].split("-")
            sentences[(set_id, sentence)].add(row["sentence"])
            pairs[(set_id, sentence)].add(pair)
            images[(set_id, pair)].add((row["left_url"], row["right_url"], row.get("directory")))
        assert all(len(texts) == 1 for texts in sentences.values())
        by_set = defaultdict(list)
        for (set_id, _), pair_ids in pairs.items():
            by_set[set_id].append(pair_ids)
        assert all(all(p == groups[0] for p in groups) for groups in by_set.values())
        assert all(len(found) == 1 for found in images.values()), "a pair's images differ between rows"
        assert max(len(p) for p in pairs.values()) >= 2, "no sentence is shared by several pairs"


def derive_label(sentence: str, left: list[SceneObject], right: list[SceneObject]) -> bool | None:
    """An independent reading of some statement templates; None for the others."""
    side = {"left": left, "right": right}
    if m := re.fullmatch(r"The (left|right) image contains exactly (one|two) (\w+?)s?\.", sentence):
        return len(find(side[m[1]], shape=m[3])) == int(DIGITS[m[2]])
    if m := re.fullmatch(
        r"There are more objects in the (left|right) image than in the (left|right) image\.", sentence
    ):
        return len(side[m[1]]) > len(side[m[2]])
    if m := re.fullmatch(r"There are exactly (\w+) objects in total\.", sentence):
        return len(left) + len(right) == int(DIGITS[m[1]])
    if re.fullmatch(r"Both images contain the same number of objects\.", sentence):
        return len(left) == len(right)
    if m := re.fullmatch(r"Neither image contains a (\w+) (\w+)\.", sentence):
        shape = None if m[2] == "object" else m[2]
        return not find(left, m[1], shape) and not find(right, m[1], shape)
    return None


def test_nlvr2_labels_are_true_of_the_scenes(nlvr2):
    checked = 0
    for split, rows in load_rows(nlvr2).items():
        sets = {
            s.set_id: s
            for s in nlvr2_sets(SEED, split, SIZES[{"dev": "val", "test1": "test"}.get(split, split)])
        }
        for row in rows:
            _, set_id, pair, _ = row["identifier"].split("-")
            scene_pair = sets[int(set_id)].pairs[int(pair)]
            label = derive_label(row["sentence"], scene_pair.left, scene_pair.right)
            if label is not None:
                assert row["label"] == str(label), row
                checked += 1
    assert checked >= 10


def test_nlvr2_is_deterministic_in_the_seed(tmp_path):
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        generate_nlvr2_benchmark(tmp_path / name, 3, 2, 2, image_size=32, seed=seed)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_writes_the_chosen_tasks_side_by_side(tmp_path):
    main(
        [
            "--out",
            str(tmp_path / "some"),
            "--n-train",
            "4",
            "--n-val",
            "2",
            "--n-test",
            "2",
            "--tasks",
            "vqa",
            "nlvr2",
        ]
    )
    assert not (tmp_path / "some" / "dataset_coco.json").exists()
    assert (tmp_path / "some" / "vqa" / VQA_QUESTION_FILES["test-dev2015"]).exists()
    rows = load_rows(tmp_path / "some" / "nlvr2")
    pairs = {split: {r["identifier"].rsplit("-", 1)[0] for r in rows[split]} for split in rows}
    assert {split: len(ids) for split, ids in pairs.items()} == {"train": 2, "dev": 1, "test1": 1}

    main(["--out", str(tmp_path / "all"), "--n-train", "4", "--n-val", "2", "--n-test", "2"])
    assert (tmp_path / "all" / "dataset_coco.json").exists() and (tmp_path / "all" / "images").is_dir()
    assert (tmp_path / "all" / "vqa").is_dir() and (tmp_path / "all" / "nlvr2" / "data").is_dir()


def test_each_task_draws_its_own_scenes():
    """The same --seed must not give VQA the captions' pictures (NumPy pads short seeds with zeros)."""
    same = sum(sample_scene(np.random.default_rng([0, i])) == vqa_image(0, i).objects for i in range(200))
    assert same <= 2


def test_nlvr2_template_reads_back_the_template_of_every_statement():
    rng = np.random.default_rng(SEED)
    for template in STATEMENT_TEMPLATES:
        name = template.__name__.removeprefix("_").removesuffix("_statement")
        for _ in range(60):
            text = template(rng).text
            assert nlvr2_template(text) == name, text
            assert nlvr2_template(text.lower()) == name  # as a lower-casing tokenizer gives it back
    with pytest.raises(ValueError, match="exactly one synthetic NLVR2 template"):
        nlvr2_template("There are two dogs.")

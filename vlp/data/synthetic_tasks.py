"""vlp-synth for VQA v2 and NLVR2: the shape scenes of ``vlp.data.synthetic`` in those datasets' layouts.

Why: the VQA and NLVR2 converters, scorers and heads should run end to end on data a small model can
learn, in exactly the files the real datasets ship, so that a format slip shows up in the tests and the
demo instead of on the real data. The scenes come from the caption benchmark's sampler and renderer;
every answer and label is computed from the scene, so it is really true of the picture.

Real annotations are noisy, and code that assumes ten identical answers or a clean label would pass on
clean synthetic data and fail on the real thing. So the ten VQA answers disagree the way people do
(surface forms such as ``"2"``/``"two"``/``"Yes"``, a minority of wrong or near answers, varying
confidence), and NLVR2 rows carry validator judgements that sometimes disagree with the label.

Everything is a pure function of the seed and the image (VQA) or set (NLVR2) index.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlp.data.synthetic import COLOURS, NUMBER_WORDS, SHAPES, SceneObject, render_scene, sample_scene

# Seeds. The captions draw image i from [seed, i]. NumPy's SeedSequence pads short entropy with zero
# words, so [seed, 1] and [seed, 1, 0] are the same stream: a task tag must come after the index and be
# non-zero, never before it. Content (scenes, questions, answers, statements) and rendering (pixels, and
# for NLVR2 the row order and validations) use separate streams, so a scene can be re-derived cheaply.
VQA_TAG = 0x56514132  # "VQA2"
NLVR2_TAG = 0x4E4C5632  # "NLV2"
_RENDER = 1  # last entropy word of a rendering stream

Scene = list[SceneObject]


def _stream(seed: int, *words: int) -> np.random.Generator:
    return np.random.default_rng([seed, *words])


def _pick(values: list[Any] | tuple[Any, ...], rng: np.random.Generator) -> Any:
    """One element, keeping its Python type (``rng.choice`` would turn strings into numpy strings)."""
    return values[int(rng.integers(len(values)))]


def _spelled(n: int) -> str:
    return (*NUMBER_WORDS, "five", "six", "seven", "eight")[n]


def _name(obj: SceneObject) -> str:
    return f"{obj.colour} {obj.shape}"


def _count(objects: Scene, colour: str | None = None, shape: str | None = None) -> int:
    return sum(
        (colour is None or o.colour == colour) and (shape is None or o.shape == shape) for o in objects
    )


def _uniquely_named(objects: Scene) -> Scene:
    """Objects that 'the <colour> <shape>' refers to without ambiguity."""
    names = Counter(_name(o) for o in objects)
    return [o for o in objects if names[_name(o)] == 1]


# Spatial relations, always judged on one axis: columns for left/right, rows for above/below.
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def relation_holds(a: SceneObject, b: SceneObject, relation: str) -> bool:
    """Whether ``a`` is <relation> ``b`` (strictly, in grid cells)."""
    return {
        "left": a.col < b.col,
        "right": a.col > b.col,
        "above": a.row < b.row,
        "below": a.row > b.row,
    }[relation]


def _true_relation(a: SceneObject, b: SceneObject) -> str:
    """The relation of ``a`` to ``b`` on the axis where they differ (columns first)."""
    if a.col != b.col:
        return "left" if a.col < b.col else "right"
    return "above" if a.row < b.row else "below"


# --------------------------------------------------------------------------------------------- VQA v2

VQA_INFO = {
    "description": "vlp-synth: synthetic shape scenes written in the format of v2.0 of the VQA dataset.",
    "url": "http://visualqa.org",
    "version": "2.0",
    "year": 2017,
    "contributor": "vlp-synth",
    "date_created": "2017-04-26 17:07:13",  # fixed, so that the output is deterministic
}
VQA_LICENSE = {
    "url": "http://creativecommons.org/licenses/by/4.0/",
    "name": "Creative Commons Attribution 4.0 International License",
}


@dataclass(frozen=True)
class VqaSplit:
    subtype: str  # data_subtype, and the middle of the json file names
    image_subtype: str  # image folder and file-name part: test-dev2015 images live in test2015
    annotated: bool  # test-dev ships questions only


VQA_SPLITS = (
    VqaSplit("train2014", "train2014", True),
    VqaSplit("val2014", "val2014", True),
    VqaSplit("test-dev2015", "test2015", False),
)
# Image ids are spread out (index * stride + a random offset) because real COCO ids are sparse and a
# converter must not assume that ids are positions.
_IMAGE_ID_STRIDE = 3


@dataclass(frozen=True)
class Question:
    text: str
    answer: str  # the true answer, canonical: lower case, numbers as digits
    question_type: str  # the first words, in the official style
    answer_type: str  # "yes/no" | "number" | "other"


@dataclass(frozen=True)
class VqaImage:
    image_id: int
    objects: Scene
    questions: list[Question]
    answers: list[list[dict[str, Any]]]  # ten annotator answers per question


def _colour_question(objects: Scene, rng: np.random.Generator) -> Question | None:
    """'What color is the circle?': asked of an object that its shape (or size and shape) singles out."""
    shapes = Counter(o.shape for o in objects)
    sized = Counter((o.size, o.shape) for o in objects)
    candidates = [
        (o.shape if shapes[o.shape] == 1 else f"{o.size} {o.shape}", o)
        for o in objects
        if shapes[o.shape] == 1 or sized[(o.size, o.shape)] == 1
    ]
    if not candidates:
        return None
    phrase, target = _pick(candidates, rng)
    return Question(f"What color is the {phrase}?", target.colour, "what color is the", "other")


def _attribute_value(objects: Scene, attribute: str, values: list[str], rng: np.random.Generator) -> str:
    """Mostly a value present in the scene, sometimes any value, so that some counts are zero."""
    if rng.random() < 0.75:
        return getattr(_pick(objects, rng), attribute)
    return _pick(values, rng)


def _count_question(objects: Scene, rng: np.random.Generator) -> Question:
    kind = int(rng.integers(3))
    if kind == 0:
        text = _pick(
            [
                "How many shapes are there?",
                "How many objects are there?",
                "How many shapes are in the picture?",
            ],
            rng,
        )
        n = len(objects)
    elif kind == 1:
        colour = _attribute_value(objects, "colour", list(COLOURS), rng)
        text, n = f"How many {colour} objects are there?", _count(objects, colour=colour)
    else:
        shape = _attribute_value(objects, "shape", list(SHAPES), rng)
        text = _pick([f"How many {shape}s are there?", f"How many {shape}s are in the image?"], rng)
        n = _count(objects, shape=shape)
    return Question(text, str(n), "how many", "number")


def _existence_question(objects: Scene, rng: np.random.Generator) -> Question:
    """'Is there a blue square?', yes half of the time; a 'no' is usually a near miss (one attribute off)."""
    present = sorted({(o.colour, o.shape) for o in objects})  # sorted: set order varies between processes
    if rng.random() < 0.5:
        (colour, shape), answer = _pick(present, rng), "yes"
    else:
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
        near = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
        (colour, shape), answer = _pick(near if near and rng.random() < 0.7 else absent, rng), "no"
    return Question(f"Is there a {colour} {shape}?", answer, "is there a", "yes/no")


def _shape_question(objects: Scene, rng: np.random.Generator) -> Question | None:
    """'What shape is the green object?': asked of an object whose colour is unique in the scene."""
    colours = Counter(o.colour for o in objects)
    candidates = [o for o in objects if colours[o.colour] == 1]
    if not candidates:
        return None
    target = _pick(candidates, rng)
    noun = _pick(["object", "thing"], rng)
    return Question(f"What shape is the {target.colour} {noun}?", target.shape, "what shape is the", "other")


def _neighbour_question(objects: Scene, named: Scene, rng: np.random.Generator) -> Question | None:
    """'What shape is to the left of the red circle?', only when exactly one object is there."""
    for i in rng.permutation(len(named)):
        reference = named[int(i)]
        for k in rng.permutation(len(RELATIONS)):
            relation = list(RELATIONS)[int(k)]
            there = [o for o in objects if o is not reference and relation_holds(o, reference, relation)]
            if len(there) == 1:
                text = f"What shape is {RELATIONS[relation]} the {_name(reference)}?"
                return Question(text, there[0].shape, "what shape is", "other")
    return None


def _spatial_question(objects: Scene, rng: np.random.Generator) -> Question | None:
    """'Is the red circle to the left of the blue square?' (yes half of the time) or a neighbour question."""
    named = _uniquely_named(objects)
    if len(objects) < 2 or not named:
        return None
    if rng.random() < 0.4 or len(named) < 2:
        return _neighbour_question(objects, named, rng)
    i, j = rng.choice(len(named), size=2, replace=False)
    a, b = named[int(i)], named[int(j)]
    truth = _true_relation(a, b)
    asked = truth if rng.random() < 0.5 else _OPPOSITE[truth]
    text = f"Is the {_name(a)} {RELATIONS[asked]} the {_name(b)}?"
    return Question(text, "yes" if asked == truth else "no", "is the", "yes/no")


QUESTION_FAMILIES: dict[str, Callable[[Scene, np.random.Generator], Question | None]] = {
    "colour": _colour_question,
    "count": _count_question,
    "existence": _existence_question,
    "shape": _shape_question,
    "spatial": _spatial_question,
}


def make_questions(objects: Scene, rng: np.random.Generator) -> list[Question]:
    """4-6 distinct questions; every family is tried once before any is repeated."""
    families = list(QUESTION_FAMILIES.values())
    wanted = int(rng.integers(4, 7))
    order = [*rng.permutation(len(families)), *rng.integers(0, len(families), size=4 * wanted)]
    questions: list[Question] = []
    for k in order:
        question = families[int(k)](objects, rng)
        if question is not None and question.text not in {q.text for q in questions}:
            questions.append(question)
        if len(questions) == wanted:
            break
    return questions


# How many of the ten annotators get a question wrong. With <= 4 wrong the truth keeps a majority; the
# few questions with 5-6 wrong model the real data's genuinely contested ones.
_N_WRONG_P = (0.38, 0.24, 0.14, 0.10, 0.07, 0.04, 0.03)
_CONFIDENCES = ("yes", "maybe", "no")
_SLOPPINESS = (0.0, 0.1, 0.25)  # per question: share of answers typed in a non-canonical form
_RIGHT_CONFIDENCE_P = (0.82, 0.14, 0.04)
_WRONG_CONFIDENCE_P = (0.35, 0.45, 0.20)
# Plausible mistakes: neighbouring hues and outlines, including words outside the scene vocabulary.
_NEAR_COLOURS = {
    "red": ("purple", "orange"),
    "green": ("yellow", "blue"),
    "blue": ("purple", "green"),
    "yellow": ("white", "orange"),
    "purple": ("blue", "red"),
    "white": ("yellow", "gray"),
}
_NEAR_SHAPES = {
    "circle": ("oval", "square"),
    "square": ("diamond", "rectangle"),
    "triangle": ("diamond", "pyramid"),
    "diamond": ("square", "triangle"),
}


def _wrong_answers(question: Question) -> tuple[str, ...]:
    if question.answer_type == "yes/no":
        return ("no",) if question.answer == "yes" else ("yes",)
    if question.answer_type == "number":
        n = int(question.answer)
        return tuple(str(m) for m in (n - 1, n + 1) if m >= 0)
    return _NEAR_COLOURS.get(question.answer) or _NEAR_SHAPES[question.answer]


def _categorical(probabilities: tuple[float, ...], u: float) -> int:
    """Index drawn with the given probabilities from a uniform ``u`` (cheaper than ``rng.choice(p=...)``,
    which dominated the generation time when called per answer)."""
    return min(bisect.bisect(list(itertools.accumulate(probabilities)), u), len(probabilities) - 1)


def _surface_form(answer: str, answer_type: str, sloppiness: float, u: float, v: float) -> str:
    """How one annotator happens to type ``answer`` (``u``, ``v`` uniform): the canonical form unless
    ``u < sloppiness``, else a variant that the VQA normalisation maps back to ``answer``."""
    if answer_type == "number":  # digits are what people mostly type; a spelled-out majority is rare
        if u >= sloppiness / 2:
            return answer
        return "none" if answer == "0" and v < 0.5 else _spelled(int(answer))
    if u >= sloppiness:
        return answer
    variants = [answer.capitalize(), f"{answer}."] + ([f"the {answer}"] if answer_type == "other" else [])
    return variants[int(v * len(variants))]


def make_answers(question: Question, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Ten answers in random order: a seed-dependent number are wrong, surface forms and confidence vary.

    How often people deviate from the canonical spelling varies per question (some questions get ten
    identical answers, which the official metric treats specially), as does the number of wrong ones.
    """
    n_wrong = _categorical(_N_WRONG_P, rng.random())
    sloppiness = _SLOPPINESS[int(rng.integers(len(_SLOPPINESS)))]
    wrong_pool = _wrong_answers(question)
    uniforms = rng.random((10, 4)).tolist()
    answers = []
    for k, (u_value, u_confidence, u_form, v_form) in enumerate(uniforms):
        wrong = k < n_wrong
        value = wrong_pool[int(u_value * len(wrong_pool))] if wrong else question.answer
        confidence = _CONFIDENCES[
            _categorical(_WRONG_CONFIDENCE_P if wrong else _RIGHT_CONFIDENCE_P, u_confidence)
        ]
        answers.append((_surface_form(value, question.answer_type, sloppiness, u_form, v_form), confidence))
    order = rng.permutation(10).tolist()
    return [
        {"answer": answers[k][0], "answer_confidence": answers[k][1], "answer_id": i + 1}
        for i, k in enumerate(order)
    ]


def multiple_choice_answer(answers: list[dict[str, Any]]) -> str:
    """The most common answer after light lower-casing (ties: the first seen), as the real field is."""
    return Counter(a["answer"].strip().lower() for a in answers).most_common(1)[0][0]


def vqa_image(seed: int, index: int) -> VqaImage:
    """Image ``index`` (counted over train, val, test-dev in that order): scene, questions, answers."""
    rng = _stream(seed, index, VQA_TAG)
    image_id = _IMAGE_ID_STRIDE * index + 1 + int(rng.integers(_IMAGE_ID_STRIDE))
    objects = sample_scene(rng)
    questions = make_questions(objects, rng)
    answers = [make_answers(q, rng) for q in questions]
    return VqaImage(image_id, objects, questions, answers)


def _vqa_records(image: VqaImage) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Question and annotation rows; question ids are image_id * 1000 + k, as in VQA."""
    questions, annotations = [], []
    for k, (question, answers) in enumerate(zip(image.questions, image.answers, strict=True)):
        question_id = image.image_id * 1000 + k
        questions.append({"image_id": image.image_id, "question": question.text, "question_id": question_id})
        annotations.append(
            {
                "question_id": question_id,
                "image_id": image.image_id,
                "question_type": question.question_type,
                "answer_type": question.answer_type,
                "multiple_choice_answer": multiple_choice_answer(answers),
                "answers": answers,
            }
        )
    return questions, annotations


def _write_json(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload))
    return path


def _write_vqa_split(
    out: Path, split: VqaSplit, indices: range, image_size: int, seed: int
) -> dict[str, Path]:
    image_dir = out / split.image_subtype
    image_dir.mkdir(parents=True, exist_ok=True)
    questions: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in indices:
        image = vqa_image(seed, index)
        image_questions, image_annotations = _vqa_records(image)
        questions += image_questions
        annotations += image_annotations
        picture = render_scene(image.objects, image_size, _stream(seed, index, VQA_TAG, _RENDER))
        picture.save(image_dir / f"COCO_{split.image_subtype}_{image.image_id:012d}.jpg", quality=92)
    header = {"info": VQA_INFO, "license": VQA_LICENSE, "data_subtype": split.subtype}
    paths = {f"{split.image_subtype}_images": image_dir}
    paths[f"{split.subtype}_questions"] = _write_json(
        out / f"v2_OpenEnded_mscoco_{split.subtype}_questions.json",
        {**header, "task_type": "Open-Ended", "data_type": "mscoco", "questions": questions},
    )
    if split.annotated:
        paths[f"{split.subtype}_annotations"] = _write_json(
            out / f"v2_mscoco_{split.subtype}_annotations.json",
            {**header, "data_type": "mscoco", "annotations": annotations},
        )
    return paths


def generate_vqa_benchmark(
    out: Path, n_train: int, n_val: int, n_test: int, image_size: int, seed: int
) -> dict[str, Path]:
    """Write the VQA v2 layout under ``out``: question/annotation jsons and ``<subtype>/COCO_*.jpg``.

    ``n_test`` images form test-dev2015 (questions only, images in ``test2015/``). Returns the paths by
    name: ``train2014_questions``, ``train2014_annotations``, ``val2014_...``, ``test-dev2015_questions``
    and the image folders ``train2014_images``, ``val2014_images``, ``test2015_images``.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    start = 0
    for split, n in zip(VQA_SPLITS, (n_train, n_val, n_test), strict=True):
        paths.update(_write_vqa_split(out, split, range(start, start + n), image_size, seed))
        start += n
    return paths


# ---------------------------------------------------------------------------------------------- NLVR2

NLVR2_SPLITS = ("train", "dev", "test1")
_SIDES = ("left", "right")
_MAX_PAIRS_PER_SET = 4  # NLVR2: pair ids 0-3, sentence ids 0-1
_JPEG_SHARE = 0.1  # real NLVR2 has JPEG bytes in some files named .png
_N_WORKERS = 170  # anonymised writer/validator ids
_TRAIN_DIRECTORIES = 100
_SET_ID_STRIDE = 2  # sparse set ids, as in the real files
_MAX_TRIES = 100


@dataclass(frozen=True)
class Statement:
    text: str
    holds: Callable[[Scene, Scene], bool]  # (left, right) -> truth


@dataclass(frozen=True)
class Nlvr2Pair:
    left: Scene
    right: Scene
    directory: int  # train image sub-folder
    left_jpeg: bool
    right_jpeg: bool


@dataclass(frozen=True)
class Nlvr2Set:
    set_id: int
    synset: str
    query: str
    writers: list[str]  # one per statement
    statements: list[Statement]
    pairs: list[Nlvr2Pair]


def _sides(rng: np.random.Generator) -> tuple[int, str, str]:
    """(index of the side in a (left, right) pair, its name, the other side's name)."""
    k = int(rng.integers(2))
    return k, _SIDES[k], _SIDES[1 - k]


def _colour_or_shape(rng: np.random.Generator) -> tuple[str | None, str | None, str]:
    """A colour or a shape to look for, and the noun phrase for 'contains a ...'."""
    if rng.random() < 0.5:
        colour = _pick(list(COLOURS), rng)
        return colour, None, f"{colour} {_pick(['shape', 'object'], rng)}"
    shape = _pick(SHAPES, rng)
    return None, shape, shape


def _exact_count_statement(rng: np.random.Generator) -> Statement:
    k, side, _ = _sides(rng)
    shape, n = _pick(SHAPES, rng), _pick([1, 1, 2], rng)
    noun = shape if n == 1 else f"{shape}s"
    return Statement(
        f"The {side} image contains exactly {_spelled(n)} {noun}.",
        lambda left, right: _count((left, right)[k], shape=shape) == n,
    )


def _more_statement(rng: np.random.Generator) -> Statement:
    k, side, other = _sides(rng)
    text = _pick(
        [
            f"There are more objects in the {side} image than in the {other} image.",
            f"The {side} image contains more shapes than the {other} image.",
        ],
        rng,
    )
    return Statement(text, lambda left, right: len((left, right)[k]) > len((left, right)[1 - k]))


def _both_statement(rng: np.random.Generator) -> Statement:
    colour, shape, phrase = _colour_or_shape(rng)
    text = _pick([f"Both images contain a {phrase}.", f"Each image contains at least one {phrase}."], rng)
    return Statement(
        text, lambda left, right: _count(left, colour, shape) > 0 and _count(right, colour, shape) > 0
    )


def _exactly_one_statement(rng: np.random.Generator) -> Statement:
    colour, shape, phrase = _colour_or_shape(rng)
    return Statement(
        f"Exactly one image contains a {phrase}.",
        lambda left, right: (_count(left, colour, shape) > 0) != (_count(right, colour, shape) > 0),
    )


def _neither_statement(rng: np.random.Generator) -> Statement:
    colour = _pick(list(COLOURS), rng)
    shape = _pick([None, *SHAPES], rng)
    phrase = f"{colour} {shape}" if shape else f"{colour} object"
    return Statement(
        f"Neither image contains a {phrase}.",
        lambda left, right: _count(left, colour, shape) == 0 and _count(right, colour, shape) == 0,
    )


def _total_statement(rng: np.random.Generator) -> Statement:
    n = int(rng.integers(3, 7))
    text = _pick(
        [
            f"There are exactly {_spelled(n)} objects in total.",
            f"The two images show {_spelled(n)} shapes in all.",
        ],
        rng,
    )
    return Statement(text, lambda left, right: len(left) + len(right) == n)


def _same_number_statement(rng: np.random.Generator) -> Statement:
    text = _pick(
        ["Both images contain the same number of objects.", "The two images show the same number of shapes."],
        rng,
    )
    return Statement(text, lambda left, right: len(left) == len(right))


def _side_has_statement(rng: np.random.Generator) -> Statement:
    k, side, _ = _sides(rng)
    colour, shape = _pick(list(COLOURS), rng), _pick(SHAPES, rng)
    verb = _pick(["contains", "shows"], rng)
    return Statement(
        f"The {side} image {verb} a {colour} {shape}.",
        lambda left, right: _count((left, right)[k], colour, shape) > 0,
    )


def _relation_statement(rng: np.random.Generator) -> Statement:
    """'In the left image, a red shape is above a circle.': some red object relates so to some circle."""
    k, side, _ = _sides(rng)
    colour, shape = _pick(list(COLOURS), rng), _pick(SHAPES, rng)
    relation = _pick(list(RELATIONS), rng)

    def holds(left: Scene, right: Scene) -> bool:
        scene = (left, right)[k]
        return any(
            a is not b and a.colour == colour and b.shape == shape and relation_holds(a, b, relation)
            for a in scene
            for b in scene
        )

    return Statement(f"In the {side} image, a {colour} shape is {RELATIONS[relation]} a {shape}.", holds)


STATEMENT_TEMPLATES: tuple[Callable[[np.random.Generator], Statement], ...] = (
    _exact_count_statement,
    _more_statement,
    _both_statement,
    _exactly_one_statement,
    _neither_statement,
    _total_statement,
    _same_number_statement,
    _side_has_statement,
    _relation_statement,
)


# The template that wrote a statement, read back from its text (rows keep only the sentence), for
# accuracy per kind of statement: `python scripts/nlvr2_by_template.py`. Keys are the template functions'
# names without ``_`` and ``_statement``; re.IGNORECASE because tokenizers may lower-case.
_SIDE = r"(left|right)"
NLVR2_TEMPLATE_PATTERNS = {
    "exact_count": rf"The {_SIDE} image contains exactly (one|two) \w+\.",
    "more": rf"(There are more objects in the {_SIDE} image than in the {_SIDE} image"
    rf"|The {_SIDE} image contains more shapes than the {_SIDE} image)\.",
    "both": r"(Both images contain a|Each image contains at least one) \w+( \w+)?\.",
    "exactly_one": r"Exactly one image contains a \w+( \w+)?\.",
    "neither": r"Neither image contains a \w+ \w+\.",
    "total": r"(There are exactly \w+ objects in total|The two images show \w+ shapes in all)\.",
    "same_number": r"(Both images contain the same number of objects|The two images show the same number "
    r"of shapes)\.",
    "side_has": rf"The {_SIDE} image (contains|shows) a \w+ \w+\.",
    "relation": rf"In the {_SIDE} image, a \w+ shape is [\w ]+ a \w+\.",
}


def nlvr2_template(sentence: str) -> str:
    """Name of the statement template (a key of NLVR2_TEMPLATE_PATTERNS) that wrote ``sentence``."""
    found = [
        name
        for name, pattern in NLVR2_TEMPLATE_PATTERNS.items()
        if re.fullmatch(pattern, sentence.strip(), re.IGNORECASE)
    ]
    if len(found) != 1:
        raise ValueError(f"not the sentence of exactly one synthetic NLVR2 template ({found}): {sentence!r}")
    return found[0]


def _balanced_targets(n_pairs: int, rng: np.random.Generator) -> list[bool]:
    """Half of the pairs should make a statement true, half false, as NLVR2's writers aimed for."""
    flags = [k < n_pairs // 2 for k in range(n_pairs)]
    if n_pairs % 2:
        flags[-1] = bool(rng.random() < 0.5)
    return [flags[int(k)] for k in rng.permutation(n_pairs)]


def _scene_pair(
    statements: list[Statement], targets: list[bool], rng: np.random.Generator
) -> tuple[Scene, Scene]:
    """Rejection-sample two different scenes that give each statement its target truth (or come closest)."""
    best: tuple[Scene, Scene] | None = None
    best_score = -1
    tries = 0
    while best is None or (best_score < len(statements) and tries < _MAX_TRIES):
        tries += 1
        left, right = sample_scene(rng), sample_scene(rng)
        if left == right:
            continue
        score = sum(s.holds(left, right) == t for s, t in zip(statements, targets, strict=True))
        if score > best_score:
            best, best_score = (left, right), score
    return best


def _draw_set(rng: np.random.Generator, set_index: int, pairs_left: int) -> Nlvr2Set:
    set_id = _SET_ID_STRIDE * set_index + int(rng.integers(_SET_ID_STRIDE))
    n_pairs = min(pairs_left, _pick([2, 3, 4, 4, 4], rng))
    statements: list[Statement] = []
    n_statements = 1 if rng.random() < 0.25 else 2
    while len(statements) < n_statements:
        statement = _pick(STATEMENT_TEMPLATES, rng)(rng)
        if statement.text not in {s.text for s in statements}:
            statements.append(statement)
    targets = [_balanced_targets(n_pairs, rng) for _ in statements]
    pairs = []
    for p in range(n_pairs):
        left, right = _scene_pair(statements, [t[p] for t in targets], rng)
        directory = int(rng.integers(_TRAIN_DIRECTORIES))
        jpeg = rng.random(2) < _JPEG_SHARE
        pairs.append(Nlvr2Pair(left, right, directory, bool(jpeg[0]), bool(jpeg[1])))
    theme = _pick(SHAPES, rng)
    query = f"{_pick(['some', 'many', 'coloured', 'group of'], rng)} {theme}s{int(rng.integers(1, 30))}"
    writers = [str(rng.integers(_N_WORKERS)) for _ in statements]
    return Nlvr2Set(set_id, theme, query, writers, statements, pairs)


def nlvr2_sets(seed: int, split: str, n_pairs: int) -> list[Nlvr2Set]:
    """The sets of a split, about ``n_pairs`` image pairs in all (exactly, unless n_pairs is 0)."""
    split_no = NLVR2_SPLITS.index(split)
    sets: list[Nlvr2Set] = []
    made = 0
    while made < n_pairs:
        rng = _stream(seed, len(sets), split_no, NLVR2_TAG)
        sets.append(_draw_set(rng, len(sets), n_pairs - made))
        made += len(sets[-1].pairs)
    return sets


def _image_path(images: Path, split: str, set_id: int, pair_no: int, pair: Nlvr2Pair, side: int) -> Path:
    folder = images / split / str(pair.directory) if split == "train" else images / split
    return folder / f"{split}-{set_id}-{pair_no}-img{side}.png"


def _save_pair(
    images: Path, split: str, nlvr_set: Nlvr2Set, pair_no: int, size: int, rng: np.random.Generator
) -> None:
    pair = nlvr_set.pairs[pair_no]
    for side, (objects, jpeg) in enumerate(((pair.left, pair.left_jpeg), (pair.right, pair.right_jpeg))):
        path = _image_path(images, split, nlvr_set.set_id, pair_no, pair, side)
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = render_scene(objects, size, rng)
        if jpeg:
            picture.save(path, format="JPEG", quality=90)
        else:
            picture.save(path, format="PNG", compress_level=1)


def _validations(label: str, split: str, rng: np.random.Generator) -> tuple[dict[str, str], dict[str, str]]:
    """One initial judgement (agreeing with the label) and, outside train, four extra ones that mostly do."""
    validation = {str(rng.integers(_N_WORKERS)): label}
    if split == "train":
        return validation, {}
    flipped = "False" if label == "True" else "True"
    workers = rng.choice(_N_WORKERS, size=4, replace=False)
    return validation, {str(w): label if rng.random() < 0.93 else flipped for w in workers}


def _nlvr2_rows(split: str, nlvr_set: Nlvr2Set, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Every statement judged against every pair of its set; rows of a sentence in shuffled pair order."""
    rows = []
    for s, (statement, writer) in enumerate(zip(nlvr_set.statements, nlvr_set.writers, strict=True)):
        for p in rng.permutation(len(nlvr_set.pairs)):
            pair = nlvr_set.pairs[int(p)]
            label = str(statement.holds(pair.left, pair.right))
            validation, extra = _validations(label, split, rng)
            url = f"https://vlp-synth.invalid/nlvr2/{split}/{nlvr_set.set_id}/{int(p)}"
            row = {
                "identifier": f"{split}-{nlvr_set.set_id}-{int(p)}-{s}",
                "sentence": statement.text,
                "label": label,
                "left_url": f"{url}/left.png",
                "right_url": f"{url}/right.jpg",
                "synset": nlvr_set.synset,
                "query": nlvr_set.query,
                "writer": writer,
                "validation": validation,
                "extra_validations": extra,
            }
            if split == "train":
                row["directory"] = pair.directory
            rows.append(row)
    return rows


def _write_nlvr2_split(out: Path, split: str, n_pairs: int, image_size: int, seed: int) -> Path:
    rows: list[dict[str, Any]] = []
    split_no = NLVR2_SPLITS.index(split)
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    for set_index, nlvr_set in enumerate(nlvr2_sets(seed, split, n_pairs)):
        rng = _stream(seed, set_index, split_no, NLVR2_TAG, _RENDER)
        for pair_no in range(len(nlvr_set.pairs)):
            _save_pair(out / "images", split, nlvr_set, pair_no, image_size, rng)
        rows += _nlvr2_rows(split, nlvr_set, rng)
    path = out / "data" / f"{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def generate_nlvr2_benchmark(
    out: Path, n_train: int, n_dev: int, n_test: int, image_size: int, seed: int
) -> dict[str, Path]:
    """Write the NLVR2 layout under ``out``: ``data/{train,dev,test1}.json`` and ``images/<split>/...``.

    ``n_*`` are image pairs per split. Train images live in ``images/train/<directory>/``. Returns the
    json paths by split name, plus ``images``.
    """
    paths = {
        split: _write_nlvr2_split(out, split, n, image_size, seed)
        for split, n in zip(NLVR2_SPLITS, (n_train, n_dev, n_test), strict=True)
    }
    return {**paths, "images": out / "images"}

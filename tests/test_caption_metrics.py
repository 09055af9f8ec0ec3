"""Caption metrics: pycocoevalcap's numbers, with and without Java.

The Java-free path must give pycocoevalcap's own BLEU/ROUGE-L/CIDEr-D scorers exactly the tokens that
its Java PTBTokenizer would; the tests marked ``java`` check that against the jar when Java is present.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from vlp.metrics import caption
from vlp.metrics.caption import (
    caption_scores,
    coco_references,
    load_caption_results,
    ptb_tokenize_python,
    ptb_tokens,
    tokenize,
)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java for pycocoevalcap's jars")

# 5 images, 2-5 references each: punctuation, capitals, contractions, brackets, quotes, numbers.
REFERENCES: dict[int, list[str]] = {
    391895: [
        "A man riding a wave on top of a surfboard.",
        "A surfer rides a BIG wave!",
        "Man on a surfboard in the ocean.",
        "A person surfing (on a wave) in the sea.",
        "There's a man surfing.",
    ],
    522418: ["Two dogs play in the snow.", "A couple of dogs playing with a frisbee in the snow"],
    184613: [
        "A kitchen with a stove, a sink and a fridge.",
        "The kitchen isn't very clean; it's messy.",
        "A kitchen that has a stove-top oven.",
    ],
    318219: [
        "A plate of food with broccoli.",
        "Broccoli, rice & chicken on a white plate.",
        "A dish of broccoli and rice.",
        "Someone's dinner: rice and broccoli",
    ],
    554625: [
        "A stop sign on Main St. in the U.S.",
        'A red "STOP" sign at an intersection',
        "Stop sign; street",
    ],
}
RESULTS = [
    {"image_id": 391895, "caption": "A man riding a wave on a surfboard."},
    {"image_id": 522418, "caption": "two dogs playing in the snow"},
    {"image_id": 184613, "caption": "A kitchen with a stove and a sink, it's clean"},
    {"image_id": 318219, "caption": "a plate of rice and broccoli"},
    {"image_id": 554625, "caption": "A red stop sign on the side of a street."},
]
KEYS = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"]


def _library_scores(gts: dict[int, list[str]], res: dict[int, list[str]]) -> dict[str, float]:
    """pycocoevalcap's pure-Python scorers called directly, as COCOEvalCap.evaluate calls them."""
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"Bleu_{n}": b for n, b in enumerate(bleu, start=1)}
    scores["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    scores["CIDEr"] = Cider().compute_score(gts, res)[0]
    return scores


def _results_by_image(results: list[dict]) -> dict[int, list[str]]:
    return {row["image_id"]: [row["caption"]] for row in results}


# --------------------------------------------------------------------------- scores = the library's


def test_python_path_equals_pycocoevalcap_scorers_on_the_same_tokens():
    gts = tokenize(REFERENCES, use_java=False)
    res = tokenize(_results_by_image(RESULTS), use_java=False)
    expected = _library_scores(gts, res)
    scores = caption_scores(RESULTS, REFERENCES, use_java=False)
    assert sorted(scores) == sorted(KEYS)  # no METEOR / SPICE without Java
    for key in KEYS:
        assert scores[key] == pytest.approx(expected[key], abs=1e-12, rel=0), key
    # the scale pycocoevalcap reports: BLEU and ROUGE-L as fractions, CIDEr with its x10 (not x100)
    assert all(0.0 < scores[k] <= 1.0 for k in KEYS if k != "CIDEr")
    assert 0.0 < scores["CIDEr"] < 10.0


def test_result_order_does_not_matter_and_tokenized_input_is_what_the_scorers_saw():
    shuffled = list(reversed(RESULTS))
    assert caption_scores(shuffled, REFERENCES, use_java=False) == caption_scores(
        RESULTS, REFERENCES, use_java=False
    )
    gts = tokenize(REFERENCES, use_java=False)
    assert gts[391895][0] == "a man riding a wave on top of a surfboard"
    assert gts[184613][1] == "the kitchen is n't very clean it 's messy"
    assert gts[554625] == [
        "a stop sign on main st. in the u.s.",
        "a red stop sign at an intersection",
        "stop sign street",
    ]


# --------------------------------------------------------------------------- the Python PTB tokenizer


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        (
            "A man riding a wave on top of a surfboard.",
            ["a", "man", "riding", "a", "wave", "on", "top", "of", "a", "surfboard", "."],
        ),
        (
            "Don't do it, it's the dog's bone; they're here.",
            [
                "do",
                "n't",
                "do",
                "it",
                ",",
                "it",
                "'s",
                "the",
                "dog",
                "'s",
                "bone",
                ";",
                "they",
                "'re",
                "here",
                ".",
            ],
        ),
        (
            "I can't, won't and cannot go.",
            ["i", "ca", "n't", ",", "wo", "n't", "and", "can", "not", "go", "."],
        ),
        (
            "We'll see, I'm sure we've won.",
            ["we", "'ll", "see", ",", "i", "'m", "sure", "we", "'ve", "won", "."],
        ),
        (
            "The (big) [red] {blue} \"quoted\" 'single' thing...",
            # brackets are PTB-escaped, quotes become LaTeX quotes, "..." an ellipsis token
            ["the", "-lrb-", "big", "-rrb-", "-lsb-", "red", "-rsb-", "-lcb-", "blue", "-rcb-"]
            + ["``", "quoted", "''", "`", "single", "'", "thing", "..."],
        ),
        (
            "Mr. Smith lives on St. Mark's street in the U.S.",
            ["mr.", "smith", "lives", "on", "st.", "mark", "'s", "street", "in", "the", "u.s."],
        ),
        (
            "A black-and-white photo of a cat/dog with 50% off $5 & more",
            [
                "a",
                "black-and-white",
                "photo",
                "of",
                "a",
                "cat/dog",
                "with",
                "50",
                "%",
                "off",
                "$",
                "5",
                "&",
                "more",
            ],
        ),
        (
            "Wow!! Is that a 10-year-old's bike?!",
            ["wow", "!!", "is", "that", "a", "10-year-old", "'s", "bike", "?!"],
        ),
        (
            "He's gonna eat 1 1/2 pizzas... at 3:30 p.m. -- really",
            [
                "he",
                "'s",
                "gon",
                "na",
                "eat",
                "1\u00a01/2",
                "pizzas",
                "...",
                "at",
                "3:30",
                "p.m.",
                "--",
                "really",
            ],
        ),
        ("Don\u2019t \u201cquote\u201d me", ["do", "n't", "``", "quote", "''", "me"]),
        ("It's 5 o'clock, y'all.", ["it", "'s", "5", "o'clock", ",", "y'", "all", "."]),
        ("Caf\u00e9 na\u00efve  \tSTREET", ["caf\u00e9", "na\u00efve", "street"]),
        ("", []),
    ],
)
def test_ptb_tokens_follow_ptb_rules(text, tokens):
    assert ptb_tokens([text]) == [tokens]


def test_pycocoevalcap_punctuation_removal():
    # exactly pycocoevalcap's PUNCTUATIONS go: "." "," "''" "``" "..." "--" ... but not the lower-cased
    # "-lrb-" (its list has "-LRB-") and not "!!" or "?!"
    assert ptb_tokenize_python(
        ["Don't do it, it's the dog's bone.", 'The (big) "red" thing... -- wow!! ok?!', "A  ,  .", ""]
    ) == ["do n't do it it 's the dog 's bone", "the -lrb- big -rrb- red thing wow !! ok ?!", "a", ""]


def test_captions_are_lexed_as_one_text_like_the_jar_does():
    # an acronym before a line that starts like a sentence gives up its period (PTBLexer's lookahead
    # sees the next caption because pycocoevalcap feeds the jar all captions at once)
    assert ptb_tokens(["the letter a.", "The dog"]) == [["the", "letter", "a", "."], ["the", "dog"]]
    assert ptb_tokens(["the letter a.", "the dog"]) == [["the", "letter", "a."], ["the", "dog"]]
    # pycocoevalcap turns "\n" into a space; other line breaks are spaces here too
    assert ptb_tokenize_python(["a dog\non grass", "a cat\r\nsits"]) == ["a dog on grass", "a cat sits"]


def test_tokenize_keeps_images_and_caption_order():
    out = tokenize({3: ["B b.", "A a!"], 1: [], 2: ["C (c)"]}, use_java=False)
    assert list(out) == [3, 1, 2]
    assert out == {3: ["b b", "a a"], 1: [], 2: ["c -lrb- c -rrb-"]}


# --------------------------------------------------------------------------- hand-worked values


def test_identical_caption_scores_one_and_unrelated_caption_scores_zero():
    refs = {1: ["A cat on a mat.", "a cat on a mat"], 2: ["A dog in the park.", "A dog in a park"]}
    same = caption_scores(
        [{"image_id": 1, "caption": "a cat on a mat"}, {"image_id": 2, "caption": "a dog in a park"}],
        refs,
        use_java=False,
    )
    # BLEU's smoothing constants (1e-9, 1e-15) keep it a hair under 1
    for n in range(1, 5):
        assert same[f"Bleu_{n}"] == pytest.approx(1.0, abs=1e-8)
    assert same["ROUGE_L"] == pytest.approx(1.0)
    unrelated = caption_scores(
        [{"image_id": 1, "caption": "blue sky"}, {"image_id": 2, "caption": "green tree"}],
        refs,
        use_java=False,
    )
    assert unrelated["CIDEr"] == 0.0
    assert unrelated["ROUGE_L"] == 0.0
    assert unrelated["Bleu_1"] < 1e-6


def test_hand_worked_bleu_brevity_penalty():
    # "a b" against "a b c d": all unigrams and the bigram match, brevity penalty exp(1 - 4/2)
    scores = caption_scores([{"image_id": 7, "caption": "a b"}], {7: ["a b c d"]}, use_java=False)
    assert scores["Bleu_1"] == pytest.approx(math.exp(-1), rel=1e-8)
    assert scores["Bleu_2"] == pytest.approx(math.exp(-1), rel=1e-8)
    # no 3- or 4-gram exists: pycocoevalcap's smoothing makes each such precision (0 + 1e-15) / (0 + 1e-9)
    assert scores["Bleu_3"] == pytest.approx(math.exp(-1) * (1e-6) ** (1 / 3), rel=1e-6)
    assert scores["Bleu_4"] == pytest.approx(math.exp(-1) * (1e-6 * 1e-6) ** (1 / 4), rel=1e-6)


def test_hand_worked_cider():
    # Two images, two-word captions equal to their one reference. idf = log(2) - log(df): "a" is in both
    # images' references (idf 0), "cat"/"dog" and the bigrams in one (idf log 2). Cosine similarity is 1
    # for n = 1, 2 and 0 for n = 3, 4 (no such n-grams), so each image scores 10 * mean(1, 1, 0, 0) = 5.
    refs = {1: ["A cat."], 2: ["A dog."]}
    results = [{"image_id": 1, "caption": "a cat"}, {"image_id": 2, "caption": "a dog"}]
    assert caption_scores(results, refs, use_java=False)["CIDEr"] == pytest.approx(5.0, abs=1e-12)
    # with a single image every n-gram has df = N, so every idf is 0 and CIDEr-D is 0 even for a copy
    assert caption_scores(results[:1], {1: refs[1]}, use_java=False)["CIDEr"] == 0.0


def test_cider_document_frequencies_come_from_the_scored_images():
    subset = dict(list(REFERENCES.items())[:3])
    subset_results = [row for row in RESULTS if row["image_id"] in subset]
    full = tokenize(REFERENCES, use_java=False), tokenize(_results_by_image(RESULTS), use_java=False)
    part = tokenize(subset, use_java=False), tokenize(_results_by_image(subset_results), use_java=False)

    subset_cider = caption_scores(subset_results, subset, use_java=False)["CIDEr"]
    # what pycocoevalcap gives when it is asked to score only these images...
    assert subset_cider == pytest.approx(Cider().compute_score(*part)[0], abs=1e-12)
    # ...is not what the same images score inside the full evaluation: the idf changed with the set
    _, per_image_in_full = Cider().compute_score(*full)
    assert abs(subset_cider - per_image_in_full[:3].mean()) > 1e-3
    # BLEU has no such dependence per image, but ROUGE-L is a per-image mean: both are consistent
    assert caption_scores(subset_results, subset, use_java=False)["ROUGE_L"] == pytest.approx(
        Rouge().compute_score(*full)[1][:3].mean(), abs=1e-12
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("results", "message"),
    [
        (RESULTS + [{"image_id": 391895, "caption": "again"}], "appears twice"),
        (RESULTS[:-1], "results miss 1 of 5"),
        (RESULTS + [{"image_id": 1, "caption": "no refs"}], "has no references"),
        (RESULTS[:-1] + [{"image_id": 554625}], "needs an 'image_id' and a str 'caption'"),
    ],
)
def test_results_must_cover_each_referenced_image_once(results, message):
    with pytest.raises(ValueError, match=message):
        caption_scores(results, REFERENCES, use_java=False)


def test_bad_references_and_missing_java_are_errors(monkeypatch):
    with pytest.raises(ValueError, match="non-empty list"):
        caption_scores([{"image_id": 1, "caption": "x"}], {1: []}, use_java=False)
    with pytest.raises(ValueError, match="nothing to score"):
        caption_scores([], {}, use_java=False)
    monkeypatch.setattr(caption.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="no `java` on PATH"):
        caption_scores(RESULTS, REFERENCES, use_java=True)
    # use_java=None falls back to the Python tokenizer: no METEOR/SPICE keys
    assert sorted(caption_scores(RESULTS, REFERENCES)) == sorted(KEYS)


# --------------------------------------------------------------------------- files


def test_coco_files_round_trip(tmp_path: Path):
    captions_file = tmp_path / "captions_val2014.json"
    images = [{"id": image_id, "file_name": f"{image_id}.jpg"} for image_id in REFERENCES] + [{"id": 99}]
    annotations = [
        {"image_id": image_id, "id": 10 * k + j, "caption": text}
        for k, (image_id, texts) in enumerate(REFERENCES.items())
        for j, text in enumerate(texts)
    ]
    captions_file.write_text(json.dumps({"images": images, "annotations": annotations[::-1]}))
    refs = coco_references(captions_file)
    assert list(refs) == list(REFERENCES)  # images order; image 99 has no caption and is left out
    assert refs == {image_id: texts[::-1] for image_id, texts in REFERENCES.items()}  # annotations order

    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps([dict(row, score=0.5) for row in RESULTS]))
    assert load_caption_results(results_file) == RESULTS

    results_file.write_text(json.dumps({"image_id": 1}))
    with pytest.raises(ValueError, match="expected a JSON list"):
        load_caption_results(results_file)
    results_file.write_text(json.dumps([{"image_id": 1, "caption": None}]))
    with pytest.raises(ValueError, match="entry 0"):
        load_caption_results(results_file)
    captions_file.write_text(json.dumps({"images": [], "annotations": annotations}))
    with pytest.raises(ValueError, match="unknown image"):
        coco_references(captions_file)


# --------------------------------------------------------------------------- against the jar


TRICKY = [
    "A man riding a wave on top of a surfboard.",
    "Don't do it, it's the dog's bone; they're here.",
    "I can't, won't and cannot go -- gonna wanna gotta.",
    "The (big) [red] {blue} \"quoted\" 'single' thing...",
    "Mr. Smith lives on St. Mark's street in the U.S.",
    "A black-and-white photo of a cat/dog with 50% off $5 & more :)",
    "Wow!! Is that a 10-year-old's bike?! It's 5 o'clock, y'all.",
    "He's gonna eat 1 1/2 pizzas... at 3:30 p.m. on No. 5 rd.",
    "Don\u2019t \u201cquote\u201d me \u2014 caf\u00e9 na\u00efve \u00bd \u20ac5 \u2026",
    "the letter a.",
    "The dog's ball (etc.) is e.g. a T.V., i.e. a TV.",
    "a <unk> dog at AT&T's store, www.example.com #1 @home",
]


@needs_java
def test_python_tokenizer_matches_the_jar():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = {k: [{"caption": c}] for k, c in enumerate(TRICKY)}
    with contextlib.redirect_stderr(io.StringIO()):
        jar = PTBTokenizer().tokenize(captions)
    assert ptb_tokenize_python(TRICKY) == [jar[k][0] for k in range(len(TRICKY))]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ResourceWarning")  # COCOEvalCap leaves METEOR's pipes open
@needs_java
def test_java_path_equals_cocoevalcap(tmp_path: Path, monkeypatch):
    import pycocoevalcap.eval as coco_eval
    from pycocotools.coco import COCO

    class NoSpice:  # SPICE needs ~1 GB of Stanford models fetched from the internet on first use
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(gts)

        def method(self):
            return "SPICE"

    monkeypatch.setattr(coco_eval, "Spice", NoSpice)
    captions_file, results_file = tmp_path / "captions.json", tmp_path / "results.json"
    captions_file.write_text(
        json.dumps(
            {
                "images": [{"id": image_id} for image_id in REFERENCES],
                "annotations": [
                    {"image_id": image_id, "id": 10 * k + j, "caption": text}
                    for k, (image_id, texts) in enumerate(REFERENCES.items())
                    for j, text in enumerate(texts)
                ],
            }
        )
    )
    results_file.write_text(json.dumps(RESULTS))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(captions_file))
        evaluator = coco_eval.COCOEvalCap(coco, coco.loadRes(str(results_file)))
        evaluator.evaluate()

    ours = caption_scores(
        load_caption_results(results_file), coco_references(captions_file), use_java=True, spice=False
    )
    assert sorted(ours) == sorted(KEYS + ["METEOR"])
    for key in ours:
        assert ours[key] == pytest.approx(evaluator.eval[key], abs=1e-12, rel=0), key
    python_only = caption_scores(RESULTS, REFERENCES, use_java=False)
    for key in KEYS:
        assert python_only[key] == pytest.approx(evaluator.eval[key], abs=1e-12, rel=0), key

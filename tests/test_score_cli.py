"""vlp-score on official files: the same numbers as vlp.metrics, clear one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.test_nlvr2_scoring import PREDICTIONS as NLVR2_PREDICTIONS
from tests.test_nlvr2_scoring import ROWS as NLVR2_ROWS
from tests.test_vqa_scoring import _write_official_files
from vlp.metrics.nlvr2 import write_predictions_csv
from vlp.score import main as vlp_score


def test_vqa_scores_official_files(tmp_path, capsys):
    annotations, questions, results = _write_official_files(tmp_path)
    out = tmp_path / "metrics.json"
    vlp_score(["--out", str(out), "vqa", "--annotations", str(annotations), "--questions", str(questions),
               "--results", str(results)])  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["overall"] == 83.75 and printed["per_answer_type"]["yes/no"] == 50.0
    vlp_score(["vqa", "--annotations", str(annotations), "--results", str(results), "--revision", "2016"])
    assert json.loads(capsys.readouterr().out)["overall"] == 82.5


def test_nlvr2_scores_official_files(tmp_path, capsys):
    data = tmp_path / "dev.json"
    data.write_text("".join(json.dumps(row) + "\n" for row in NLVR2_ROWS))
    predictions = tmp_path / "predictions.csv"
    write_predictions_csv(predictions, NLVR2_PREDICTIONS)
    vlp_score(["nlvr2", "--data", str(data), "--predictions", str(predictions)])
    printed = json.loads(capsys.readouterr().out)
    assert printed["accuracy"] == 87.5 and printed["consistency"] == pytest.approx(200 / 3)


def test_results_that_miss_questions_are_a_one_line_error(tmp_path, capsys):
    annotations, _, results = _write_official_files(tmp_path)
    results.write_text(json.dumps(json.loads(results.read_text())[:-1]))
    with pytest.raises(SystemExit) as exited:
        vlp_score(["vqa", "--annotations", str(annotations), "--results", str(results)])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("vlp-score vqa: ") and "missing" in err and err.count("\n") == 1


def test_caption_scores_official_files_without_java(tmp_path, capsys):
    from tests.test_caption_metrics import REFERENCES, RESULTS
    from vlp.metrics.caption import caption_scores

    images = [{"id": image_id, "file_name": f"{image_id}.jpg"} for image_id in REFERENCES]
    annotations = [{"image_id": image_id, "id": 10 * k + j, "caption": text}
                   for k, (image_id, texts) in enumerate(REFERENCES.items())
                   for j, text in enumerate(texts)]  # fmt: skip
    references = tmp_path / "captions_val2014.json"
    references.write_text(json.dumps({"images": images, "annotations": annotations}))
    results = tmp_path / "captions_results.json"
    results.write_text(json.dumps(RESULTS))
    vlp_score(["caption", "--references", str(references), "--results", str(results), "--no-java"])
    printed = json.loads(capsys.readouterr().out)
    expected = caption_scores(RESULTS, REFERENCES, use_java=False)
    assert printed == pytest.approx(expected) and set(printed) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4",
                                                                  "ROUGE_L", "CIDEr"}  # fmt: skip

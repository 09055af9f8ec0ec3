"""vlp-score: score official results files without a model, with the official metric semantics.

    vlp-score vqa --annotations v2_mscoco_val2014_annotations.json \\
        [--questions v2_OpenEnded_mscoco_val2014_questions.json] --results results.json [--revision 2016]
    vlp-score nlvr2 --data dev.json --predictions predictions.csv
    vlp-score retrieval --scores predictions/retrieval_val_topk.npz [--ks 1 5 10]
    vlp-score caption --references captions_val2014.json --results captions_results.json [--no-java]

Prints the metrics as JSON (and writes them with ``--out``). The same functions are in vlp.metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vlp.metrics.nlvr2 import load_nlvr2_rows, nlvr2_scores, read_predictions_csv
from vlp.metrics.vqa import load_vqa_results, vqa_accuracy


def _json_list(path: Path, key: str) -> list[dict]:
    payload = json.loads(Path(path).read_text())
    if not isinstance(payload, dict) or key not in payload:
        raise ValueError(f"{path} has no {key!r} list: is it the official file?")
    return payload[key]


def score_vqa(args: argparse.Namespace) -> dict[str, Any]:
    questions = _json_list(args.questions, "questions") if args.questions else None
    return vqa_accuracy(
        load_vqa_results(args.results), _json_list(args.annotations, "annotations"), args.revision, questions
    )


def score_nlvr2(args: argparse.Namespace) -> dict[str, Any]:
    return nlvr2_scores(read_predictions_csv(args.predictions), load_nlvr2_rows(args.data))


def score_retrieval(args: argparse.Namespace) -> dict[str, Any]:
    from vlp.metrics.retrieval import score_retrieval_file

    return score_retrieval_file(args.scores, tuple(args.ks))


def score_caption(args: argparse.Namespace) -> dict[str, Any]:
    from vlp.metrics.caption import caption_scores, coco_references, load_caption_results

    use_java = False if args.no_java else None
    return caption_scores(load_caption_results(args.results), coco_references(args.references), use_java)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlp-score", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="also write the metrics to this json file")
    tasks = parser.add_subparsers(dest="task", required=True)
    vqa = tasks.add_parser("vqa", help="VQA v2 accuracy: overall, per answer type, per question type")
    vqa.add_argument("--annotations", type=Path, required=True, help="v2_mscoco_<subtype>_annotations.json")
    vqa.add_argument("--questions", type=Path, help="v2_OpenEnded_mscoco_<subtype>_questions.json (checked)")
    vqa.add_argument("--results", type=Path, required=True, help='[{"question_id": int, "answer": str}]')
    vqa.add_argument(
        "--revision",
        choices=("current", "2016"),
        default="current",
        help="vqaEval.py revision: current (default) or the 2016-2021 one ALBEF/LAVIS copied",
    )
    vqa.set_defaults(score=score_vqa)
    nlvr2 = tasks.add_parser("nlvr2", help="NLVR2 accuracy and consistency")
    nlvr2.add_argument(
        "--data", type=Path, required=True, help="the official dev.json / test1.json (JSON lines)"
    )
    nlvr2.add_argument("--predictions", type=Path, required=True, help="CSV lines identifier,prediction")
    nlvr2.set_defaults(score=score_nlvr2)
    retrieval = tasks.add_parser(
        "retrieval", help="R@K both ways (ALBEF itm_eval semantics), contrastive and re-ranked"
    )
    retrieval.add_argument(
        "--scores",
        type=Path,
        required=True,
        help="a .npz: vlp-eval's predictions/retrieval_<split>_topk.npz, or a dense similarity "
        "[N_images, N_texts] with text_image [N_texts] (see vlp.metrics.retrieval.score_retrieval_file)",
    )
    retrieval.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10], help="the K of R@K")
    retrieval.set_defaults(score=score_retrieval)
    caption = tasks.add_parser("caption", help="BLEU-1..4, ROUGE-L, CIDEr-D (+ METEOR, SPICE with Java)")
    caption.add_argument("--references", type=Path, required=True, help="official captions_<subtype>.json")
    caption.add_argument("--results", type=Path, required=True, help='[{"image_id": int, "caption": str}]')
    caption.add_argument("--no-java", action="store_true", help="never use Java (Python PTB tokenization)")
    caption.set_defaults(score=score_caption)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        metrics = args.score(args)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as error:
        print(f"vlp-score {args.task}: {error}", file=sys.stderr)
        raise SystemExit(1) from error
    text = json.dumps(metrics, indent=2, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""Official metric semantics, importable without a model (``vlp-score`` is their command line)."""

from vlp.metrics.caption import caption_scores, coco_references, load_caption_results
from vlp.metrics.nlvr2 import load_nlvr2_rows, nlvr2_scores, read_predictions_csv, write_predictions_csv
from vlp.metrics.retrieval import retrieval_recall, score_retrieval_file, topk_recall
from vlp.metrics.vqa import load_vqa_results, normalize_answer, question_accuracy, vqa_accuracy

__all__ = [
    "caption_scores",
    "coco_references",
    "load_caption_results",
    "load_nlvr2_rows",
    "load_vqa_results",
    "nlvr2_scores",
    "normalize_answer",
    "question_accuracy",
    "read_predictions_csv",
    "retrieval_recall",
    "score_retrieval_file",
    "topk_recall",
    "vqa_accuracy",
    "write_predictions_csv",
]

"""Synthetic NLVR2 accuracy per statement template, to see which kinds of statements a run has learnt.

    python scripts/nlvr2_by_template.py DATA_DIR RUN_DIR [RUN_DIR ...]

DATA_DIR is the demo's data folder (``data`` or ``$VLP_DATA_DIR``); each RUN_DIR is a finetune_nlvr2 run
with ``predictions/nlvr2_val_predictions.csv``. Beside each run's accuracy the table gives, per template,
the label the training rows give that template most often, scored on dev (an image-blind baseline
that knows the template).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from vlp.data.synthetic_tasks import NLVR2_TEMPLATE_PATTERNS, nlvr2_template
from vlp.metrics.nlvr2 import load_nlvr2_rows, read_predictions_csv


def accuracy(rows: list[dict], predicted: dict[str, str]) -> float:
    right = sum(predicted[r["identifier"]].lower() == r["label"].lower() for r in rows)
    return 100.0 * right / len(rows)


def main(data_dir: Path, runs: list[Path]) -> None:
    raw = data_dir / "synth" / "raw" / "nlvr2" / "data"
    dev = load_nlvr2_rows(raw / "dev.json")
    labels = Counter((nlvr2_template(r["sentence"]), r["label"]) for r in load_nlvr2_rows(raw / "train.json"))
    majority = {t: str(labels[(t, "True")] >= labels[(t, "False")]) for t in NLVR2_TEMPLATE_PATTERNS}
    prior = {r["identifier"]: majority[nlvr2_template(r["sentence"])] for r in dev}
    predictions = [read_predictions_csv(run / "predictions" / "nlvr2_val_predictions.csv") for run in runs]
    print("runs: " + ", ".join(f"[{i}] {run}" for i, run in enumerate(runs)))
    print(
        f"{'template':12s} {'rows':>5s} {'majority':>9s} "
        + " ".join(f"{f'[{i}]':>6s}" for i in range(len(runs)))
    )
    for template in [*NLVR2_TEMPLATE_PATTERNS, "all"]:
        rows = [r for r in dev if template == "all" or nlvr2_template(r["sentence"]) == template]
        if rows:
            scores = " ".join(f"{accuracy(rows, p):6.1f}" for p in predictions)
            print(f"{template:12s} {len(rows):5d} {accuracy(rows, prior):9.1f} {scores}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]])

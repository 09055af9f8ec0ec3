"""`make demo`: synthetic captions -> shards -> tokenizer -> pretrain a tiny ALBEF-style model on the CPU
-> zero-shot retrieval on the synthetic val split, printed as a table against chance.

Each data step is skipped when its output already exists, so a second `make demo` goes straight to
training. Extra arguments are passed on to vlp-train, e.g. `python scripts/demo.py trainer.max_epochs=1`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vlp.data.convert.cli import main as vlp_shards
from vlp.data.datamodule import NLVR2DataModule, VQADataModule
from vlp.data.shards import INDEX_FILE, SplitIndex
from vlp.data.synthetic import main as vlp_synth
from vlp.data.tokenizer import main as vlp_tokenizer

VQA_TRAIN_QUESTIONS = "v2_OpenEnded_mscoco_train2014_questions.json"
# Wide enough for the results table when the output is a pipe or a CI log rather than a terminal.
console = Console(width=None if sys.stdout.isatty() else 120)


def prepare_data(data_dir: Path) -> dict[str, str]:
    """vlp-synth (captions, VQA v2 and NLVR2 files) -> vlp-shards -> vlp-tokenizer, each step skipped when
    its output is there. Returns a one-line summary per converted dataset."""
    synth = data_dir / "synth"
    raw, shards = synth / "raw", synth / "shards"
    karpathy_json = raw / "dataset_coco.json"
    if not all(
        p.is_file()
        for p in (karpathy_json, raw / "vqa" / VQA_TRAIN_QUESTIONS, raw / "nlvr2" / "data" / "train.json")
    ):
        console.rule("vlp-synth")
        vlp_synth(["--out", str(raw), "--n-train", "4000", "--n-val", "500", "--n-test", "500"])
    # vlp-shards leaves splits that are up to date as they are, so these are quick on a second run.
    console.rule("vlp-shards coco / vqa / nlvr2")
    vlp_shards(["coco", "--karpathy-json", str(karpathy_json), "--image-root", str(raw),
                "--out", str(shards / "captions"), "--shard-size", "500"])  # fmt: skip
    vlp_shards(["vqa", "--root", str(raw / "vqa"), "--splits", "train2014", "val2014", "test-dev2015",
                "--out", str(shards / "vqa"), "--shard-size", "500"])  # fmt: skip
    vlp_shards(["nlvr2", "--json-dir", str(raw / "nlvr2" / "data"),
                "--image-root", str(raw / "nlvr2" / "images"),
                "--out", str(shards / "nlvr2"), "--shard-size", "500"])  # fmt: skip
    if not (synth / "tokenizer" / "tokenizer.json").is_file():
        console.rule("vlp-tokenizer")
        vlp_tokenizer(["--karpathy-json", str(karpathy_json), "--out", str(synth / "tokenizer"),
                       "--vocab-size", "1000",
                       "--vqa-questions", str(raw / "vqa" / VQA_TRAIN_QUESTIONS),
                       "--nlvr2-jsonl", str(raw / "nlvr2" / "data" / "train.json")])  # fmt: skip
    return data_summary(shards)


def data_summary(shards: Path) -> dict[str, str]:
    """What each converted synthetic dataset holds (from the split indexes), and for VQA and NLVR2 what
    their datamodules read back from the validation shards: the path a finetuning run takes."""
    summary = {}
    for dataset, unit in (("captions", "num_captions"), ("vqa", "num_questions"), ("nlvr2", None)):
        parts = []
        for split_dir in sorted(p for p in (shards / dataset).iterdir() if (p / INDEX_FILE).is_file()):
            index = SplitIndex.read(split_dir)
            what = f" ({index.extra[unit]} {unit.removeprefix('num_')})" if unit else ""
            parts.append(f"{split_dir.name} {index.num_samples}{what}")
        summary[dataset] = ", ".join(parts)
    tokenizer = str(shards.parent / "tokenizer")
    for dataset, module, unit in (("vqa", VQADataModule, "questions"), ("nlvr2", NLVR2DataModule, "rows")):
        datamodule = module(root=str(shards / dataset), tokenizer=tokenizer, batch_size=256, num_workers=0)
        datamodule.set_image_config(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        items, skipped = 0, 0
        for batch in datamodule.val_dataloader():
            items += int(batch["input_ids"].shape[0])
            skipped += int(batch["data_skipped"])
        summary[dataset] += f"; val read back by {module.__name__}: {items} {unit}, {skipped} skipped"
    return summary


def results_table(metrics: dict[str, float]) -> tuple[Table, bool]:
    """The demo's claims, each measured against its chance level or baseline."""
    num_images = metrics["val/retrieval/num_images"]
    r5_chance = 100.0 * min(5.0, num_images) / num_images
    mlm_baseline = metrics["val/mlm/majority_acc"]
    rows = [
        # (what, value, chance or baseline, target as a factor of it or absolute, passes)
        ("ITM balanced accuracy (hard negatives)", metrics["val/itm/balanced_acc"], 0.5, ">= 0.75",
         metrics["val/itm/balanced_acc"] >= 0.75),
        ("ITM accuracy (1 positive : 2 negatives)", metrics["val/itm/acc"], 2 / 3, "", None),
        ("MLM masked-token accuracy", metrics["val/mlm/acc"], mlm_baseline, ">= 1.5x baseline",
         metrics["val/mlm/acc"] >= 1.5 * mlm_baseline),
        ("text->image R@5 (%)", metrics["val/retrieval/img_r5"], r5_chance, ">= 10x chance",
         metrics["val/retrieval/img_r5"] >= 10 * r5_chance),
        ("text->image R@1 (%)", metrics["val/retrieval/img_r1"], 100.0 / num_images, "", None),
        ("text->image R@10 (%)", metrics["val/retrieval/img_r10"], 100.0 * min(10.0, num_images) / num_images,
         "", None),
        ("image->text R@1 (%)", metrics["val/retrieval/txt_r1"], None, "", None),
        ("image->text R@5 (%)", metrics["val/retrieval/txt_r5"], None, "", None),
        ("image->text R@10 (%)", metrics["val/retrieval/txt_r10"], None, "", None),
    ]  # fmt: skip
    table = Table(title=f"synthetic val split: {int(num_images)} images, "
                  f"{int(metrics['val/retrieval/num_texts'])} captions")  # fmt: skip
    for column in ("metric", "value", "chance / baseline", "ratio", "target", ""):
        table.add_column(column, justify="left" if column in ("metric", "target") else "right")
    all_pass = True
    for name, value, reference, target, passes in rows:
        ratio = f"{value / reference:.1f}x" if reference else ""
        mark = "" if passes is None else ("[green]pass[/green]" if passes else "[red]FAIL[/red]")
        all_pass = all_pass and passes is not False
        reference_text = "" if reference is None else f"{reference:.3f}"
        table.add_row(name, f"{value:.3f}", reference_text, ratio, target, mark)
    return table, all_pass


def main() -> int:
    started = time.monotonic()
    data_dir = Path(os.environ.get("VLP_DATA_DIR", "data"))
    datasets = prepare_data(data_dir)
    run_dir = Path("outputs") / "demo" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    console.rule(f"vlp-train experiment=demo -> {run_dir}")
    command = [str(Path(sys.executable).with_name("vlp-train")), "experiment=demo", f"data_dir={data_dir}",
               f"hydra.run.dir={run_dir}", *sys.argv[1:]]  # fmt: skip
    if subprocess.run(command).returncode != 0:
        console.print(f"[red]vlp-train failed; its log is in {run_dir}[/red]")
        return 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    table, all_pass = results_table(metrics)
    console.print(table)
    for dataset, summary in datasets.items():
        console.print(f"synthetic {dataset} shards: {summary}")
    console.print(f"run directory: {run_dir} (metrics.json, config.yaml, checkpoints/, csv/)")
    console.print(f"demo took {time.monotonic() - started:.0f} s")
    return 0 if all_pass else 2


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: synthetic data -> shards -> tokenizer -> pretrain a tiny ALBEF-style model on the CPU
(checked against chance) -> finetune VQA, NLVR2, retrieval and captioning twice each, from scratch and
from the pretrained checkpoint at the same budget -> the downstream table, against each task's
image-blind baseline, printed and saved as ``results.md`` in the run folder.

Each data step is skipped when its output already exists, so a second `make demo` goes straight to
training. Extra arguments are passed on to the pretraining vlp-train, e.g. `trainer.max_epochs=1`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from vlp.baselines import constant_caption_baseline, nlvr2_majority, retrieval_chance, vqa_prior_baselines
from vlp.data.datamodule import NLVR2DataModule, VQADataModule
from vlp.data.shards import INDEX_FILE, SplitIndex
from vlp.data.synthetic import DEFAULT_IMAGE_SIZE, IMAGE_FOLDER
from vlp.explain import EXPLAIN_METHODS
from vlp.metrics.nlvr2 import load_nlvr2_rows

VQA_TRAIN_QUESTIONS = "v2_OpenEnded_mscoco_train2014_questions.json"
# NLVR2 training pairs (about 1.75 statements each: 21k rows, a quarter of real NLVR2's 86k). The other
# tasks get 4000 scenes; NLVR2's statements need counting and comparing across two images, and with 2000
# pairs (3.5k rows) it stayed at its majority label from scratch and from pretrained, at 1 to 6 epochs and
# under every recipe tried (scripts/nlvr2_by_template.py, nlvr2_probe.py). With 12000 pairs, two epochs
# from pretrained reach 59-65 % (four seeds; majority 53 %); from scratch it still predicts one label.
NLVR2_TRAIN_PAIRS = 12000
# Wide enough for the results table when the output is a pipe or a CI log rather than a terminal.
console = Console(width=None if sys.stdout.isatty() else 120)


@dataclass
class Job:
    """One command of the demo, run as its own process once the jobs it ``needs`` have finished (a need
    that is not among the jobs run was done before); its output goes to ``log``."""

    name: str
    command: list[str]
    log: Path
    needs: tuple[str, ...] = ()


def run_jobs(
    jobs: list[Job], parallel: int, env: dict[str, str] | None = None
) -> Iterator[tuple[Job, int, float]]:
    """Run the jobs ``parallel`` at a time; yields (job, exit status, seconds) as each one ends."""
    names = {job.name for job in jobs}
    finished: set[str] = set()
    pending, running = list(jobs), []
    while pending or running:
        for job in [j for j in pending if all(n in finished or n not in names for n in j.needs)]:
            if len(running) >= parallel:
                break
            pending.remove(job)
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with job.log.open("w") as out:
                process = subprocess.Popen(job.command, env=env, stdout=out, stderr=subprocess.STDOUT)
            running.append((job, process, time.monotonic()))
        time.sleep(0.5)
        for item in list(running):
            job, process, started = item
            if process.poll() is None:
                continue
            running.remove(item)
            finished.add(job.name)
            yield job, process.returncode, time.monotonic() - started


def check_scene_size(raw: Path) -> None:
    """Scenes that an older demo drew at another size would be resized, and would lose the one patch per
    object of the demo's tower (conf/model/vision/vit_tiny.yaml): stop with what to do instead."""
    drawn = next((raw / IMAGE_FOLDER).glob("*.jpg"), None) if (raw / IMAGE_FOLDER).is_dir() else None
    if drawn is None:
        return
    with Image.open(drawn) as image:
        size = image.width
    if size != DEFAULT_IMAGE_SIZE:
        raise SystemExit(
            f"demo: the synthetic data under {raw.parent} has {size} px scenes, the demo now draws "
            f"{DEFAULT_IMAGE_SIZE} px: delete that folder or set VLP_DATA_DIR to a new one"
        )


def check_nlvr2_size(raw: Path) -> None:
    """NLVR2 rows that an older demo drew with fewer training pairs would be reused as they are, and its
    finetunes would see a sixth of the data the demo's budget is sized for: stop with what to do instead."""
    train = raw / "nlvr2" / "data" / "train.json"
    if not train.is_file():
        return
    # identifiers are split-set-pair-sentence: a pair's rows share all but the last part
    pairs = len({row["identifier"].rsplit("-", 1)[0] for row in load_nlvr2_rows(train)})
    if pairs < NLVR2_TRAIN_PAIRS:
        raise SystemExit(
            f"demo: the synthetic NLVR2 data under {raw.parent} has {pairs} training pairs, the demo now "
            f"draws {NLVR2_TRAIN_PAIRS}: delete that folder or set VLP_DATA_DIR to a new one"
        )


def prepare_data(data_dir: Path) -> dict[str, str]:
    """vlp-synth (captions, VQA v2 and NLVR2 files) -> vlp-shards -> vlp-tokenizer, each synth and tokenizer
    step skipped when its output is there. The steps run as separate processes, two at a time (most of
    their work is single-threaded Python). Returns a one-line summary per converted dataset."""
    synth = data_dir / "synth"
    raw, shards = synth / "raw", synth / "shards"
    karpathy_json = raw / "dataset_coco.json"
    vqa_questions = raw / "vqa" / VQA_TRAIN_QUESTIONS
    nlvr2_train = raw / "nlvr2" / "data" / "train.json"
    check_scene_size(raw)
    check_nlvr2_size(raw)
    python = [sys.executable, "-m"]
    sizes = ["--n-train", "4000", "--n-val", "500", "--n-test", "500"]  # scenes at DEFAULT_IMAGE_SIZE
    # vlp-synth draws n // 2 NLVR2 pairs per split; dev and test1 stay at 250 pairs as before
    nlvr2_sizes = ["--n-train", str(2 * NLVR2_TRAIN_PAIRS), "--n-val", "500", "--n-test", "500"]
    logs = synth / "logs"
    steps = []
    # the longest first, so that the two lanes end close together
    for task, marker in (("nlvr2", nlvr2_train), ("vqa", vqa_questions), ("captions", karpathy_json)):
        if not marker.is_file():
            task_sizes = nlvr2_sizes if task == "nlvr2" else sizes
            synthesize = [*python, "vlp.data.synthetic", "--out", str(raw), "--tasks", task, *task_sizes]
            steps.append(Job(f"synth {task}", synthesize, logs / f"synth_{task}.log"))
    # vlp-shards leaves splits that are up to date as they are, so these are quick on a second run.
    shards_cli = [*python, "vlp.data.convert.cli"]
    steps += [
        Job("shards coco", [*shards_cli, "coco", "--karpathy-json", str(karpathy_json),
                            "--image-root", str(raw), "--out", str(shards / "captions"),
                            "--shard-size", "500"],
            logs / "shards_coco.log", needs=("synth captions",)),
        Job("shards vqa", [*shards_cli, "vqa", "--root", str(raw / "vqa"),
                           "--splits", "train2014", "val2014", "test-dev2015",
                           "--out", str(shards / "vqa"), "--shard-size", "500"],
            logs / "shards_vqa.log", needs=("synth vqa",)),
        Job("shards nlvr2", [*shards_cli, "nlvr2", "--json-dir", str(raw / "nlvr2" / "data"),
                             "--image-root", str(raw / "nlvr2" / "images"),
                             "--out", str(shards / "nlvr2"), "--shard-size", "500"],
            logs / "shards_nlvr2.log", needs=("synth nlvr2",)),
    ]  # fmt: skip
    if not (synth / "tokenizer" / "tokenizer.json").is_file():
        tokenizer = [*python, "vlp.data.tokenizer", "--karpathy-json", str(karpathy_json),
                     "--out", str(synth / "tokenizer"), "--vocab-size", "1000",
                     "--vqa-questions", str(vqa_questions), "--nlvr2-jsonl", str(nlvr2_train)]  # fmt: skip
        steps.append(Job("tokenizer", tokenizer, logs / "tokenizer.log",
                         needs=("synth captions", "synth vqa", "synth nlvr2")))  # fmt: skip
    console.rule("data: vlp-synth -> vlp-shards coco / vqa / nlvr2 -> vlp-tokenizer")
    for job, status, seconds in run_jobs(steps, PARALLEL_RUNS):
        lines = job.log.read_text().strip().splitlines() or [""]
        if status != 0:
            tail = "\n".join(lines[-15:])
            raise SystemExit(f"demo: {job.name} failed (exit {status}), see {job.log}:\n{tail}")
        console.print(f"{job.name}: {seconds:.0f} s  {lines[-1]}", soft_wrap=True)
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


@dataclass
class Finetune:
    """One downstream task of the table: its experiment, the demo's budget, and the metrics it reports."""

    task: str
    experiment: str
    metrics: dict[str, str]  # logged key -> row label
    budget: list[str] = field(default_factory=list)  # vlp-train overrides, the same for both inits


# Budgets sized so that the eight finetuning runs (two at a time) fit the demo's 20 minutes on a 2-core
# CPU: 100 steps (a third of an epoch) for VQA, two epochs (1300 steps) for NLVR2, one epoch otherwise;
# retrieval and captioning score the first 256 validation images (two batches), retrieval re-ranks the
# top 10.
FINETUNES = [
    Finetune("VQA", "finetune_vqa", {"val/vqa/accuracy": "VQA accuracy (%)"},
             ["trainer.max_epochs=1", "trainer.limit_train_batches=100"]),
    Finetune("NLVR2", "finetune_nlvr2", {"val/nlvr2/accuracy": "NLVR2 accuracy (%)"},
             ["trainer.max_epochs=2"]),
    Finetune("retrieval", "finetune_retrieval",
             {"val/retrieval/r_mean": "retrieval r_mean, contrastive (%)",
              "val/retrieval/rerank_r_mean": "retrieval r_mean, ITM re-ranked top-10 (%)"},
             ["trainer.max_epochs=1", "trainer.limit_val_batches=2", "evaluators.retrieval.rerank_k=10"]),
    Finetune("captioning", "finetune_captioning", {"val/captioning/CIDEr": "captioning CIDEr-D"},
             ["trainer.max_epochs=1", "trainer.limit_val_batches=2"]),
]  # fmt: skip


def vlp_train(*overrides: str) -> list[str]:
    return [str(Path(sys.executable).with_name("vlp-train")), *overrides]


def finetune_jobs(data_dir: Path, run_dir: Path, checkpoint: Path) -> dict[str, tuple[Job, tuple[str, str]]]:
    """Every finetune from scratch and from ``checkpoint``: job name -> (job, (task, init))."""
    jobs = {}
    for finetune in FINETUNES:
        for init in ("scratch", "pretrained"):
            out = run_dir / "finetune" / f"{finetune.experiment.removeprefix('finetune_')}_{init}"
            start = [f"model.init_from={checkpoint}"] if init == "pretrained" else []
            command = vlp_train(f"experiment={finetune.experiment}", f"data_dir={data_dir}",
                                f"hydra.run.dir={out}", *finetune.budget, *start)  # fmt: skip
            job = Job(f"{finetune.task} from {init}", command, out / "stdout.log")
            jobs[job.name] = (job, (finetune.task, init))
    return jobs


def seeing_jobs(run_dir: Path, pretrain_dir: Path) -> list[Job]:
    """vlp-export the pretrained checkpoint, vlp-explain it on 200 synthetic probes with each method, and
    vlp-plot its training curves."""
    python = [sys.executable, "-m"]
    export_dir, explain_dir, logs = run_dir / "export", run_dir / "explain", run_dir / "logs"
    export = Job("export", [*python, "vlp.export", str(pretrain_dir / "checkpoints" / "last.ckpt"),
                            str(export_dir)], logs / "export.log")  # fmt: skip
    explains = [
        Job(f"explain {method}", [*python, "vlp.explain", str(export_dir), "--probes", "200", "--method",
                                  method, "--out", str(explain_dir / method)],
            logs / f"explain_{method}.log", needs=("export",))
        for method in EXPLAIN_METHODS
    ]  # fmt: skip
    plot = Job("plot", [*python, "vlp.plot", str(pretrain_dir)], logs / "plot.log")
    return [export, *explains, plot]


def run_after_pretraining(
    finetunes: dict[str, tuple[Job, tuple[str, str]]], seeing: list[Job], run_dir: Path, parallel: int
) -> tuple[dict[tuple[str, str], dict], set[str]]:
    """The finetunes and the seeing jobs in one queue, ``parallel`` at a time, each with an equal share of
    the CPU threads (the seeing jobs fill the gaps the finetunes leave). Returns ``{(task, init):
    metrics}`` of the finetunes that finished and the names of the jobs that failed; a failed run is
    reported, not fatal."""
    threads = max(1, (os.cpu_count() or 1) // parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    jobs = [job for job, _ in finetunes.values()] + seeing
    results: dict[tuple[str, str], dict] = {}
    failed: set[str] = set()
    console.print(f"{len(finetunes)} finetuning runs and {len(seeing)} seeing steps, {parallel} at a time, "
                  f"logs in {run_dir / 'finetune'}/<task>_<init>/ and {run_dir / 'logs'}/")  # fmt: skip
    for job, status, seconds in run_jobs(jobs, parallel, env):
        metrics = job.log.parent / "metrics.json"
        finished = status == 0 and (job.name not in finetunes or metrics.is_file())
        if finished and job.name in finetunes:
            results[finetunes[job.name][1]] = json.loads(metrics.read_text())
        if finished:
            console.print(f"  {job.name}: done in {seconds:.0f} s")
        else:
            failed.add(job.name)
            console.print(f"[red]  {job.name} failed after {seconds:.0f} s: see {job.log}[/red]")
    return results, failed


def task_baselines(data_dir: Path, run_dir: Path) -> dict[str, tuple[float, str]]:
    """Metric key -> (image-blind baseline, how it is obtained), from the raw synthetic files, over the
    images the finetuning runs scored (their prediction files say which)."""
    raw = data_dir / "synth" / "raw"
    vqa = {split: json.loads((raw / "vqa" / f"v2_mscoco_{split}_annotations.json").read_text())["annotations"]
           for split in ("train2014", "val2014")}  # fmt: skip
    vqa_prior = vqa_prior_baselines(vqa["train2014"], vqa["val2014"])
    nlvr2 = nlvr2_majority(load_nlvr2_rows(raw / "nlvr2" / "data" / "train.json"),
                           load_nlvr2_rows(raw / "nlvr2" / "data" / "dev.json"))  # fmt: skip
    baselines = {
        "val/vqa/accuracy": (vqa_prior["most_frequent"], "most frequent answer; per-question-type prior "
                             f"{vqa_prior['per_question_type']:.1f}"),
        "val/nlvr2/accuracy": (nlvr2, "majority label of train"),
    }  # fmt: skip
    retrieval_scores = (
        run_dir / "finetune" / "retrieval_pretrained" / "predictions" / "retrieval_val_topk.npz"
    )
    if retrieval_scores.is_file():
        with np.load(retrieval_scores) as scores:
            per_image = np.unique(scores["text_image_ids"], return_counts=True)[1].tolist()
        chance = retrieval_chance(per_image)["r_mean"]
        how = f"random ranking (exact), {len(per_image)} images, {sum(per_image)} captions"
        baselines["val/retrieval/r_mean"] = baselines["val/retrieval/rerank_r_mean"] = (chance, how)
    captions = run_dir / "finetune" / "captioning_pretrained" / "predictions" / "caption_val_results.json"
    if captions.is_file():
        karpathy = json.loads((raw / "dataset_coco.json").read_text())["images"]
        scored = {row["image_id"] for row in json.loads(captions.read_text())}
        train = [
            s["raw"]
            for image in karpathy
            if image["split"] in ("train", "restval")
            for s in image["sentences"]
        ]
        val = [image for image in karpathy if image["split"] == "val" and image["cocoid"] in scored]
        references = {image["cocoid"]: [s["raw"] for s in image["sentences"]] for image in val}
        caption, metrics = constant_caption_baseline(train, references)
        how = f"one caption for all {len(references)} images: {caption!r}"
        baselines["val/captioning/CIDEr"] = (metrics["CIDEr"], how)
    return baselines


def finetune_table(
    results: dict[tuple[str, str], dict], baselines: dict[str, tuple[float, str]]
) -> tuple[list[list[str]], bool]:
    """Rows of the downstream table and whether the demo's claims hold: the pretrained recipe beats each
    task's image-blind baseline, and beats finetuning from scratch on VQA and retrieval (the claims the
    synthetic benchmark must show). Whether the from-scratch runs beat the baseline is shown, not required:
    at this budget that measures the budget more than the framework."""
    rows, all_pass = [], True
    for finetune in FINETUNES:
        for key, label in finetune.metrics.items():
            scratch = results.get((finetune.task, "scratch"), {}).get(key)
            pretrained = results.get((finetune.task, "pretrained"), {}).get(key)
            baseline, how = baselines.get(key, (float("nan"), "the run failed: no prediction file"))
            passes = pretrained is not None and pretrained > baseline
            if finetune.task in ("VQA", "retrieval"):
                passes = passes and scratch is not None and pretrained > scratch
            verdict = "pass" if passes else "FAIL"
            all_pass = all_pass and passes
            gain = None if scratch is None or pretrained is None else pretrained - scratch
            rows.append([label, f"{baseline:.2f}", _fmt(scratch), _fmt(pretrained), _fmt(gain, "+.2f"),
                         verdict, how])  # fmt: skip
    return rows, all_pass


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


TABLE_HEADER = [
    "metric (synthetic val)",
    "baseline",
    "from scratch",
    "from pretrained",
    "gain",
    "",
    "baseline is",
]


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


HIT_RATE_KEYS = ("hit_rate", "chance_object", "chance_cell")
METHOD_NAMES = {"gradcam": "Grad-CAM", "occlusion": "occlusion"}  # one per vlp.explain.EXPLAIN_METHODS


def seeing_lines(run_dir: Path, pretrain_dir: Path, failed: set[str]) -> str:
    """The lines results.md gives the seeing jobs: how often the ITM heatmap of each method peaks on the
    one object the text names, against chance, and where the curves are. Shown, not a pass/fail claim."""
    explain_dir, lines = run_dir / "explain", []
    for method in EXPLAIN_METHODS:
        name = METHOD_NAMES[method]
        if {"export", f"explain {method}"} & failed:
            lines.append(f"- vlp-explain --method {method} failed: see {run_dir / 'logs'}/")
            continue
        result = json.loads((explain_dir / method / "hit_rate.json").read_text())
        hit, chance_object, chance_cell = (100 * result[key] for key in HIT_RATE_KEYS)
        lines.append(
            f"- ITM {name} peak on the named object's cell: {hit:.1f} % of {int(result['probes'])} synthetic "
            f"scenes (chance: {chance_object:.1f} % for a random object of the scene, {chance_cell:.1f} % "
            f"for a random cell); examples in {explain_dir / method}/"
        )
    plotted = "plot" not in failed
    lines.append(f"- training curves: {pretrain_dir / 'curves.png'}" if plotted else "- vlp-plot failed")
    return "\n".join(lines)


def main() -> int:
    started = time.monotonic()
    data_dir = Path(os.environ.get("VLP_DATA_DIR", "data"))
    datasets = prepare_data(data_dir)
    run_dir = Path("outputs") / "demo" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    pretrain_dir = run_dir / "pretrain"
    console.rule(f"pretrain: vlp-train experiment=demo -> {pretrain_dir}")
    command = vlp_train(
        "experiment=demo", f"data_dir={data_dir}", f"hydra.run.dir={pretrain_dir}", *sys.argv[1:]
    )
    if subprocess.run(command).returncode != 0:
        console.print(f"[red]vlp-train failed; its log is in {pretrain_dir}[/red]")
        return 1
    metrics = json.loads((pretrain_dir / "metrics.json").read_text())
    table, pretraining_pass = results_table(metrics)
    console.print(table)
    pretrained_at = time.monotonic()

    console.rule(
        "finetune: 4 tasks x (from scratch, from pretrained), same budget; beside them, seeing: vlp-export "
        "-> vlp-explain --probes 200 (ITM, Grad-CAM and occlusion); vlp-plot"
    )
    finetunes = finetune_jobs(data_dir, run_dir, pretrain_dir / "checkpoints" / "last.ckpt")
    results, failed = run_after_pretraining(
        finetunes, seeing_jobs(run_dir, pretrain_dir), run_dir, PARALLEL_RUNS
    )
    rows, finetune_pass = finetune_table(results, task_baselines(data_dir, run_dir))
    downstream = Table(title="downstream tasks: from scratch vs from pretrained, same finetuning budget")
    for column in TABLE_HEADER:
        downstream.add_column(
            column, justify="left" if column in (TABLE_HEADER[0], TABLE_HEADER[-1]) else "right"
        )
    for row in rows:
        colour = {"pass": "green", "FAIL": "red"}.get(row[5], "yellow")
        downstream.add_row(*row[:5], f"[{colour}]{row[5]}[/{colour}]", row[6])
    console.print(table)
    console.print(downstream)
    (run_dir / "results.md").write_text(
        "# make demo\n\n## pretraining (synthetic val)\n\n"
        + "\n".join(f"- {key}: {value:.4f}" for key, value in sorted(metrics.items()))
        + "\n\n## downstream\n\n"
        + markdown_table(rows)
    )
    seeing = seeing_lines(run_dir, pretrain_dir, failed)
    console.print(seeing)
    (run_dir / "results.md").open("a").write("\n## seeing\n\n" + seeing + "\n")
    for dataset, summary in datasets.items():
        console.print(f"synthetic {dataset} shards: {summary}")
    console.print(f"run directory: {run_dir} (pretrain/, finetune/<task>_<init>/, results.md)")
    finished = time.monotonic()
    pretraining, finetuning = pretrained_at - started, finished - pretrained_at
    console.print(f"demo took {finished - started:.0f} s (data and pretraining {pretraining:.0f} s, "
                  f"finetuning {finetuning:.0f} s)")  # fmt: skip
    return 0 if pretraining_pass and finetune_pass else 2


# Finetuning runs at a time. Two processes with one thread each keep both cores busier than one process
# with two threads: a tiny model spends much of a step in Python and in small single-threaded ops.
PARALLEL_RUNS = 2


if __name__ == "__main__":
    sys.exit(main())

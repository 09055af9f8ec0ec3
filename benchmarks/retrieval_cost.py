"""Two-stage retrieval cost against the number of images, at a fixed re-ranking depth k.

Stage 1 (contrastive similarity of all pairs, in chunks) is one matrix product; stage 2 runs the ITM
cross-encoder on the top-k candidates of every image and every text: ``(N_images + N_texts) * k`` fusion
passes, linear in the size of the gallery, where ViLT-style all-pairs scoring needs
``N_images * N_texts`` (quadratic). This benchmark evaluates the demo's tiny model (random weights: the
cost does not depend on what the model knows) on random images and captions at two gallery sizes, the
sizes interleaved over repeats, and reports the measured stage times, their ratio between the two sizes,
and the pass counts beside what all-pairs scoring would need (its time estimated from the measured
passes per second, not run). Writes ``benchmarks/results/retrieval_cost.{md,json}``.

    python benchmarks/retrieval_cost.py [--images 200 400] [--captions-per-image 5] [--k 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from vlp.build import build_model
from vlp.evaluation.retrieval import RetrievalEvaluation
from vlp.objectives.itm import ImageTextMatching
from vlp.train import CONFIG_DIR
from vlp.types import Encoded

RESULTS = Path(__file__).resolve().parent / "results"
VOCAB_SIZE = 1000


@torch.no_grad()
def evaluate(model, itm, num_images: int, captions_per_image: int, k: int, seed: int) -> dict[str, float]:
    """One evaluation pass over random data, fed in batches of 100 images as validation would."""
    generator = torch.Generator().manual_seed(seed)
    evaluator = RetrievalEvaluation(ks=(1, 5, 10), rerank_k=k)
    evaluator.bind(model, {"itm": itm})
    size = model.vision.image_size
    for start in range(0, num_images, 100):
        count = min(100, num_images - start)
        pixels = torch.randn(count, 3, size, size, generator=generator)
        input_ids = torch.randint(5, VOCAB_SIZE, (count * captions_per_image, 16), generator=generator)
        mask = torch.ones_like(input_ids)
        batch = {
            "image_id": torch.arange(start, start + count),
            "retrieval_input_ids": input_ids,
            "retrieval_attention_mask": mask,
            "retrieval_text_image": torch.arange(count).repeat_interleave(captions_per_image),
        }
        encoded = Encoded(image=model.encode_image(pixels), text=None)  # the evaluator encodes the texts
        evaluator.update(batch, encoded, model)
    return evaluator.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs=2, default=[200, 400])
    parser.add_argument("--captions-per-image", type=int, default=5)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["run_dir=unused"])
    torch.manual_seed(0)
    model = build_model(cfg, vocab_size=VOCAB_SIZE).eval()
    itm = ImageTextMatching(model.dims).eval()

    runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.images}
    for repeat in range(args.repeats):
        for num_images in args.images:  # interleaved, so drift in machine load hits both sizes alike
            runs[num_images].append(evaluate(model, itm, num_images, args.captions_per_image, args.k, repeat))
    rows = []
    for num_images in args.images:
        metrics = runs[num_images]
        stage2 = statistics.median(m["stage2_seconds"] for m in metrics)
        passes, all_pairs = metrics[0]["itm_passes"], metrics[0]["all_pairs"]
        rows.append({
            "images": num_images, "texts": int(metrics[0]["num_texts"]), "k": args.k,
            "stage1_seconds": round(statistics.median(m["stage1_seconds"] for m in metrics), 4),
            "stage2_seconds": round(stage2, 2),
            "stage2_seconds_all": [round(m["stage2_seconds"], 2) for m in metrics],
            "itm_passes": int(passes), "all_pairs_passes": int(all_pairs),
            "all_pairs_seconds_estimated": round(all_pairs / (passes / stage2), 1),
        })  # fmt: skip
    small, large = rows
    summary = {
        "images_ratio": large["images"] / small["images"],
        "itm_passes_ratio": large["itm_passes"] / small["itm_passes"],
        "stage2_seconds_ratio": round(large["stage2_seconds"] / small["stage2_seconds"], 2),
        "all_pairs_ratio": large["all_pairs_passes"] / small["all_pairs_passes"],
    }
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    machine += f", {torch.get_num_threads()} torch threads"
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "benchmark": "retrieval_cost",
        "machine": machine,
        "repeats": args.repeats,
        "rows": rows,
        **summary,
    }
    (RESULTS / "retrieval_cost.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Two-stage retrieval cost (demo's tiny model, random data, ITM re-ranking of the top-k)",
        "",
        f"Machine: {machine}; {args.captions_per_image} captions per image; median of {args.repeats} "
        "interleaved repeats. All-pairs times are estimates (passes / measured passes per second), not runs.",
        "",
        "| images | texts | k | stage 1 s | stage 2 s (repeats) | ITM passes | all-pairs passes "
        "| all-pairs s (est.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        repeats = ", ".join(map(str, row["stage2_seconds_all"]))
        lines.append(f"| {row['images']} | {row['texts']} | {row['k']} | {row['stage1_seconds']} | "
                     f"{row['stage2_seconds']} ({repeats}) | {row['itm_passes']} | "
                     f"{row['all_pairs_passes']} | {row['all_pairs_seconds_estimated']} |")  # fmt: skip
    lines += [
        "",
        f"{summary['images_ratio']:.0f}x the images: {summary['itm_passes_ratio']:.2f}x the ITM passes and "
        f"{summary['stage2_seconds_ratio']}x the stage-2 time (linear), where all-pairs scoring would need "
        f"{summary['all_pairs_ratio']:.0f}x the passes (quadratic).",
    ]
    (RESULTS / "retrieval_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Framework overhead: a vlp pretraining step under the Lightning Trainer vs a hand-written PyTorch loop.

Both train the same model (the configured one, ``model=albef_tiny`` by default) with the same objectives
(ITC + ITM + MLM, the same modules: the loss is computed by identical code), the same AdamW parameter
groups, learning-rate schedule and gradient clipping, on the same batches held in memory (no data loading
in either). vlp runs ``trainer.fit`` with the Trainer, callbacks (learning-rate monitor, data-skip
monitor, telemetry) and CSV logger that vlp-train uses, checkpointing off; the plain loop is what a
researcher would write by hand: forward, sum of weighted losses, backward, clip, step, schedule. The two
alternate over repeats; each is timed by a hook on its optimizer from the end of the warm-up steps to the
end of its last step. Writes ``benchmarks/results/framework_overhead.{md,json}``.

    python -m benchmarks.framework_overhead [--steps 40] [--batch-size 32] [--repeats 3] [--quick]
        [-- extra vlp-train overrides, e.g. model=vilt_tiny]
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch

from benchmarks.common import (
    StepClock,
    build_system,
    compose_config,
    interleaved_rates,
    lightning_samples_per_second,
    machine,
    median,
    random_caption_batches,
    training_benchmark_args,
    write_results,
)
from vlp.system import VLPSystem

VOCAB_SIZE = 1000


def plain_pytorch_loop(
    system: VLPSystem, batches: list[dict[str, torch.Tensor]], clip_norm: float
) -> StepClock:
    """The hand-written loop over the system's model and objectives, optimised exactly as vlp does."""
    model, objectives = system.model, system.objectives
    model.train()
    objectives.train()
    optimizer = system.optimizer_factory(system._parameter_groups())
    scheduler = system.scheduler_factory(optimizer, total_steps=len(batches))
    parameters = [p for p in system.parameters() if p.requires_grad]
    clock = StepClock()
    clock.attach(optimizer)
    for batch in batches:
        encoded = model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        loss = sum(
            objective.weight * objective(batch, encoded, model).loss for objective in objectives.values()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
        optimizer.step()
        scheduler.step()
    return clock


def main(argv: list[str] | None = None) -> dict:
    args = training_benchmark_args(__doc__.splitlines()[0], 32, 4, argv)
    cfg = compose_config(["system.scheduler.warmup_steps=10", *args.overrides])
    pl.seed_everything(0, workers=True)
    reference = build_system(cfg, VOCAB_SIZE)
    image_size = reference.model.vision.image_size
    batches = random_caption_batches(args.steps, args.batch_size, image_size, 32, VOCAB_SIZE)
    clip_norm = float(cfg.trainer.gradient_clip_val)

    def run_vlp() -> float:
        return lightning_samples_per_second(reference, cfg, batches, args.warmup_steps)

    def run_plain() -> float:
        clock = plain_pytorch_loop(copy.deepcopy(reference), batches, clip_norm)
        return clock.samples_per_second(args.batch_size, args.warmup_steps)

    rates = interleaved_rates(
        {"plain PyTorch loop": run_plain, "vlp (Lightning Trainer)": run_vlp}, args.repeats
    )
    plain = median(rates["plain PyTorch loop"])
    rows = [
        {"loop": name, "samples_per_s_median": round(median(values), 2),
         "samples_per_s_all": [round(v, 2) for v in values],
         "ratio_vs_plain": round(median(values) / plain, 3)}
        for name, values in rates.items()
    ]  # fmt: skip
    settings = {
        "model": cfg.model.get("family", "albef")
        + f" ({sum(p.numel() for p in reference.model.parameters()):,} "
        "parameters)",
        "objectives": list(cfg.objectives),
        "precision": str(cfg.trainer.precision),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "timed_steps": args.steps - args.warmup_steps,
        "repeats": args.repeats,
        "overrides": args.overrides,
    }
    payload = {"machine": machine(), "settings": settings, "rows": rows}
    lines = [
        "# Framework overhead: vlp's Lightning step vs a plain PyTorch loop",
        "",
        "Same model, objectives, optimizer groups, schedule, clipping and in-memory batches.",
        f"Machine: {payload['machine']}. Model: {settings['model']}; objectives "
        f"{', '.join(settings['objectives'])}; precision {settings['precision']}; batch {args.batch_size}; "
        f"{settings['timed_steps']} timed steps "
        f"after {args.warmup_steps} warm-up steps; median of {args.repeats} interleaved repeats.",
        "",
        "| loop | samples/s (median) | all repeats | ratio vs plain loop |",
        "|---|---|---|---|",
    ]
    for row in rows:
        repeats = ", ".join(map(str, row["samples_per_s_all"]))
        lines.append(
            f"| {row['loop']} | {row['samples_per_s_median']} | {repeats} | {row['ratio_vs_plain']} |"
        )
    write_results("framework_overhead", payload, lines, **({"out_dir": args.out} if args.out else {}))
    return payload


if __name__ == "__main__":
    main()

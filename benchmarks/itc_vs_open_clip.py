"""Contrastive (ITC-only) training throughput: vlp's CLIP family vs open_clip, same small dual encoder.

vlp trains ``experiment=pretrain_clip`` (``model=clip_tiny``: a timm QuickGELU ViT and a causal CLIP text
transformer from transformers) with ``trainer.fit`` and the callbacks and logger vlp-train uses;
open_clip trains its own ``CLIP`` model of the same shape (widths, depths, heads, MLP ratio, patch size,
image size, context length, vocabulary, embedding size: the parameter counts are printed side by side)
with ``open_clip_train.train.train_one_epoch``, its training loop, and its ``ClipLoss``. Both use AdamW
with the same learning rate, betas, epsilon and weight decay (biases and norms exempt), a warm-up +
cosine schedule, gradient clipping at 1.0 and fp32, on the same in-memory batches. They alternate over
repeats; each is timed by a hook on its optimizer from the end of the warm-up steps to the end of its
last step. Writes ``benchmarks/results/itc_vs_open_clip.{md,json}``.

    python -m benchmarks.itc_vs_open_clip [--steps 40] [--batch-size 128] [--repeats 3] [--quick]
"""

from __future__ import annotations

import copy
import logging

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

VOCAB_SIZE = 1000
TEXT_LENGTH = 32


def vlp_clip_config(overrides: list[str]):
    return compose_config(
        [
            "experiment=pretrain_clip",
            f"model.text.config.max_position_embeddings={TEXT_LENGTH}",
            "system.scheduler.warmup_steps=10",
            *overrides,
        ]
    )


def open_clip_model(cfg) -> torch.nn.Module:
    """open_clip's CLIP with the shape of the vlp config's towers."""
    import open_clip

    vision, text = cfg.model.vision, cfg.model.text.config
    width, depth, heads = (vision.model_kwargs[key] for key in ("embed_dim", "depth", "num_heads"))
    return open_clip.CLIP(
        embed_dim=cfg.model.embed_dim,
        vision_cfg={"image_size": vision.image_size, "layers": depth, "width": width,
                    "head_width": width // heads, "patch_size": 16, "mlp_ratio": 4.0},
        text_cfg={"context_length": TEXT_LENGTH, "vocab_size": VOCAB_SIZE, "width": text.hidden_size,
                  "heads": text.num_attention_heads, "layers": text.num_hidden_layers,
                  "mlp_ratio": text.intermediate_size / text.hidden_size},
        quick_gelu=True,
        output_dict=True,  # what open_clip_train's loop reads (its main creates models so)
    )  # fmt: skip


def open_clip_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW grouped as open_clip_train's main does (gains, biases and the logit scale not decayed)."""
    optimizer_cfg = cfg.system.optimizer
    exempt = [p for n, p in model.named_parameters() if p.ndim < 2 or "bias" in n or "logit_scale" in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim < 2 or "bias" in n or "logit_scale" in n)]
    return torch.optim.AdamW(
        [{"params": exempt, "weight_decay": 0.0}, {"params": rest, "weight_decay": cfg.system.weight_decay}],
        lr=optimizer_cfg.lr,
        betas=tuple(optimizer_cfg.betas),
    )


def run_open_clip(model: torch.nn.Module, cfg, batches: list[dict[str, torch.Tensor]]) -> StepClock:
    """One epoch of open_clip_train's own loop over the batches."""
    import open_clip
    from open_clip_train.data import DataInfo
    from open_clip_train.params import parse_args
    from open_clip_train.scheduler import cosine_lr
    from open_clip_train.train import train_one_epoch

    args = parse_args(["--batch-size", str(batches[0]["input_ids"].shape[0])])
    args.device, args.precision, args.grad_clip_norm = "cpu", "fp32", float(cfg.trainer.gradient_clip_val)
    args.rank, args.local_rank, args.world_size, args.distributed, args.horovod = 0, 0, 1, False, False
    args.log_every_n_steps, args.wandb, args.distill = 10, False, False
    pairs = [(batch["pixel_values"], batch["input_ids"]) for batch in batches]
    loader = torch.utils.data.DataLoader(pairs, batch_size=None, shuffle=False)
    loader.num_batches, loader.num_samples = len(pairs), len(pairs) * args.batch_size
    optimizer = open_clip_optimizer(model, cfg)
    scheduler = cosine_lr(optimizer, cfg.system.optimizer.lr, cfg.system.scheduler.warmup_steps, len(pairs))
    clock = StepClock()
    clock.attach(optimizer)
    loss = open_clip.ClipLoss()
    train_one_epoch(model, {"train": DataInfo(loader)}, loss, 0, optimizer, None, scheduler, None, args)
    return clock


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv: list[str] | None = None) -> dict:
    args = training_benchmark_args(__doc__.splitlines()[0], 128, 8, argv)
    logging.getLogger().setLevel(logging.WARNING)  # open_clip's per-step log lines
    cfg = vlp_clip_config(args.overrides)
    pl.seed_everything(0, workers=True)
    vlp_reference = build_system(cfg, VOCAB_SIZE)
    open_clip_reference = open_clip_model(cfg)
    image_size = vlp_reference.model.vision.image_size
    batches = random_caption_batches(args.steps, args.batch_size, image_size, TEXT_LENGTH, VOCAB_SIZE)
    for batch in batches:  # full-length captions: open_clip's text tower always runs its whole context
        batch["attention_mask"].fill_(1)

    def run_vlp() -> float:
        return lightning_samples_per_second(vlp_reference, cfg, batches, args.warmup_steps)

    def run_reference() -> float:
        clock = run_open_clip(copy.deepcopy(open_clip_reference), cfg, batches)
        return clock.samples_per_second(args.batch_size, args.warmup_steps)

    names = {"open_clip (train_one_epoch)": run_reference, "vlp (experiment=pretrain_clip)": run_vlp}
    rates = interleaved_rates(names, args.repeats)
    baseline = median(rates["open_clip (train_one_epoch)"])
    counts = {
        "open_clip (train_one_epoch)": parameter_count(open_clip_reference),
        # the temperature lives in vlp's ITC objective, open_clip's in the model: count both
        "vlp (experiment=pretrain_clip)": parameter_count(vlp_reference),
    }
    rows = [
        {"trainer": name, "parameters": counts[name], "samples_per_s_median": round(median(values), 2),
         "samples_per_s_all": [round(v, 2) for v in values],
         "ratio_vs_open_clip": round(median(values) / baseline, 3)}
        for name, values in rates.items()
    ]  # fmt: skip
    settings = {
        "batch_size": args.batch_size,
        "steps": args.steps,
        "timed_steps": args.steps - args.warmup_steps,
        "repeats": args.repeats,
        "image_size": image_size,
        "text_length": TEXT_LENGTH,
        "vocab_size": VOCAB_SIZE,
        "precision": "fp32",
        "overrides": args.overrides,
    }
    payload = {"machine": machine(), "settings": settings, "rows": rows}
    lines = [
        "# ITC-only training throughput: vlp (CLIP family) vs open_clip, the same small dual encoder",
        "",
        f"Machine: {payload['machine']}. {image_size} px images, {TEXT_LENGTH}-token captions, batch "
        f"{args.batch_size}, fp32; {settings['timed_steps']} timed steps after {args.warmup_steps} warm-up "
        f"steps; median of {args.repeats} interleaved repeats.",
        "",
        "| trainer | parameters | samples/s (median) | all repeats | ratio vs open_clip |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        repeats = ", ".join(map(str, row["samples_per_s_all"]))
        lines.append(
            f"| {row['trainer']} | {row['parameters']:,} | {row['samples_per_s_median']} | {repeats} | "
            f"{row['ratio_vs_open_clip']} |"
        )
    write_results("itc_vs_open_clip", payload, lines, **({"out_dir": args.out} if args.out else {}))
    return payload


if __name__ == "__main__":
    main()

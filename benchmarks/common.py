"""What every benchmark shares: where results go, how the machine is described, how repeats are timed."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig

if TYPE_CHECKING:
    from vlp.system import VLPSystem

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """The machine in words: CPU count, and the GPU when one is used."""
    words = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    if torch.cuda.is_available():
        words += f", {torch.cuda.get_device_name()}"
    return words


def write_results(name: str, payload: dict[str, Any], markdown: list[str], out_dir: Path = RESULTS) -> None:
    """``<out_dir>/<name>.json`` and ``<name>.md``; the markdown is printed too."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps({"benchmark": name, **payload}, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text("\n".join(markdown) + "\n")
    print("\n".join(markdown))


def interleaved_rates(
    contestants: dict[str, Callable[[], float]], repeats: int, warmup_rounds: int = 1
) -> dict[str, list[float]]:
    """Run each contestant (a callable returning a rate, e.g. samples/s) ``repeats`` times, alternating
    between them, so that drift in machine load hits all of them alike. ``warmup_rounds`` untimed rounds
    go first: the process's first passes pay one-off costs (kernel selection, allocator growth) that
    would otherwise land on whichever contestant runs first."""
    for _ in range(warmup_rounds):
        for run in contestants.values():
            run()
    rates: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(repeats):
        for name, run in contestants.items():
            rates[name].append(run())
    return rates


def median(values: list[float]) -> float:
    return statistics.median(values)


class StepClock:
    """Wall-clock time at the end of every optimizer step, from a hook on the optimizer itself, so that
    Lightning, a plain loop and open_clip's loop are timed at exactly the same point of their step."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.register_step_post_hook(lambda *_: self.stamps.append(time.perf_counter()))

    def samples_per_second(self, batch_size: int, warmup_steps: int) -> float:
        """Samples/s over the steps after ``warmup_steps``: from the end of step ``warmup_steps`` to the
        end of the last one (start-up, the first steps' allocations and the loop's teardown left out)."""
        timed = self.stamps[warmup_steps - 1 :]
        if len(timed) < 2:
            raise RuntimeError(f"{len(self.stamps)} optimizer steps timed; need more than {warmup_steps}")
        return (len(timed) - 1) * batch_size / (timed[-1] - timed[0])


def compose_config(overrides: list[str]) -> DictConfig:
    """The config ``vlp-train <overrides>`` would run with."""
    from hydra import compose, initialize_config_dir

    from vlp.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=["run_dir=unused", *overrides])


def build_system(cfg: DictConfig, vocab_size: int) -> VLPSystem:
    """The VLPSystem vlp-train would build from ``cfg``, for objectives that need nothing from the data
    (ITC, ITM, MLM): model, objectives and optimizer exactly as configured, no datamodule."""
    from hydra.utils import instantiate

    from vlp.build import build_model

    model = build_model(cfg, vocab_size=vocab_size)
    objectives = {name: factory(dims=model.dims) for name, factory in instantiate(cfg.objectives).items()}
    return instantiate(cfg.system, model=model, objectives=objectives, evaluators={})


def random_caption_batches(
    count: int, batch_size: int, image_size: int, text_length: int, vocab_size: int, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Pretraining batches in the collator's format (``vlp.types``), random but shaped like real ones:
    captions of varying length, 15% of their tokens masked for MLM, unique image ids."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for index in range(count):
        ids = torch.randint(5, vocab_size, (batch_size, text_length), generator=generator)
        lengths = torch.randint(text_length // 2, text_length + 1, (batch_size, 1), generator=generator)
        mask = (torch.arange(text_length)[None, :] < lengths).long()
        ids = ids * mask
        masked = (torch.rand(ids.shape, generator=generator) < 0.15) & mask.bool()
        batches.append(
            {
                "pixel_values": torch.randn(batch_size, 3, image_size, image_size, generator=generator),
                "input_ids": ids,
                "attention_mask": mask,
                "mlm_input_ids": torch.where(masked, torch.full_like(ids, 4), ids),
                "mlm_labels": torch.where(masked, ids, torch.full_like(ids, -100)),
                "image_id": torch.arange(batch_size) + index * batch_size,
            }
        )
    return batches


def fit_with_lightning(
    system: VLPSystem, cfg: DictConfig, batches: list[dict[str, torch.Tensor]], log_dir: Path
) -> StepClock:
    """``trainer.fit`` over in-memory batches with the configured Trainer and the callbacks and CSV logger
    vlp-train uses; checkpointing off (the loops it is compared with save nothing either)."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.loggers import CSVLogger

    clock = StepClock()

    class AttachClock(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            clock.attach(trainer.optimizers[0])

    callbacks = [
        instantiate(spec)
        for name, spec in cfg.callbacks.items()
        if spec is not None and "checkpoint" not in name
    ]
    trainer = instantiate(
        cfg.trainer,
        logger=CSVLogger(str(log_dir)),
        callbacks=[*callbacks, AttachClock()],
        max_steps=len(batches),
        max_epochs=-1,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(log_dir),
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(system, train_dataloaders=loader)
    return clock


def training_benchmark_args(
    description: str, batch_size: int, quick_batch_size: int, argv: list[str] | None
) -> argparse.Namespace:
    """The command line the training-throughput benchmarks share; ``--quick`` is the tests' setting."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a few tiny steps (the tests' setting)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("overrides", nargs="*", help="vlp-train overrides (model, objectives, trainer)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup_steps, args.batch_size, args.repeats = 6, 2, quick_batch_size, 1
    return args


def lightning_samples_per_second(
    system: VLPSystem, cfg: DictConfig, batches: list[dict[str, torch.Tensor]], warmup_steps: int
) -> float:
    """One timed :func:`fit_with_lightning` of a fresh copy of ``system`` (logs in a temporary folder)."""
    import copy
    import tempfile

    with tempfile.TemporaryDirectory() as log_dir:
        clock = fit_with_lightning(copy.deepcopy(system), cfg, batches, Path(log_dir))
    return clock.samples_per_second(batches[0]["input_ids"].shape[0], warmup_steps)

"""vlp-plot: a run's training curves from its logs, as one PNG.

Reads the CSV logger's ``<run>/csv/metrics.csv`` (the default logger) or, failing that, TensorBoard
event files under ``<run>/tensorboard``. Plots the losses (training per step, validation per epoch) and
the run's ``monitor`` metric by default, one panel per metric, x = optimizer step::

    vlp-plot outputs/demo/<time>/pretrain                          # -> <run>/curves.png
    vlp-plot RUN --metrics 'val/retrieval/*_r_mean' 'train/itm/*' --out itm.png
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import math
import sys
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

Series = dict[str, list[tuple[int, float]]]  # metric -> [(step, value)] in step order

DEFAULT_PATTERNS = ("train/loss_step", "train/*/loss_step", "val/loss", "val/*/loss")


def read_csv_metrics(path: Path) -> Series:
    series: Series = defaultdict(list)
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            if not row.get("step"):
                continue
            step = int(float(row["step"]))
            for name, value in row.items():
                if name in ("step", "epoch") or value in (None, ""):
                    continue
                series[name].append((step, float(value)))
    return dict(series)


def read_tensorboard(folder: Path) -> Series:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: Series = defaultdict(list)
    for events in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            series[tag] += [(int(e.step), float(e.value)) for e in accumulator.Scalars(tag)]
    return {name: sorted(points) for name, points in series.items()}


def read_run(run_dir: Path) -> Series:
    """Every logged scalar of a run folder, from whichever logger wrote it."""
    csv_files = sorted(run_dir.glob("csv/**/metrics.csv"))
    if csv_files:
        series: Series = defaultdict(list)
        for path in csv_files:  # a resumed run can have several versions
            for name, points in read_csv_metrics(path).items():
                series[name] += points
        return {name: sorted(points) for name, points in series.items()}
    if any(run_dir.glob("tensorboard/**/events.out.tfevents.*")):
        return read_tensorboard(run_dir / "tensorboard")
    raise FileNotFoundError(f"{run_dir}: no csv/metrics.csv or tensorboard event files (was logger=none?)")


def choose(series: Series, patterns: list[str]) -> list[str]:
    """Metric names matching the patterns, in pattern order, each once."""
    chosen: list[str] = []
    for pattern in patterns:
        chosen += [n for n in sorted(series) if fnmatch.fnmatchcase(n, pattern) and n not in chosen]
    return chosen


def plot(series: Series, names: list[str], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a training node
    import matplotlib.pyplot as plt

    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names, strict=False):
        steps, values = zip(*series[name], strict=True)
        axis.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(names) :]:
        axis.set_visible(False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlp-plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a vlp-train run folder")
    parser.add_argument(
        "--metrics", nargs="+", help="metric names or glob patterns (default: losses + monitor)"
    )
    parser.add_argument("--out", type=Path, help="the PNG to write (default: RUN_DIR/curves.png)")
    args = parser.parse_args(argv)
    try:
        series = read_run(args.run_dir)
    except FileNotFoundError as error:
        print(f"vlp-plot: {error}", file=sys.stderr)
        return 2
    patterns = args.metrics or list(DEFAULT_PATTERNS)
    config = args.run_dir / "config.yaml"
    if not args.metrics and config.is_file():
        monitor = OmegaConf.load(config).get("monitor")
        patterns += [monitor] if monitor else []
    names = choose(series, patterns)
    if not names:
        print(f"vlp-plot: no logged metric matches {' '.join(patterns)}; logged: {', '.join(sorted(series))}",
              file=sys.stderr)  # fmt: skip
        return 2
    out = args.out or args.run_dir / "curves.png"
    plot(series, names, out, title=str(args.run_dir))
    print(f"vlp-plot: {len(names)} curves -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

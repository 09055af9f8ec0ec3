"""Converter throughput: images/s of `vlp-shards coco` with 1 vs 2 workers on the synthetic benchmark.

Both settings run in the same process, interleaved over several repeats (these machines are noisy, so
the ratio measured side by side is the number to trust, not the absolute rate). Each conversion reads,
fully decodes and checks every image and writes the shards (--overwrite, so nothing is skipped as up to
date). Writes ``benchmarks/results/convert_throughput.{md,json}``.

    python benchmarks/convert_throughput.py [--images 2000] [--image-size 64 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from vlp.data.convert.coco import convert_karpathy
from vlp.data.synthetic import generate_captions_benchmark

RESULTS = Path(__file__).resolve().parent / "results"


def time_conversion(karpathy_json: Path, out: Path, workers: int) -> tuple[float, int]:
    started = time.perf_counter()
    report = convert_karpathy(karpathy_json, karpathy_json.parent, out, shard_size=500, workers=workers,
                              overwrite=True)  # fmt: skip
    return time.perf_counter() - started, sum(report.written.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--image-size", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.image_size:
            raw = Path(tmp) / f"raw{size}"
            karpathy_json = generate_captions_benchmark(raw, args.images, 0, 0, image_size=size, seed=0)
            rates: dict[int, list[float]] = {w: [] for w in args.workers}
            for _ in range(args.repeats):
                for workers in args.workers:  # interleaved, so drift in machine load hits both alike
                    seconds, written = time_conversion(karpathy_json, Path(tmp) / "out", workers)
                    rates[workers].append(written / seconds)
            base = statistics.median(rates[args.workers[0]])
            for workers in args.workers:
                median = statistics.median(rates[workers])
                rows.append({"image_size": size, "workers": workers, "images": args.images,
                             "images_per_s_median": round(median, 1),
                             "images_per_s_all": [round(r, 1) for r in rates[workers]],
                             "speedup_vs_first": round(median / base, 2)})  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    payload = {"benchmark": "convert_throughput", "machine": machine, "repeats": args.repeats, "rows": rows}
    (RESULTS / "convert_throughput.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Converter throughput (`vlp-shards coco`, synthetic JPEGs, read + full decode + write)",
        "",
        f"Machine: {machine}; {args.images} images; median of {args.repeats} interleaved repeats.",
        "",
        "| image size | workers | images/s (median) | all repeats | speed-up vs 1 worker |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        repeats = ", ".join(map(str, row["images_per_s_all"]))
        lines.append(f"| {row['image_size']} px | {row['workers']} | {row['images_per_s_median']} | "
                     f"{repeats} | {row['speedup_vs_first']}x |")  # fmt: skip
    (RESULTS / "convert_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

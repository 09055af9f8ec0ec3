"""vlp-shards: convert official dataset files into webdataset shards."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlp.data.convert.coco import convert_karpathy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vlp-shards", description=__doc__)
    sources = parser.add_subparsers(dest="source", required=True)

    coco = sources.add_parser("coco", help="COCO / vlp-synth captions in the Karpathy json format")
    coco.add_argument("--karpathy-json", type=Path, required=True, help="dataset_coco.json")
    coco.add_argument("--image-root", type=Path, required=True, help="folder holding <filepath>/<filename>")
    coco.add_argument("--out", type=Path, required=True)
    coco.add_argument("--shard-size", type=int, default=1000, help="samples per tar shard")
    coco.add_argument("--workers", type=int, default=2, help="threads reading and checking images")

    args = parser.parse_args(argv)
    if args.shard_size < 1:
        parser.error(f"--shard-size must be at least 1, got {args.shard_size}")
    report = convert_karpathy(args.karpathy_json, args.image_root, args.out, args.shard_size, args.workers)
    print(f"vlp-shards {args.source}: wrote {args.out}")
    print(report.summary())


if __name__ == "__main__":
    main()

"""vlp-shards: convert official dataset files into webdataset shards (one schema for every task).

    vlp-shards coco --karpathy-json dataset_coco.json --image-root COCO --out data/coco/shards
    vlp-shards coco --captions-json captions_train2014.json captions_val2014.json --image-root COCO --out ...
    vlp-shards flickr30k --karpathy-json dataset_flickr30k.json --image-root flickr30k-images --out ...
    vlp-shards vqa --root VQA --image-root COCO --splits train2014 val2014 test-dev2015 --out ...
    vlp-shards nlvr2 --json-dir nlvr/nlvr2/data --image-root NLVR2_IMAGES --out ...
    vlp-shards img2dataset --input cc3m_img2dataset --mode reindex --out ...

Re-running over an existing output rewrites nothing that is up to date and never duplicates data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlp.data.convert.coco import convert_karpathy, convert_official_captions
from vlp.data.convert.common import ConversionReport, console
from vlp.data.convert.img2dataset import convert_img2dataset
from vlp.data.convert.nlvr2 import convert_nlvr2
from vlp.data.convert.vqa import convert_vqa


def _common_arguments(parser: argparse.ArgumentParser, default_shard_size: int = 1000) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per split)")
    parser.add_argument("--shard-size", type=int, default=default_shard_size, help="samples per tar shard")
    parser.add_argument("--workers", type=int, default=2, help="threads reading and decoding images")
    parser.add_argument("--overwrite", action="store_true", help="redo splits that are already up to date")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlp-shards", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sources = parser.add_subparsers(dest="source", required=True)

    coco = sources.add_parser("coco", help="COCO captions: Karpathy dataset_coco.json or captions_*.json")
    inputs = coco.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--karpathy-json", type=Path, help="dataset_coco.json (Karpathy splits)")
    inputs.add_argument(
        "--captions-json", type=Path, nargs="+", help="official captions_<subtype>.json files"
    )
    coco.add_argument("--image-root", type=Path, required=True, help="folder holding train2014/, val2014/")
    _common_arguments(coco)

    flickr = sources.add_parser("flickr30k", help="Flickr30k captions: Karpathy dataset_flickr30k.json")
    flickr.add_argument("--karpathy-json", type=Path, required=True, help="dataset_flickr30k.json")
    flickr.add_argument("--image-root", type=Path, required=True, help="folder holding the .jpg files")
    _common_arguments(flickr)

    vqa = sources.add_parser("vqa", help="VQA v2 questions + annotations")
    vqa.add_argument(
        "--root", type=Path, required=True, help="folder with the v2_*_questions/annotations json"
    )
    vqa.add_argument(
        "--image-root", type=Path, help="folder holding train2014/ val2014/ test2015/ (default --root)"
    )
    vqa.add_argument("--splits", nargs="+", default=["train2014", "val2014"], help="subtypes to convert")
    vqa.add_argument("--vocab-splits", nargs="+", help="subtypes the answer vocabulary is built from "
                     "(default: the converted splits with annotations)")  # fmt: skip
    vqa.add_argument(
        "--min-answer-count", type=int, default=9, help="keep answers seen this often (VQA v2: 9)"
    )
    _common_arguments(vqa)

    nlvr2 = sources.add_parser("nlvr2", help="NLVR2 jsonl + image folders")
    nlvr2.add_argument(
        "--json-dir", type=Path, required=True, help="folder with train.json, dev.json, test1.json"
    )
    nlvr2.add_argument("--image-root", type=Path, required=True, help="folder holding train/ dev/ test1/")
    nlvr2.add_argument("--splits", nargs="+", default=["train", "dev", "test1"])
    _common_arguments(nlvr2)

    web = sources.add_parser("img2dataset", help="img2dataset output folder (CC3M, CC12M, LAION...)")
    web.add_argument("--input", type=Path, required=True, help="folder with 00000.tar, 00000_stats.json, ...")
    web.add_argument(
        "--mode",
        choices=("reindex", "passthrough"),
        default="reindex",
        help="reindex: check and rewrite; passthrough: index the original tars in place",
    )
    web.add_argument("--split", default="train", help="split name under --out")
    web.add_argument("--name", default="img2dataset", help="dataset name recorded in the samples (e.g. cc3m)")
    _common_arguments(web, default_shard_size=10000)
    return parser


def run(args: argparse.Namespace) -> ConversionReport:
    common = {"shard_size": args.shard_size, "workers": args.workers, "overwrite": args.overwrite}
    if args.source == "coco" and args.captions_json:
        return convert_official_captions(args.captions_json, args.image_root, args.out, **common)
    if args.source in ("coco", "flickr30k"):
        return convert_karpathy(args.karpathy_json, args.image_root, args.out, source=args.source, **common)
    if args.source == "vqa":
        return convert_vqa(
            args.root,
            args.out,
            args.splits,
            args.image_root,
            args.vocab_splits,
            args.min_answer_count,
            **common,
        )
    if args.source == "nlvr2":
        return convert_nlvr2(args.json_dir, args.image_root, args.out, args.splits, **common)
    return convert_img2dataset(args.input, args.out, args.split, args.mode, args.name, **common)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.shard_size < 1:
        parser.error(f"--shard-size must be at least 1, got {args.shard_size}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    try:
        report = run(args)
    except (FileNotFoundError, ValueError) as error:
        console.print(f"[red]vlp-shards {args.source}: {error}[/red]", soft_wrap=True)  # one line in logs
        raise SystemExit(1) from error
    print(f"vlp-shards {args.source}: wrote {args.out}")
    print(report.summary())


if __name__ == "__main__":
    main()

"""Data pipeline throughput: samples/s of vlp's training dataloader beside its decode ceiling and open_clip's.

Three pipelines read the same img2dataset-style shards (``<key>.jpg`` + ``<key>.txt`` + ``<key>.json``,
synthetic scenes from vlp-synth) with the same number of DataLoader workers, batch size and image size:

- **vlp**: ``CaptionDataModule.train_dataloader()`` built from the ``data=cc3m`` config as ``vlp-train``
  would (the tars indexed in place with ``vlp-shards img2dataset --mode passthrough``, a WordPiece
  tokenizer trained with vlp-tokenizer); it reads tar members, shuffles, parses the json, decodes, applies
  the timm train transform, then tokenizes and masks (MLM) per batch.
- **decode limit**: the same decode (``vlp.data.images.decode_rgb``) and the same transform (built by the
  datamodule method that train_dataloader() calls) in a map-style dataset over image bytes held in
  memory; default collate, no text. vlp should reach at least 0.9 of it.
- **open_clip**: ``open_clip_train.data.get_wds_dataset`` (resampled shards, like vlp's default) with
  ``open_clip.image_transform`` at the same crop scale and open_clip's own BPE tokenizer. vlp should
  reach at least 1.0x of it.

Each repeat builds each DataLoader afresh, skips its first ``--warmup-batches`` (worker start-up, shuffle
buffer fill) and times the next ``--batches``; the pipelines alternate within every repeat, so drift in
machine load hits them alike. Besides samples/s, the CPU time the workers and the consuming process spend
per sample is reported: on a shared machine it is the steadier measure of the same work. open_clip's
data code runs unchanged except for one adapter to the webdataset version vlp pins (see
:func:`drop_shard_end_markers_for_open_clip`). Writes ``benchmarks/results/data_pipeline.{md,json}``.

    python -m benchmarks.data_pipeline [--images 3000] [--jpeg-size 256] [--image-size 224]
        [--batch-size 64] [--workers 2] [--batches 60] [--warmup-batches 4] [--repeats 5] [--out DIR]
    python -m benchmarks.data_pipeline --quick   # 100 images of 64 px, 1 worker, 1 repeat: a smoke test
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import open_clip
import open_clip_train.data
import torch
import webdataset as wds
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from open_clip_train.data import get_wds_dataset
from open_clip_train.params import parse_args as open_clip_parse_args
from torch.utils.data import DataLoader, Dataset, RandomSampler

from benchmarks.common import RESULTS, interleaved_rates, machine, median, write_results
from vlp.data.convert.cli import main as vlp_shards
from vlp.data.datamodule import CaptionDataModule
from vlp.data.images import decode_rgb
from vlp.data.synthetic import generate_captions_benchmark
from vlp.data.tokenizer import karpathy_train_captions, train_wordpiece
from vlp.train import CONFIG_DIR

VLP, DECODE_LIMIT, OPEN_CLIP = "vlp", "decode limit", "open_clip"
# Both models normalise with CLIP's statistics here; the values do not change the cost.
MEAN, STD = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
SAMPLES_PER_SHARD = 500
TOKENIZER_VOCAB = 1000  # vlp-tokenizer's default

WHAT_EACH_DOES = (
    "Per sample, **vlp** reads the tar members (jpg, txt, json), passes them through a seeded shuffle "
    "buffer, parses the json (download status), decodes the JPEG to RGB with `decode_rgb`, applies the "
    "timm train transform (random resized crop, bicubic, to tensor, normalise) and, per batch, tokenizes "
    "one caption per image (HF fast WordPiece, max 40 tokens) and draws MLM masks. **open_clip** reads the "
    "same members, shuffles, decodes every member (`wds.decode('pilrgb')`: JPEG to RGB, txt, json), "
    "applies its own train transform (random resized crop at the same scale, bicubic, to tensor, "
    "normalise) and tokenizes each caption with its BPE tokenizer (77 tokens). The **decode limit** only "
    "decodes and transforms, with vlp's own function and the datamodule's own transform, from bytes "
    "already in memory, in a map-style dataset with the default collate: no tar reading, shuffle buffer, "
    "json or text. All three run the same worker count and batch size over the same images and yield "
    "full batches only."
)


@dataclass(frozen=True)
class Settings:
    images: int
    jpeg_size: int  # the stored JPEGs (img2dataset resizes downloads to a fixed size)
    image_size: int  # the training crop
    batch_size: int
    workers: int
    warmup_batches: int
    batches: int  # timed per repeat
    repeats: int

    @property
    def batches_per_loader(self) -> int:
        """What each DataLoader must be able to give: warm-up, timed batches, and one spare per worker so
        that no pipeline is timed across the end of its epoch."""
        return self.warmup_batches + self.batches + max(1, self.workers)


DEFAULT = Settings(images=3000, jpeg_size=256, image_size=224, batch_size=64, workers=2,
                   warmup_batches=4, batches=60, repeats=5)  # fmt: skip
QUICK = Settings(images=100, jpeg_size=64, image_size=64, batch_size=16, workers=1,
                 warmup_batches=1, batches=4, repeats=1)  # fmt: skip


# --- the shards ------------------------------------------------------------------------------------------
def img2dataset_columns(key: str, caption: str, jpeg: bytes, size: int, filename: str) -> dict[str, Any]:
    """The ``<key>.json`` img2dataset writes for a successful download."""
    return {
        "caption": caption,
        "url": f"https://images.example.com/{filename}",
        "key": key,
        "status": "success",
        "error_message": None,
        "width": size,
        "height": size,
        "original_width": size,
        "original_height": size,
        "exif": None,
        "sha256": hashlib.sha256(jpeg).hexdigest(),
    }


def write_img2dataset_folder(karpathy_json: Path, folder: Path, size: int) -> list[Path]:
    """The synthetic images as an img2dataset output folder: ``00000.tar`` ... with one caption each
    (img2dataset keeps the one caption of its input row)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = json.loads(karpathy_json.read_text())["images"]
    shards = []
    for start in range(0, len(entries), SAMPLES_PER_SHARD):
        shard = start // SAMPLES_PER_SHARD
        path = folder / f"{shard:05d}.tar"
        with wds.TarWriter(str(path)) as tar:
            for offset, entry in enumerate(entries[start : start + SAMPLES_PER_SHARD]):
                key = f"{shard:05d}{offset:04d}"  # img2dataset's key: shard number, then index in shard
                jpeg = (karpathy_json.parent / entry["filepath"] / entry["filename"]).read_bytes()
                caption = entry["sentences"][0]["raw"]
                columns = img2dataset_columns(key, caption, jpeg, size, entry["filename"])
                tar.write({"__key__": key, "jpg": jpeg, "txt": caption.encode(), "json": json.dumps(columns)})
        shards.append(path)
    return shards


@dataclass(frozen=True)
class Prepared:
    data_dir: Path  # what conf/data/cc3m.yaml calls ${data_dir}
    shards: list[Path]  # the img2dataset tars every pipeline reads
    tokenizer: Path


def prepare(root: Path, settings: Settings) -> Prepared:
    """Synthetic images -> img2dataset tars -> vlp passthrough index (where data=cc3m looks) + tokenizer."""
    raw = root / "raw"
    karpathy_json = generate_captions_benchmark(raw, settings.images, 0, 0, image_size=settings.jpeg_size,
                                                seed=0)  # fmt: skip
    data_dir = root / "data"
    img2dataset_dir = data_dir / "cc3m" / "img2dataset"
    shards = write_img2dataset_folder(karpathy_json, img2dataset_dir, settings.jpeg_size)
    vlp_shards(["img2dataset", "--input", str(img2dataset_dir), "--mode", "passthrough", "--name", "cc3m",
                "--out", str(data_dir / "cc3m" / "shards")])  # fmt: skip
    tokenizer = root / "tokenizer"
    train_wordpiece(karpathy_train_captions(karpathy_json), TOKENIZER_VOCAB).save_pretrained(tokenizer)
    return Prepared(data_dir=data_dir, shards=shards, tokenizer=tokenizer)


# --- the three pipelines ----------------------------------------------------------------------------------
def vlp_datamodule(prepared: Prepared, settings: Settings) -> CaptionDataModule:
    """``data=cc3m`` as ``vlp-train data=cc3m data_dir=... data.tokenizer=...`` composes it, then the image
    settings vlp.build passes from the vision tower."""
    epoch_samples = settings.batches_per_loader * settings.batch_size
    overrides = [
        "data=cc3m",
        f"data_dir={prepared.data_dir}",
        f"data.tokenizer={prepared.tokenizer}",
        f"data.batch_size={settings.batch_size}",
        f"data.num_workers={settings.workers}",
        f"++data.samples_per_epoch={epoch_samples}",  # cc3m.yaml leaves it unset (= the images)
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    datamodule = instantiate(cfg.data)
    datamodule.set_image_config(settings.image_size, MEAN, STD)
    return datamodule


class DecodeAndTransform(Dataset):
    """Image bytes in memory -> vlp's decode -> the given transform: the per-sample work with nothing else."""

    def __init__(self, images: list[bytes], transform: Callable[[Any], torch.Tensor]) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(decode_rgb(self.images[index]))


def read_jpegs(shards: list[Path]) -> list[bytes]:
    samples = wds.DataPipeline(wds.SimpleShardList([str(s) for s in shards]), wds.tarfile_to_samples())
    return [sample["jpg"] for sample in samples]


def decode_limit_loader(dataset: DecodeAndTransform, settings: Settings) -> DataLoader:
    # Drawn with replacement, like the resampled shard streams of the other two.
    sampler = RandomSampler(dataset, replacement=True,
                            num_samples=settings.batches_per_loader * settings.batch_size)  # fmt: skip
    return DataLoader(dataset, batch_size=settings.batch_size, sampler=sampler, drop_last=True,
                      num_workers=settings.workers, persistent_workers=settings.workers > 0)  # fmt: skip


def drop_shard_end_markers_for_open_clip() -> None:
    """open_clip_train (3.3) asks for webdataset <= 0.2.86. The webdataset vlp pins (1.0.2) ends every
    shard with an empty dict from its tar expander, which open_clip's own grouping step
    (``group_by_keys_nothrow``) fails on with ``KeyError: 'fname'`` at the first shard's end. open_clip
    gets the expander without those markers, as the webdataset it asks for behaves: the same work."""
    open_clip_train.data.tar_file_expander = functools.partial(
        wds.tariterators.tar_file_expander, eof_value=None
    )


def open_clip_loader(prepared: Prepared, settings: Settings, transform: Any, tokenizer: Any) -> DataLoader:
    """open_clip's training loader as ``--dataset-type webdataset --dataset-resampled`` builds it."""
    args = open_clip_parse_args([
        "--train-data", f"{prepared.shards[0].parent}/{{00000..{len(prepared.shards) - 1:05d}}}.tar",
        "--train-num-samples", str(settings.batches_per_loader * settings.batch_size),
        "--dataset-type", "webdataset",
        "--dataset-resampled",
        "--batch-size", str(settings.batch_size),
        "--workers", str(settings.workers),
        "--seed", "0",
    ])  # fmt: skip
    args.world_size = 1  # set by open_clip's main from the launch; one process here
    drop_shard_end_markers_for_open_clip()
    return get_wds_dataset(args, transform, is_train=True, epoch=0, tokenizer=tokenizer).dataloader


# --- timing -----------------------------------------------------------------------------------------------
def worker_cpu_seconds() -> float:
    """User + system CPU time of this process's children (the DataLoader workers), from /proc."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # fields from the 3rd (state) on
        except OSError:  # a process that has just exited
            continue
        if int(fields[1]) == os.getpid():  # the 4th field: parent pid
            ticks += int(fields[11]) + int(fields[12])  # the 14th and 15th: utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """CPU time spent on the pipeline: the workers' and this (the consuming) process's."""
    return worker_cpu_seconds() + time.process_time()


@dataclass(frozen=True)
class Timed:
    samples_per_s: float
    cpu_ms_per_sample: float  # unaffected by other processes on the machine, unlike samples/s


def time_loader(
    make_loader: Callable[[], Iterable], count: Callable[[Any], int], settings: Settings
) -> Timed:
    """``settings.batches`` batches of a fresh loader, timed after its warm-up batches."""
    loader = make_loader()
    batches = iter(loader)
    for _ in range(settings.warmup_batches):
        next(batches)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    samples = sum(count(next(batches)) for _ in range(settings.batches))
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    # Drop the iterator (and with it the workers) before the next pipeline starts, so none shares the CPUs.
    del batches, loader
    gc.collect()
    return Timed(samples_per_s=samples / elapsed, cpu_ms_per_sample=cpu / samples * 1e3)


class Contestants:
    """The three pipelines as ``interleaved_rates`` wants them (callables returning samples/s); the CPU
    cost of every run is kept on the side, in ``cpu_ms``."""

    def __init__(self, prepared: Prepared, settings: Settings) -> None:
        self.settings = settings
        self.cpu_ms: dict[str, list[float]] = {VLP: [], DECODE_LIMIT: [], OPEN_CLIP: []}
        datamodule = vlp_datamodule(prepared, settings)
        vlp_transform = datamodule._transform(train=True)  # what train_dataloader() builds and applies
        in_memory = DecodeAndTransform(read_jpegs(prepared.shards), vlp_transform)
        scale = tuple(datamodule.train_transform_kwargs["scale"])
        open_clip_transform = open_clip.image_transform(settings.image_size, is_train=True, mean=MEAN,
                                                        std=STD, aug_cfg={"scale": scale})  # fmt: skip
        open_clip_tokenizer = open_clip.get_tokenizer("ViT-B-32")  # the bundled BPE vocabulary: no download
        self.loaders: dict[str, tuple[Callable[[], Iterable], Callable[[Any], int]]] = {
            VLP: (datamodule.train_dataloader, lambda batch: batch["pixel_values"].shape[0]),
            DECODE_LIMIT: (lambda: decode_limit_loader(in_memory, settings), lambda batch: batch.shape[0]),
            OPEN_CLIP: (
                lambda: open_clip_loader(prepared, settings, open_clip_transform, open_clip_tokenizer),
                lambda batch: batch[0].shape[0],
            ),
        }

    def run(self, name: str) -> float:
        timed = time_loader(*self.loaders[name], self.settings)
        self.cpu_ms[name].append(timed.cpu_ms_per_sample)
        return timed.samples_per_s

    def rates(self) -> dict[str, list[float]]:
        rates = interleaved_rates(
            {name: functools.partial(self.run, name) for name in self.loaders}, self.settings.repeats
        )
        # interleaved_rates may run untimed warm-up rounds first; keep the CPU cost of the timed ones.
        for name, timed in rates.items():
            self.cpu_ms[name] = self.cpu_ms[name][-len(timed) :]
        return rates


# --- report -----------------------------------------------------------------------------------------------
def ratios(medians: dict[str, float], higher_is_faster: bool) -> dict[str, dict[str, float]]:
    """Each pipeline's speed relative to the decode limit and to open_clip (above 1: faster)."""

    def speed_ratio(name: str, reference: str) -> float:
        ratio = medians[name] / medians[reference]
        return round(ratio if higher_is_faster else 1 / ratio, 3)

    return {
        name: {
            "vs_decode_limit": speed_ratio(name, DECODE_LIMIT),
            "vs_open_clip": speed_ratio(name, OPEN_CLIP),
        }
        for name in medians
    }


def summarise(rates: dict[str, list[float]], cpu_ms: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Medians and repeats per pipeline, with the ratios of the medians: of samples/s, and of CPU ms per
    sample turned into a speed ratio (half the CPU per sample = 2x)."""
    rate_medians = {name: median(values) for name, values in rates.items()}
    cpu_medians = {name: median(values) for name, values in cpu_ms.items()}
    by_rate, by_cpu = ratios(rate_medians, higher_is_faster=True), ratios(cpu_medians, higher_is_faster=False)
    return {
        name: {
            "samples_per_s_median": round(rate_medians[name], 2),
            "samples_per_s_all": [round(rate, 2) for rate in rates[name]],
            "ratio_vs_decode_limit": by_rate[name]["vs_decode_limit"],
            "ratio_vs_open_clip": by_rate[name]["vs_open_clip"],
            "cpu_ms_per_sample_median": round(cpu_medians[name], 4),
            "cpu_ms_per_sample_all": [round(ms, 4) for ms in cpu_ms[name]],
            "cpu_ratio_vs_decode_limit": by_cpu[name]["vs_decode_limit"],
            "cpu_ratio_vs_open_clip": by_cpu[name]["vs_open_clip"],
        }
        for name in rates
    }


def markdown(pipelines: dict[str, dict[str, Any]], settings: Settings, machine_words: str) -> list[str]:
    timed = settings.batches * settings.batch_size
    lines = [
        "# Data pipeline throughput (same img2dataset shards, workers, batch size and image size)",
        "",
        f"Machine: {machine_words}. {settings.images} synthetic JPEGs of {settings.jpeg_size} px in "
        f"{-(-settings.images // SAMPLES_PER_SHARD)} img2dataset shard(s), cropped to {settings.image_size} "
        f"px; batch size {settings.batch_size}; {settings.workers} DataLoader worker(s); each repeat times "
        f"{settings.batches} batches ({timed} samples) of a fresh loader after {settings.warmup_batches} "
        f"warm-up batch(es); median of {settings.repeats} interleaved repeat(s).",
        "",
        "| pipeline | samples/s (median) | all repeats | vs decode limit | vs open_clip |",
        "|---|---|---|---|---|",
    ]
    for name, row in pipelines.items():
        repeats = ", ".join(f"{rate:.1f}" for rate in row["samples_per_s_all"])
        lines.append(f"| {name} | {row['samples_per_s_median']:.1f} | {repeats} | "
                     f"{row['ratio_vs_decode_limit']:.2f}x | {row['ratio_vs_open_clip']:.2f}x |")  # fmt: skip
    lines += [
        "",
        "CPU time per sample over the same timed batches (DataLoader workers + the consuming process). "
        "Other processes on a shared machine slow samples/s down but leave this alone, so while the "
        "workers are CPU-bound its ratios (speed-ups: half the CPU per sample = 2x) are the steadier "
        "reading.",
        "",
        "| pipeline | CPU ms/sample (median) | all repeats | vs decode limit | vs open_clip |",
        "|---|---|---|---|---|",
    ]
    for name, row in pipelines.items():
        repeats = ", ".join(f"{ms:.2f}" for ms in row["cpu_ms_per_sample_all"])
        speedups = f"{row['cpu_ratio_vs_decode_limit']:.2f}x | {row['cpu_ratio_vs_open_clip']:.2f}x"
        lines.append(f"| {name} | {row['cpu_ms_per_sample_median']:.2f} | {repeats} | {speedups} |")
    lines += ["", "Targets: vlp >= 0.9x the decode limit, vlp >= 1.0x open_clip.", "", WHAT_EACH_DOES]
    return lines


def run(settings: Settings, out_dir: Path) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vlp-bench-data-") as tmp:
        contestants = Contestants(prepare(Path(tmp), settings), settings)
        rates = contestants.rates()
    pipelines = summarise(rates, contestants.cpu_ms)
    machine_words = machine()
    payload = {
        "machine": machine_words,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "settings": asdict(settings),
        "open_clip_tokenizer": "open_clip.get_tokenizer('ViT-B-32'): SimpleTokenizer, bundled BPE vocabulary",
        "vlp_config": "data=cc3m (img2dataset passthrough), WordPiece tokenizer trained with vlp-tokenizer",
        "open_clip_adapter": "webdataset's end-of-shard markers dropped for open_clip_train (it asks for "
        "webdataset <= 0.2.86; vlp pins 1.0.2)",
        "pipelines": pipelines,
        "what_each_does": WHAT_EACH_DOES,
    }
    write_results("data_pipeline", payload, markdown(pipelines, settings, machine_words), out_dir)
    return payload


def parse_settings(argv: list[str] | None) -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes for a smoke test (what the test runs)"
    )
    for field, value in asdict(DEFAULT).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, default=None, help=f"default {value}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for data_pipeline.{md,json}")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULT
    chosen = {field: getattr(args, field) for field in asdict(base) if getattr(args, field) is not None}
    return Settings(**{**asdict(base), **chosen}), args.out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    settings, out_dir = parse_settings(argv)
    return run(settings, out_dir)


if __name__ == "__main__":
    main()

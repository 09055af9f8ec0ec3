"""LightningDataModules over vlp shards: captions (pretraining), retrieval, VQA and NLVR2.

All of them share :class:`ShardDataModule`: shards from ``root/<split>/`` (written by ``vlp-shards``) or
from webdataset urls, a training stream that is resampled (default; several datasets can be mixed with
sampling weights) or exact-epoch, and evaluation passes that read every sample exactly once across ranks
and workers (see vlp.data.pipeline). The subclasses only say how a sample is decoded and batched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import timm.data
import webdataset as wds
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from vlp.data.collate import CaptionCollator, NLVR2Collator, VQACollator, expand_questions
from vlp.data.pipeline import (
    BatchWithSkips,
    DecodeOrSkip,
    EpochLoader,
    EveryNthSample,
    MixedStreams,
    ResampledShardStream,
    ResumableEpochs,
    SeededShuffle,
    ShuffledShardPass,
    SkipCounter,
    StreamContext,
    shard_samples,
)
from vlp.data.samples import decode_caption_sample, decode_nlvr2_sample, decode_vqa_sample
from vlp.data.shards import ANSWERS_FILE, SplitIndex

# Mixed datasets have their own image ids; offsetting by dataset keeps "same image" checks (ITM
# negatives) from matching e.g. COCO image 42 with web image 42.
IMAGE_ID_OFFSET_BITS = 40


@dataclass
class ShardSource:
    """One dataset's training shards: where they are, how many items they hold, how often to draw them."""

    name: str
    urls: list[str]
    num_items: int  # what an epoch counts: images for captions, questions for VQA, rows for NLVR2
    weight: float = 1.0


def expand_urls(urls: str | list[str]) -> list[str]:
    """Brace patterns (``shards-{000..099}.tar``), ``::``-separated lists, ``pipe:`` and http urls."""
    if isinstance(urls, str):
        return wds.shardlists.expand_urls(urls)
    return [url for pattern in urls for url in wds.shardlists.expand_urls(str(pattern))]


# Bicubic, as timm's pretrained ViTs were trained with.
INTERPOLATION = "bicubic"
# Evaluation resizes the shorter side to the model's size and centre-crops the square: crop_pct 1.0 cuts
# nothing from a square image (timm's default 0.875 would cut the scene's edges, where objects sit).
EVAL_CROP_PCT = 1.0


def eval_image_settings(
    input_size: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> dict[str, Any]:
    """The evaluation transform's settings for a model's image config (``set_image_config``): plain data,
    so that an exported model (vlp.export) can write them down and rebuild the same transform."""
    return {
        "image_size": int(input_size[-1]),
        "mean": [float(value) for value in mean],
        "std": [float(value) for value in std],
        "interpolation": INTERPOLATION,
        "crop_pct": EVAL_CROP_PCT,
    }


def eval_image_transform(
    image_size: int, mean: list[float], std: list[float], interpolation: str, crop_pct: float
) -> Callable[[Any], Any]:
    """RGB PIL image -> ``pixel_values [3, H, W]`` as evaluation sees it (see :func:`eval_image_settings`)."""
    return timm.data.create_transform(
        input_size=(3, image_size, image_size), mean=tuple(mean), std=tuple(std), is_training=False,
        interpolation=interpolation, crop_pct=crop_pct,
    )  # fmt: skip


class ShardDataModule(pl.LightningDataModule):
    """Shared plumbing; subclasses define ``decode``, ``collate(train)`` and optionally ``expand``.

    Args:
        root: folder with one sub-folder per split (``index.json`` + shards), as vlp-shards writes.
        tokenizer: HF tokenizer name or folder.
        train_split / val_split / test_split: split folder names under ``root``; a list concatenates.
        train_datasets: optional mix for training, ``name -> {root, split, weight}`` or
            ``name -> {urls, num_samples, weight}`` (urls: local paths, brace patterns, ``pipe:``, http).
            Replaces ``root/train_split`` for training; evaluation still reads ``root``.
        resampled: True = infinite resampled stream with a fixed epoch length; False = exact epochs.
        samples_per_epoch: epoch length in items; default = the items of the training data.
        train_transform: keyword arguments for ``timm.data.create_transform`` at training time.
    """

    def __init__(
        self,
        root: str | None,
        tokenizer: str,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 1,
        max_length: int = 40,
        shuffle_buffer: int = 1000,
        train_split: str | list[str] = "train",
        val_split: str | list[str] = "val",
        test_split: str | list[str] = "test",
        train_datasets: dict[str, dict[str, Any]] | None = None,
        resampled: bool = True,
        samples_per_epoch: int | None = None,
        train_transform: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(root) if root is not None else None
        self.tokenizer_path = tokenizer
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.max_length = max_length
        self.shuffle_buffer = shuffle_buffer
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.train_datasets = dict(train_datasets or {})
        self.resampled = resampled
        self.samples_per_epoch = samples_per_epoch
        # Passed to timm.data.create_transform; the defaults avoid flips and colour jitter, which would
        # contradict captions that say "left of" or "red".
        self.train_transform_kwargs = {"scale": (0.8, 1.0), "hflip": 0.0, "color_jitter": None}
        self.train_transform_kwargs.update(train_transform or {})
        self.seed = seed
        self.image_config: dict[str, Any] = {}
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._positions: dict[int, dict[str, Any]] = {}  # worker share -> position after its last batch
        self._restored_positions: list[dict[str, Any]] | None = None
        if self.root is None and not self.train_datasets:
            raise ValueError("data.root is not set: point it at a vlp-shards output folder")

    # --- what subclasses define -------------------------------------------------------------------
    decode: Callable[[dict[str, Any]], dict[str, Any]]

    def collate(self, train: bool) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        raise NotImplementedError

    def expand_stages(self, train: bool, rank: int, context: StreamContext | None = None) -> list[Any]:
        """Stages between decoding and batching (VQA: one sample per question); ``context`` is the
        training stream's (see vlp.data.pipeline.StreamContext)."""
        return []

    def items_in(self, index: SplitIndex) -> int:
        return index.num_samples

    # --- shared plumbing ----------------------------------------------------------------------------
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        return self._tokenizer

    def set_image_config(self, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.image_config = {
            "input_size": (3, image_size, image_size),
            "mean": tuple(mean),
            "std": tuple(std),
        }

    def _split_names(self, stage: str) -> list[str]:
        split = self.splits[stage]
        return [split] if isinstance(split, str) else list(split)

    def split_dir(self, stage: str) -> Path:
        if self.root is None:
            raise ValueError(f"data.root is not set, so there is no {stage} split to read")
        return self.root / self._split_names(stage)[0]

    def index(self, stage: str) -> SplitIndex:
        return SplitIndex.read(self.split_dir(stage))

    def _source_from_root(self, name: str, root: Path, splits: list[str], weight: float) -> ShardSource:
        urls, items = [], 0
        for split in splits:
            index = SplitIndex.read(root / split)
            urls += index.urls(root / split)
            items += self.items_in(index)
        return ShardSource(name=name, urls=urls, num_items=items, weight=weight)

    def stage_source(self, stage: str) -> ShardSource:
        if self.root is None:
            raise ValueError(f"data.root is not set, so there is no {stage} split to read")
        return self._source_from_root(stage, self.root, self._split_names(stage), 1.0)

    def train_sources(self) -> list[ShardSource]:
        if not self.train_datasets:
            return [self.stage_source("train")]
        sources = []
        for name, spec in self.train_datasets.items():
            spec = dict(spec)
            weight = float(spec.get("weight", 1.0))
            if "urls" in spec:
                if not spec.get("num_samples"):
                    raise ValueError(
                        f"data.train_datasets.{name}: urls need num_samples (the epoch length is derived "
                        "from it)"
                    )
                sources.append(ShardSource(name, expand_urls(spec["urls"]), int(spec["num_samples"]), weight))
            elif "root" in spec:
                split = spec.get("split", "train")
                splits = [split] if isinstance(split, str) else list(split)
                sources.append(self._source_from_root(name, Path(spec["root"]), splits, weight))
            else:
                raise ValueError(
                    f"data.train_datasets.{name} needs either root (+ split) or urls + num_samples"
                )
        return sources

    def _transform(self, train: bool) -> Any:
        if not self.image_config:
            raise RuntimeError(
                f"{type(self).__name__}.set_image_config must be called before building dataloaders"
            )
        if not train:
            return eval_image_transform(**eval_image_settings(**self.image_config))
        return timm.data.create_transform(
            **self.image_config, is_training=True, interpolation=INTERPOLATION, **self.train_transform_kwargs
        )

    def _rank_and_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def epoch_items(self, sources: list[ShardSource] | None = None) -> int:
        """Items in one epoch; ``sources`` saves re-reading the indexes when the caller has them."""
        return self.samples_per_epoch or sum(s.num_items for s in sources or self.train_sources())

    def steps_per_epoch(self, world_size: int, sources: list[ShardSource] | None = None) -> int:
        """Batches per rank in one epoch: one pass over the training items across all ranks."""
        return max(1, math.ceil(self.epoch_items(sources) / (self.batch_size * world_size)))

    def _batches_per_worker(self, world_size: int, sources: list[ShardSource]) -> int:
        workers = max(1, self.num_workers)
        if self.resampled:
            return math.ceil(self.steps_per_epoch(world_size, sources) / workers)
        # Exact epochs: whole batches of each (rank, worker)'s share of the pass.
        return max(1, self.epoch_items(sources) // (self.batch_size * world_size * workers))

    def _source_stages(
        self,
        source: ShardSource,
        counter: SkipCounter,
        rank: int,
        world_size: int,
        index: int,
        context: StreamContext,
    ) -> list[Any]:
        if self.resampled:
            stages = shard_samples(
                ResampledShardStream(source.urls, f"{self.seed}/{source.name}", rank, context), counter
            )
        else:
            stages = shard_samples(ShuffledShardPass(source.urls, self.seed, context), counter)
            stages.append(EveryNthSample(rank, world_size, context))
        stages.append(
            SeededShuffle(self.shuffle_buffer, self.seed, rank, context, name=f"shuffle-{source.name}")
        )
        stages.append(
            DecodeOrSkip(self.decode, self._transform(train=True), counter,
                         image_id_offset=index << IMAGE_ID_OFFSET_BITS, context=context, source=index)
        )  # fmt: skip
        return stages + self.expand_stages(train=True, rank=rank, context=context)

    # --- where the training stream is: saved in checkpoints, for step-exact resume ---------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "data_position" in batch:
            position = batch.pop("data_position")
            if self.trainer is not None and self.trainer.training:
                self._positions[position["identity"]] = position
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Each rank's training-stream positions (one per worker share) after the last batch trained on.
        Lightning writes rank 0's checkpoint, so the ranks' positions are gathered into it."""
        mine = {"positions": dict(self._positions)}
        if self.trainer is not None and self.trainer.world_size > 1:
            import torch.distributed as dist

            everyone: list[Any] = [None] * self.trainer.world_size
            dist.all_gather_object(everyone, mine)
            return {"ranks": everyone}
        return {"ranks": [mine]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_positions = state_dict.get("ranks")

    def _resume_plan(self, rank: int, workers: int, batches_per_worker: int) -> dict[str, Any]:
        """Where this rank's stream continues after a checkpoint: ``{"epoch", "resume"}`` -- the epoch, and
        the saved positions of its worker shares when the checkpoint fell inside it; ``{}`` for a fresh
        run."""
        ranks = self._restored_positions
        if not ranks:
            return {}
        if len(ranks) != (self.trainer.world_size if self.trainer is not None else 1):
            raise ValueError(
                f"the checkpoint's data position comes from {len(ranks)} ranks, this run has "
                f"{self.trainer.world_size if self.trainer is not None else 1}: resume with the same number"
            )
        positions = {int(k): v for k, v in ranks[rank]["positions"].items()}
        if not positions:
            return {}  # saved before the first batch
        epoch = max(position["pass"] for position in positions.values())
        positions = {k: v for k, v in positions.items() if v["pass"] == epoch}
        if len(positions) == workers and all(v["batches"] >= batches_per_worker for v in positions.values()):
            return {"epoch": epoch + 1}  # saved at the end of an epoch: the next starts afresh
        saved_workers = next(iter(positions.values()))["workers"]
        if saved_workers != workers:
            raise ValueError(
                f"the checkpoint was taken with data.num_workers={saved_workers} and this run has "
                f"{workers}: resume with data.num_workers={saved_workers} to continue the epoch exactly"
            )
        if self.expand_stages(train=True, rank=rank, context=StreamContext()):  # items fan out: replay them
            positions = {k: {**v, "raw": {}, "mix": 0} for k, v in positions.items()}
        else:  # skip raw samples before decoding: cheap
            positions = {k: {**v, "items": 0} for k, v in positions.items()}
        done = sum(position["batches"] for position in positions.values())
        return {"epoch": epoch, "resume": {"pass": epoch, "rotation": done % workers, "positions": positions}}

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank_and_world()
        sources = self.train_sources()
        counter = SkipCounter()
        context = StreamContext(seed=f"{self.seed}/{rank}")
        if not self.resampled and len(sources) > 1:
            if len({source.weight for source in sources}) > 1:
                raise ValueError("resampled=false reads every dataset once per epoch: sampling weights need "
                                 "resampled=true")  # fmt: skip
            sources = [
                ShardSource("train", [u for s in sources for u in s.urls], sum(s.num_items for s in sources))
            ]
        if len(sources) == 1:
            stages = self._source_stages(sources[0], counter, rank, world_size, 0, context)
        else:
            streams = [
                wds.DataPipeline(*self._source_stages(s, counter, rank, world_size, i, context))
                for i, s in enumerate(sources)
            ]
            stages = [MixedStreams(streams, [s.weight for s in sources], self.seed, rank, context)]
        pipeline = wds.DataPipeline(
            *stages,
            BatchWithSkips(self.batch_size, self.collate(train=True), partial=False, counter=counter,
                           context=context),
        )  # fmt: skip
        # Lightning reads the length (progress bars, the LR schedule); it is exact by construction.
        workers = max(1, self.num_workers)
        batches_per_worker = self._batches_per_worker(world_size, sources)
        plan = self._resume_plan(rank, workers, batches_per_worker)
        resumable = ResumableEpochs(pipeline, context, batches_per_worker, workers, resume=plan.get("resume"))
        return EpochLoader(
            resumable,
            self._current_epoch,
            plan.get("epoch"),
            batch_size=None,  # batching happens inside the pipeline, in the workers
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _current_epoch(self) -> int | None:
        """The pass the training stream produces: the trainer's epoch, except when the trainer overfits
        (``trainer.overfit_batches``, debug=overfit), where every epoch re-reads pass 0, so that its first
        batches, the ones Lightning trains on, are the same batches every epoch."""
        if self.trainer is None:
            return None
        return 0 if self.trainer.overfit_batches else self.trainer.current_epoch

    def _eval_dataloader(self, stage: str) -> DataLoader:
        rank, world_size = self._rank_and_world()
        counter = SkipCounter()
        source = self.stage_source(stage)
        pipeline = wds.DataPipeline(
            *shard_samples(wds.SimpleShardList(source.urls), counter),
            EveryNthSample(rank, world_size),
            DecodeOrSkip(self.decode, self._transform(train=False), counter),
            *self.expand_stages(train=False, rank=rank),
            BatchWithSkips(self.eval_batch_size, self.collate(train=False), partial=True, counter=counter),
        )
        return self._loader(pipeline, persistent=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader("test")

    def _loader(self, pipeline: Any, persistent: bool) -> DataLoader:
        return DataLoader(
            pipeline,
            batch_size=None,  # batching happens inside the pipeline, in the workers
            num_workers=self.num_workers,
            persistent_workers=persistent and self.num_workers > 0,
            pin_memory=False,
        )


class CaptionDataModule(ShardDataModule):
    """Image-caption pairs for pretraining (ITC, ITM, MLM); evaluation batches carry every caption of
    their images for retrieval."""

    decode = staticmethod(decode_caption_sample)

    def __init__(self, *args: Any, mlm_probability: float = 0.15, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mlm_probability = mlm_probability

    def collate(self, train: bool) -> CaptionCollator:
        return CaptionCollator(self.tokenizer, self.max_length, self.mlm_probability, train=train)


class RetrievalDataModule(CaptionDataModule):
    """Caption shards for retrieval finetuning and evaluation (Karpathy COCO / Flickr30k test: 5k / 1k
    images). The same batches as captions; MLM masking off by default."""

    def __init__(self, *args: Any, mlm_probability: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, mlm_probability=mlm_probability, **kwargs)


class VQADataModule(ShardDataModule):
    """VQA v2 questions with soft targets over ``root/answers.json``; an epoch counts questions.

    Images are shuffled before decoding; ``question_shuffle_buffer`` then mixes the questions of
    different images, which would otherwise sit next to each other in a batch.
    """

    decode = staticmethod(decode_vqa_sample)

    def __init__(self, *args: Any, question_shuffle_buffer: int = 256, **kwargs: Any) -> None:
        kwargs.setdefault("train_split", "train2014")
        kwargs.setdefault("val_split", "val2014")
        kwargs.setdefault("test_split", "test-dev2015")
        super().__init__(*args, **kwargs)
        self.question_shuffle_buffer = question_shuffle_buffer
        self._answers: list[str] | None = None

    @property
    def answers(self) -> list[str]:
        """The answer vocabulary: label i is ``answers[i]``."""
        if self._answers is None:
            path = self.split_dir("train").parent / ANSWERS_FILE
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: convert VQA with vlp-shards vqa (see README)")
            self._answers = list(json.loads(path.read_text())["answers"])
        return self._answers

    def items_in(self, index: SplitIndex) -> int:
        if "num_questions" not in index.extra:
            raise ValueError(f"{index.split}: index.json has no num_questions: is it a VQA split?")
        return int(index.extra["num_questions"])

    def expand_stages(self, train: bool, rank: int, context: StreamContext | None = None) -> list[Any]:
        if not train:
            return [expand_questions]
        return [
            expand_questions,
            SeededShuffle(
                self.question_shuffle_buffer, self.seed, rank, context or StreamContext(), "questions"
            ),
        ]

    def collate(self, train: bool) -> VQACollator:
        return VQACollator(self.tokenizer, self.max_length, num_answers=len(self.answers))


class NLVR2DataModule(ShardDataModule):
    """NLVR2 rows: an image pair (``pixel_values [B, 2, 3, H, W]``), a sentence and its label."""

    decode = staticmethod(decode_nlvr2_sample)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("val_split", "dev")
        kwargs.setdefault("test_split", "test1")
        super().__init__(*args, **kwargs)

    def collate(self, train: bool) -> NLVR2Collator:
        return NLVR2Collator(self.tokenizer, self.max_length)

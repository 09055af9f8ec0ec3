"""LightningDataModule over caption shards: resampled training stream, exact evaluation passes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import timm.data
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from vlp.data.pipeline import CaptionCollator, caption_eval_pipeline, caption_train_pipeline
from vlp.data.shards import SplitIndex


class CaptionDataModule(pl.LightningDataModule):
    """Image-caption pairs from ``root/<split>/`` shards written by ``vlp-shards``.

    Image size and normalisation are not configured here: the entry point reads them from the built
    vision tower and calls :meth:`set_image_config`, so that they cannot disagree with the model.
    """

    def __init__(
        self,
        root: str,
        tokenizer: str,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 1,
        max_length: int = 40,
        mlm_probability: float = 0.15,
        shuffle_buffer: int = 1000,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        train_transform: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.tokenizer_path = tokenizer
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.max_length = max_length
        self.mlm_probability = mlm_probability
        self.shuffle_buffer = shuffle_buffer
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        # Passed to timm.data.create_transform; the defaults avoid flips and colour jitter, which would
        # contradict captions that say "left of" or "red".
        self.train_transform_kwargs = {"scale": (0.8, 1.0), "hflip": 0.0, "color_jitter": None}
        self.train_transform_kwargs.update(train_transform or {})
        self.seed = seed
        self.image_config: dict[str, Any] = {}
        self._tokenizer: PreTrainedTokenizerBase | None = None

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

    def split_dir(self, stage: str) -> Path:
        return self.root / self.splits[stage]

    def index(self, stage: str) -> SplitIndex:
        return SplitIndex.read(self.split_dir(stage))

    def _transform(self, train: bool) -> Any:
        if not self.image_config:
            raise RuntimeError(
                "CaptionDataModule.set_image_config must be called before building dataloaders"
            )
        extra = self.train_transform_kwargs if train else {"crop_pct": 1.0}
        return timm.data.create_transform(
            **self.image_config, is_training=train, interpolation="bicubic", **extra
        )

    def _rank_and_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def steps_per_epoch(self, world_size: int) -> int:
        """Batches per rank in one epoch: one pass over the train split's samples across all ranks."""
        return max(1, math.ceil(self.index("train").num_samples / (self.batch_size * world_size)))

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank_and_world()
        index = self.index("train")
        workers = max(1, self.num_workers)
        batches_per_worker = math.ceil(self.steps_per_epoch(world_size) / workers)
        collate = CaptionCollator(self.tokenizer, self.max_length, self.mlm_probability, train=True)
        pipeline = caption_train_pipeline(
            index.urls(self.split_dir("train")),
            self._transform(train=True),
            collate,
            self.batch_size,
            batches_per_worker,
            self.shuffle_buffer,
            self.seed,
            rank,
        )
        # Lightning reads the length for progress bars and the LR schedule; it is exact by construction.
        pipeline = pipeline.with_length(batches_per_worker * workers)
        return self._loader(pipeline, persistent=True)

    def _eval_dataloader(self, stage: str) -> DataLoader:
        rank, world_size = self._rank_and_world()
        index = self.index(stage)
        collate = CaptionCollator(self.tokenizer, self.max_length, self.mlm_probability, train=False)
        pipeline = caption_eval_pipeline(
            index.urls(self.split_dir(stage)),
            self._transform(train=False),
            collate,
            self.eval_batch_size,
            rank,
            world_size,
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

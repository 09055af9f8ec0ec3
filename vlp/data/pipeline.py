"""Webdataset stages: read shards, split across ranks and workers, decode, transform, tokenize, mask.

Every stage is a small picklable object or function, so that the pipeline works in DataLoader worker
processes. Rank and world size are passed in explicitly by the datamodule (read from the Trainer),
never guessed inside a worker.

Training streams are *resampled*: each (rank, worker) draws shards at random with its own seed, forever,
and the epoch is cut at a fixed number of batches derived from the index. Every rank therefore runs
the same number of steps, which DDP needs. Evaluation streams read every sample exactly once: each
(rank, worker) keeps every n-th sample of the full stream.
"""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Iterator
from typing import Any

import torch
import webdataset as wds
from PIL import Image
from transformers import PreTrainedTokenizerBase

from vlp.data.shards import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


def _worker_info() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def log_and_skip(error: Exception) -> bool:
    """Webdataset handler: a tar member that cannot be read is logged and skipped, not fatal."""
    log.warning("skipping unreadable shard data: %r", error)
    return True


class ResampledShardStream(torch.utils.data.IterableDataset):
    """Infinite stream of shard urls drawn with replacement; a distinct, reproducible seed per rank/worker."""

    def __init__(self, urls: list[str], seed: int, rank: int) -> None:
        super().__init__()
        self.urls = list(urls)
        self.seed = seed
        self.rank = rank
        self.epoch = 0  # advances each time the stream restarts, so that epochs differ

    def __iter__(self) -> Iterator[dict[str, str]]:
        worker, _ = _worker_info()
        rng = random.Random(f"shards-{self.seed}-{self.rank}-{worker}-{self.epoch}")
        self.epoch += 1
        while True:
            yield {"url": rng.choice(self.urls)}


class SeededShuffle:
    """Buffer shuffle whose randomness depends on (seed, rank, worker, restart count)."""

    def __init__(self, bufsize: int, seed: int, rank: int) -> None:
        self.bufsize = bufsize
        self.seed = seed
        self.rank = rank
        self.calls = 0

    def __call__(self, samples: Iterator[dict]) -> Iterator[dict]:
        worker, _ = _worker_info()
        rng = random.Random(f"shuffle-{self.seed}-{self.rank}-{worker}-{self.calls}")
        self.calls += 1
        return wds.shuffle(self.bufsize, initial=self.bufsize, rng=rng)(samples)


class EveryNthSample:
    """Keep the samples of this (rank, worker) out of the full stream: exact, balanced to within one."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank = rank
        self.world_size = world_size

    def __call__(self, samples: Iterator[dict]) -> Iterator[dict]:
        worker, num_workers = _worker_info()
        stride = self.world_size * num_workers
        mine = self.rank * num_workers + worker
        for index, sample in enumerate(samples):
            if index % stride == mine:
                yield sample


def decode_caption_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Raw webdataset sample -> {'image': RGB PIL image, 'image_id': int, 'captions': list[str], 'key'}."""
    image_bytes = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
    if image_bytes is None:
        raise ValueError(
            f"sample {sample.get('__key__')} has no image member ({', '.join(IMAGE_EXTENSIONS)})"
        )
    meta = json.loads(sample["json"])
    with Image.open(io.BytesIO(image_bytes)) as image:
        rgb = image.convert("RGB")
    return {
        "image": rgb,
        "image_id": int(meta["image_id"]),
        "captions": list(meta["captions"]),
        "key": sample["__key__"],
    }


class ApplyImageTransform:
    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        sample["pixel_values"] = self.transform(sample.pop("image"))
        return sample


def mask_tokens(
    input_ids: torch.Tensor,
    special_tokens_mask: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick ``probability`` of the non-special tokens; of those 80% -> [MASK], 10% -> a random
    token, 10% unchanged. Returns (masked ids, labels with -100 where not picked).

    Written here rather than taken from HF's collator so that the random generator is explicit: evaluation
    masks must be identical on every run and training masks distinct per rank and worker.
    """
    labels = input_ids.clone()
    eligible = ~special_tokens_mask.bool()
    picked = (torch.rand(input_ids.shape, generator=generator) < probability) & eligible
    labels[~picked] = -100
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = picked & (roll < 0.8)
    to_random = picked & (roll >= 0.8) & (roll < 0.9)
    masked = input_ids.clone()
    masked[to_mask] = mask_token_id
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    masked[to_random] = random_ids[to_random]
    return masked, labels


class CaptionCollator:
    """List of decoded, transformed samples -> Batch (see vlp.types): tokenization and MLM masking.

    Training picks a random caption of each image; evaluation takes the first one, masks with a generator
    seeded from the image ids (so evaluation is the same on every run), and also returns all captions of
    the batch's images for retrieval.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, max_length: int, mlm_probability: float, train: bool
    ) -> None:
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no [MASK] token, which MLM needs: use a BERT-style tokenizer")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.mlm_probability = mlm_probability
        self.train = train

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        image_ids = torch.tensor([s["image_id"] for s in samples], dtype=torch.long)
        if self.train:
            generator = None  # the worker's torch RNG, seeded per rank and worker by Lightning
            texts = [s["captions"][int(torch.randint(len(s["captions"]), ()))] for s in samples]
        else:
            generator = torch.Generator().manual_seed(int(image_ids.sum()) * 7919 + len(samples))
            texts = [s["captions"][0] for s in samples]
        tokens = self._tokenize(texts)
        mlm_input_ids, mlm_labels = mask_tokens(
            tokens["input_ids"],
            tokens["special_tokens_mask"],
            self.tokenizer.mask_token_id,
            len(self.tokenizer),
            self.mlm_probability,
            generator,
        )
        batch = {
            "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "mlm_input_ids": mlm_input_ids,
            "mlm_labels": mlm_labels,
            "image_id": image_ids,
        }
        if not self.train:
            all_texts, owner = [], []
            for position, sample in enumerate(samples):
                all_texts.extend(sample["captions"])
                owner.extend([position] * len(sample["captions"]))
            retrieval = self._tokenize(all_texts)
            batch["retrieval_input_ids"] = retrieval["input_ids"]
            batch["retrieval_attention_mask"] = retrieval["attention_mask"]
            batch["retrieval_text_image"] = torch.tensor(owner, dtype=torch.long)
        return batch


def caption_train_pipeline(
    urls: list[str],
    transform: Any,
    collate: CaptionCollator,
    batch_size: int,
    batches_per_worker: int,
    shuffle_buffer: int,
    seed: int,
    rank: int,
) -> wds.DataPipeline:
    return wds.DataPipeline(
        ResampledShardStream(urls, seed, rank),
        wds.tarfile_to_samples(handler=log_and_skip),
        SeededShuffle(shuffle_buffer, seed, rank),
        wds.map(decode_caption_sample),
        wds.map(ApplyImageTransform(transform)),
        wds.batched(batch_size, collation_fn=collate, partial=False),
    ).with_epoch(batches_per_worker)


def caption_eval_pipeline(
    urls: list[str], transform: Any, collate: CaptionCollator, batch_size: int, rank: int, world_size: int
) -> wds.DataPipeline:
    return wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.tarfile_to_samples(handler=log_and_skip),
        EveryNthSample(rank, world_size),
        wds.map(decode_caption_sample),
        wds.map(ApplyImageTransform(transform)),
        wds.batched(batch_size, collation_fn=collate, partial=True),
    )

"""Collators: lists of decoded, transformed samples -> batches (the keys are documented in vlp.types).

Tokenization and MLM masking happen here, in the DataLoader workers.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate
from transformers import PreTrainedTokenizerBase


def stack_images(samples: list[dict[str, Any]]) -> torch.Tensor:
    """The samples' ``pixel_values`` as one ``[B, ...]`` tensor. Inside a DataLoader worker,
    default_collate stacks straight into shared memory; ``torch.stack`` would stack into ordinary memory
    that the worker's queue then copies once more (about 0.3 ms per 224 px image, measured in
    benchmarks/data_pipeline.py)."""
    return default_collate([sample["pixel_values"] for sample in samples])


TOKEN_FIELDS = ("input_ids", "attention_mask", "special_tokens_mask")
# Per tokenizer, its Rust backend set up for each (max_length, padding and truncation settings).
_PADDING_BACKENDS: weakref.WeakKeyDictionary[PreTrainedTokenizerBase, dict[tuple, Any]] = (
    weakref.WeakKeyDictionary()
)


def _padding_backend(tokenizer: PreTrainedTokenizerBase, max_length: int) -> Any | None:
    """A copy of the fast tokenizer's Rust ``tokenizers.Tokenizer`` set to truncate at ``max_length``
    and pad to the longest text as the tokenizer's own call would (its sides and pad token), made once
    per setting; None for a tokenizer without one (a slow, Python tokenizer)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    padding = {
        "direction": tokenizer.padding_side,
        "pad_id": tokenizer.pad_token_id,
        "pad_type_id": tokenizer.pad_token_type_id,
        "pad_token": tokenizer.pad_token,
    }
    setting = (max_length, tokenizer.truncation_side, *padding.values())
    configured = _PADDING_BACKENDS.setdefault(tokenizer, {}).get(setting)
    if configured is None:
        configured = copy.deepcopy(backend)
        configured.enable_truncation(max_length, direction=tokenizer.truncation_side)
        configured.enable_padding(**padding)
        _PADDING_BACKENDS[tokenizer][setting] = configured
    return configured


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int
) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``special_tokens_mask``: ``[B, L]`` int64, padded to the longest.

    The same as ``tokenizer(texts, padding="longest", truncation=True, max_length=max_length,
    return_special_tokens_mask=True)``, asked of the Rust tokenizer directly: the transformers wrapper
    converts every encoding to Python lists and back and costs as much as the tokenizing itself (about
    0.04 ms a caption, 1 % of the training pipeline's CPU; see benchmarks/README.md)."""
    backend = _padding_backend(tokenizer, max_length)
    if backend is None or not texts:
        encoded = tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=max_length,
            return_special_tokens_mask=True,
            return_tensors="np",
        )
        return {name: torch.from_numpy(encoded[name]).long() for name in TOKEN_FIELDS}
    encodings = backend.encode_batch_fast(texts)
    return {
        name: torch.from_numpy(np.array([getattr(e, field) for e in encodings], dtype=np.int64))
        for name, field in zip(TOKEN_FIELDS, ("ids", "attention_mask", "special_tokens_mask"), strict=True)
    }


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
    the batch's images: tokenized for retrieval, and as raw strings (``captions``, one list per image) for
    caption metrics, which must see the text as written.
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
        return tokenize(self.tokenizer, texts, self.max_length)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
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
            "pixel_values": stack_images(samples),
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
            batch["captions"] = [list(sample["captions"]) for sample in samples]
        return batch


def expand_questions(samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Stage: one VQA sample per question; the image tensor is shared by the questions of an image."""
    for sample in samples:
        for question in sample["questions"]:
            yield {
                "pixel_values": sample["pixel_values"],
                "image_id": sample["image_id"],
                **question,
            }


class VQACollator:
    """Questions -> batch with dense soft targets ``vqa_targets [B, num_answers]`` (zeros when a split has
    no answers, e.g. test-dev) and, for scoring, the raw ``answers`` and types as lists."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int, num_answers: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.num_answers = num_answers

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        tokens = tokenize(self.tokenizer, [s["question"] for s in samples], self.max_length)
        targets = torch.zeros(len(samples), self.num_answers)
        for row, sample in enumerate(samples):
            soft = sample.get("targets") or {"labels": [], "scores": []}
            if soft["labels"]:
                labels = torch.tensor(soft["labels"], dtype=torch.long)
                if int(labels.max()) >= self.num_answers or int(labels.min()) < 0:
                    raise ValueError(
                        f"question {sample['question_id']} has answer label {int(labels.max())} outside the "
                        f"{self.num_answers}-answer vocabulary: shards and answers.json do not match"
                    )
                targets[row, labels] = torch.tensor(soft["scores"], dtype=torch.float32)
        return {
            "pixel_values": stack_images(samples),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "vqa_targets": targets,
            "question_id": torch.tensor([s["question_id"] for s in samples], dtype=torch.long),
            "image_id": torch.tensor([s["image_id"] for s in samples], dtype=torch.long),
            "answers": [s.get("answers") or [] for s in samples],
            "answer_type": [s.get("answer_type") or "" for s in samples],
            "question_type": [s.get("question_type") or "" for s in samples],
        }


class NLVR2Collator:
    """Image pairs + sentences -> ``pixel_values [B, 2, 3, H, W]`` (left, right), ``labels [B]`` (1 true,
    0 false, -1 unknown) and the ``identifier`` list for prediction files."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        tokens = tokenize(self.tokenizer, [s["sentence"] for s in samples], self.max_length)
        labels = [-1 if s["label"] is None else int(s["label"]) for s in samples]
        return {
            "pixel_values": stack_images(samples),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "labels": torch.tensor(labels, dtype=torch.long),
            "identifier": [s["identifier"] for s in samples],
        }

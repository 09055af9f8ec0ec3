"""Image-text retrieval evaluation: contrastive similarity for all pairs, then (optionally) ITM re-ranking.

Stage 1 scores every (image, text) pair by the dot product of the contrastive embeddings, in row chunks
so that the ``[N_images, N_texts]`` matrix never exists at once, and keeps each row's top ``rerank_k``
candidates in both directions. Stage 2 runs the ITM cross-encoder on exactly those pairs (ALBEF/BLIP):
``(N_images + N_texts) * k`` fusion passes instead of the ``N_images * N_texts`` of all-pairs scoring
(ViLT). Both stages split their query rows across ranks; the per-row results are gathered at the end.

Reported (``{stage}/{name}/...``): ``txt_r1 .. r_mean`` from the contrastive scores alone and, with
re-ranking, ``rerank_txt_r1 .. rerank_r_mean`` from the re-scored top-k, the number of fusion passes
(``itm_passes``, beside ``all_pairs``) and each stage's wall-clock (``stage1_seconds``,
``stage2_seconds``, the slowest rank's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vlp.distributed import all_reduce, gather_variable_length, world_size
from vlp.metrics.retrieval import ranks_among, recall_from_ranks, score_chunks, topk_recall
from vlp.model.vlp import VLPModel
from vlp.types import CONTRASTIVE, Batch, Encoded

# How a re-ranked pair is scored: the ITM match logit plus the contrastive similarity, as ALBEF's and
# BLIP's retrieval evaluations do, or the ITM match probability alone.
RERANK_SCORES = ("itm_logit+itc", "itm_prob")


@dataclass
class QueryResults:
    """Per query row (images for image->text, texts for text->image), in row order."""

    ranks: Tensor  # [Q] rank of the best right answer under the contrastive scores
    candidates: Tensor  # [Q, k] the k most similar candidates (indices), best first
    similarity: Tensor  # [Q, k] their contrastive scores
    rescored: Tensor | None = None  # [Q, k] their re-ranking scores (stage 2)


class RetrievalPass:
    """What a retrieval evaluation keeps from one pass over its batches: image ids, the captions that came
    with each image, and (as asked) the contrastive embeddings and the token states a fusion pass needs.
    :meth:`gather` returns everything every rank saw, each image once."""

    def __init__(self, embeddings: bool, tokens: bool) -> None:
        self.embeddings, self.tokens = embeddings, tokens
        self.reset()

    def reset(self) -> None:
        self.image_ids: list[Tensor] = []
        self.image_embeddings: list[Tensor] = []
        self.image_tokens: list[Tensor] = []
        self.text_occurrence: list[Tensor] = []  # index of the stored image each caption came with
        self.text_embeddings: list[Tensor] = []
        self.text_tokens: list[Tensor] = []
        self.text_masks: list[Tensor] = []
        self.images_seen = 0

    @torch.no_grad()
    def add(self, batch: Batch, encoded: Encoded, model: VLPModel) -> None:
        """One evaluation batch: its images' encodings and all their captions, encoded here."""
        if "retrieval_input_ids" not in batch:
            raise KeyError("retrieval evaluation needs batches with retrieval_input_ids (all captions)")
        texts = model.encode_text(batch["retrieval_input_ids"], batch["retrieval_attention_mask"])
        self.image_ids.append(batch["image_id"].cpu())
        self.text_occurrence.append(batch["retrieval_text_image"].cpu() + self.images_seen)
        self.images_seen += len(batch["image_id"])
        if self.embeddings:
            self.image_embeddings.append(encoded.image.embedding.float().cpu())
            self.text_embeddings.append(texts.embedding.float().cpu())
        if self.tokens:  # fusion passes read stored token states, as ALBEF keeps its feats
            self.image_tokens.append(encoded.image.tokens.cpu())
            self.text_tokens.append(texts.tokens.cpu())
            self.text_masks.append(batch["retrieval_attention_mask"].cpu())

    def __bool__(self) -> bool:
        return bool(self.image_ids)

    def gather(self) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        """Everything seen on every rank, each image once (its first occurrence) with the captions that
        came with that occurrence: a padded DDP pass may show an image twice. Images sorted by id;
        returns (images: id [, embedding, tokens], texts: [embedding, tokens, mask], text_image = image
        index of each text)."""
        offset = _offset_over_ranks(self.images_seen)
        image_ids = gather_variable_length(torch.cat(self.image_ids))
        occurrence = gather_variable_length(torch.cat(self.text_occurrence) + offset)
        unique_ids, first = _first_occurrence(image_ids)
        keep = torch.isin(occurrence, first)
        images, texts = {"id": unique_ids}, {}
        if self.embeddings:
            images["embedding"] = gather_variable_length(torch.cat(self.image_embeddings))[first]
            texts["embedding"] = gather_variable_length(torch.cat(self.text_embeddings))[keep]
        if self.tokens:
            images["tokens"] = gather_variable_length(torch.cat(self.image_tokens))[first]
            length = int(_max_over_ranks(max(t.shape[1] for t in self.text_tokens)))
            texts["tokens"] = gather_variable_length(_cat_padded(self.text_tokens, length))[keep]
            texts["mask"] = gather_variable_length(_cat_padded(self.text_masks, length))[keep]
        text_image = torch.searchsorted(unique_ids, image_ids[occurrence[keep]])
        return images, texts, text_image


class RetrievalEvaluation:
    """Recall@K over an evaluation pass whose batches carry all captions of their images
    (``retrieval_input_ids``, ``retrieval_attention_mask``, ``retrieval_text_image``).

    Args:
        ks: the K of R@K.
        rerank_k: candidates per query that the ITM head re-scores; ``None`` = contrastive only
            (zero-shot retrieval during pretraining). ALBEF/BLIP use 256 on COCO and 128 on Flickr30k.
        itm_objective: the name of the objective whose ITM head re-scores (see :meth:`bind`).
        rerank_score: ``itm_logit+itc`` (ALBEF/BLIP) or ``itm_prob``.
        chunk_size: query rows per stage-1 matrix product.
        pair_batch_size: (image, text) pairs per fusion pass in stage 2.
        predictions_dir: where ``retrieval_<stage>_topk.npz`` is written, the candidates with their
            contrastive and re-ranking scores (``vlp-score retrieval`` reads it); ``None``: not written.
    """

    needs = (CONTRASTIVE,)  # stage 1 ranks by embedding similarity (ViLT scores all pairs instead)

    def __init__(
        self,
        ks: tuple[int, ...] = (1, 5, 10),
        rerank_k: int | None = None,
        itm_objective: str = "itm",
        rerank_score: str = "itm_logit+itc",
        chunk_size: int = 1024,
        pair_batch_size: int = 256,
        predictions_dir: str | None = None,
    ) -> None:
        if rerank_score not in RERANK_SCORES:
            raise ValueError(f"rerank_score must be one of {RERANK_SCORES}, got {rerank_score!r}")
        if rerank_k is not None and rerank_k < max(ks):
            raise ValueError(f"rerank_k={rerank_k} is smaller than R@{max(ks)}: re-rank at least {max(ks)}")
        self.ks = tuple(ks)
        self.rerank_k = rerank_k
        self.itm_objective = itm_objective
        self.rerank_score = rerank_score
        self.chunk_size = chunk_size
        self.pair_batch_size = pair_batch_size
        self.predictions_dir = Path(predictions_dir) if predictions_dir else None
        self._model: VLPModel | None = None
        self._itm: nn.Module | None = None
        self.reset()

    def bind(self, model: VLPModel, objectives: dict[str, nn.Module]) -> None:
        """Called by VLPSystem: the model and the ITM objective that stage 2 re-scores with."""
        self._model = model
        if self.rerank_k is None:
            return
        itm = objectives.get(self.itm_objective)
        if itm is None or not hasattr(itm, "match_logits"):
            raise ValueError(
                f"retrieval re-ranking (rerank_k={self.rerank_k}) needs an ITM objective named "
                f"{self.itm_objective!r}, but the objectives are {sorted(objectives)}: "
                "add itm to objectives, or set rerank_k=null for contrastive scores only"
            )
        self._itm = itm

    def reset(self) -> None:
        self._pass = RetrievalPass(embeddings=True, tokens=self.rerank_k is not None)
        self._last: dict[str, np.ndarray] = {}

    def update(self, batch: Batch, encoded: Encoded, model: VLPModel, outputs: dict | None = None) -> None:
        self._pass.add(batch, encoded, model)

    def compute(self) -> dict[str, float]:
        """The metrics of everything seen since the last reset, the same on every rank."""
        if not self._pass:
            return {}
        images, texts, text_image = self._pass.gather()
        device = _device_of(self._model)
        rank, ranks = (dist.get_rank(), world_size()) if world_size() > 1 else (0, 1)
        num_images, num_texts = len(images["id"]), len(text_image)
        depth = self.rerank_k or max(self.ks)  # each direction keeps at most all of its candidates
        text_k, image_k = min(depth, num_texts), min(depth, num_images)
        image_rows = torch.arange(rank, num_images, ranks)
        text_rows = torch.arange(rank, num_texts, ranks)
        image_embeddings, text_embeddings = images["embedding"].to(device), texts["embedding"].to(device)

        started = time.perf_counter()
        image_side = self._contrastive(
            image_embeddings[image_rows.to(device)], text_embeddings, image_rows, text_image, text_k
        )
        text_side = self._contrastive(
            text_embeddings[text_rows.to(device)], image_embeddings, text_image[text_rows],
            torch.arange(num_images), image_k,
        )  # fmt: skip
        stage1_seconds = time.perf_counter() - started

        metrics: dict[str, float] = {}
        passes = 0
        if self.rerank_k is not None:
            started = time.perf_counter()
            pair_images = image_rows[:, None].expand_as(image_side.candidates)
            image_side.rescored = self._rescore(
                images, texts, pair_images, image_side.candidates, image_side.similarity
            )
            pair_texts = text_rows[:, None].expand_as(text_side.candidates)
            text_side.rescored = self._rescore(
                images, texts, text_side.candidates, pair_texts, text_side.similarity
            )
            passes = image_side.candidates.numel() + text_side.candidates.numel()
            metrics["stage2_seconds"] = _max_over_ranks(time.perf_counter() - started)
        image_side, text_side = _gather_rows(image_side, image_rows), _gather_rows(text_side, text_rows)

        has_caption = torch.zeros(num_images, dtype=torch.bool)
        has_caption[text_image] = True
        metrics.update(recall_from_ranks(image_side.ranks[has_caption], text_side.ranks, self.ks))
        if self.rerank_k is not None:
            reranked = topk_recall(image_side.candidates, image_side.rescored, text_side.candidates,
                                   text_side.rescored, text_image, self.ks)  # fmt: skip
            metrics.update({f"rerank_{key}": value for key, value in reranked.items()})
            metrics["itm_passes"] = float(_sum_over_ranks(passes))
        metrics["all_pairs"] = float(num_images * num_texts)
        metrics["stage1_seconds"] = _max_over_ranks(stage1_seconds)
        metrics["num_images"], metrics["num_texts"] = float(num_images), float(num_texts)
        self._last = _as_arrays(
            images["id"], images["id"][text_image], image_side, text_side, self.rerank_score
        )
        return metrics

    def save(self, stage: str) -> Path | None:
        """``retrieval_<stage>_topk.npz`` of the last compute(): image ids, the image id of each text, and
        per direction the top-k candidates with their contrastive (and re-ranking) scores."""
        if self.predictions_dir is None or not self._last:
            return None
        self.predictions_dir.mkdir(parents=True, exist_ok=True)
        path = self.predictions_dir / f"retrieval_{stage}_topk.npz"
        np.savez(path, **self._last)
        return path

    def _contrastive(
        self, queries: Tensor, candidates: Tensor, query_labels: Tensor, candidate_labels: Tensor, k: int
    ) -> QueryResults:
        """Stage 1 for some query rows: contrastive ranks and top-k candidates. A query's right answers
        are the candidates whose label equals its label (image index on both sides)."""
        device = queries.device
        query_labels, candidate_labels = query_labels.to(device), candidate_labels.to(device)
        ranks, top_indices, top_scores = [], [], []
        for start, scores in score_chunks(queries, candidates, self.chunk_size):
            positive = query_labels[start : start + len(scores), None] == candidate_labels[None, :]
            ranks.append(ranks_among(scores, positive).cpu())
            values, indices = scores.topk(k, dim=1)
            top_scores.append(values.cpu())
            top_indices.append(indices.cpu())
        if not ranks:  # this rank got no rows (fewer queries than ranks)
            empty = torch.zeros(0, k)
            return QueryResults(torch.zeros(0, dtype=torch.long), empty.long(), empty)
        return QueryResults(torch.cat(ranks), torch.cat(top_indices), torch.cat(top_scores))

    @torch.no_grad()
    def _rescore(
        self, images: dict[str, Tensor], texts: dict[str, Tensor], image_index: Tensor, text_index: Tensor,
        similarity: Tensor,
    ) -> Tensor:  # fmt: skip
        """Stage 2: the ITM score of each (image_index, text_index) pair ``[Q, k]``, by fusion passes of
        ``pair_batch_size`` pairs."""
        assert self._model is not None and self._itm is not None, "bind() was not called"
        device = _device_of(self._model)
        flat_images, flat_texts = image_index.reshape(-1), text_index.reshape(-1)
        logits = []
        for start in range(0, len(flat_images), self.pair_batch_size):
            image_part = flat_images[start : start + self.pair_batch_size]
            text_part = flat_texts[start : start + self.pair_batch_size]
            mask = texts["mask"][text_part]
            length = max(int(mask.sum(dim=1).max()), 1)  # fusion cost grows with length: drop padding
            logits.append(
                self._itm.match_logits(
                    self._model,
                    texts["tokens"][text_part, :length].to(device),
                    mask[:, :length].to(device),
                    images["tokens"][image_part].to(device),
                ).float().cpu()
            )  # fmt: skip
        logits = torch.cat(logits) if logits else torch.zeros(0, 2)
        return rerank_scores(logits, similarity.reshape(-1), self.rerank_score).reshape(image_index.shape)


def rerank_scores(match_logits: Tensor, similarity: Tensor, rerank_score: str) -> Tensor:
    """Stage 2's score of each pair ``[P]`` from its ITM ``[P, 2]`` no-match / match logits and its
    contrastive similarity ``[P]`` (see RERANK_SCORES)."""
    if rerank_score not in RERANK_SCORES:
        raise ValueError(f"rerank_score must be one of {RERANK_SCORES}, got {rerank_score!r}")
    if rerank_score == "itm_prob":
        return F.softmax(match_logits, dim=1)[:, 1]
    return match_logits[:, 1] + similarity


def _device_of(model: nn.Module | None) -> torch.device:
    parameter = next(model.parameters(), None) if model is not None else None
    return parameter.device if parameter is not None else torch.device("cpu")


def _cat_padded(parts: list[Tensor], length: int) -> Tensor:
    """Concatenate ``[B_i, L_i, ...]`` tensors along dim 0, zero-padding dim 1 to ``length``."""
    return torch.cat([F.pad(p, (0, 0) * (p.ndim - 2) + (0, length - p.shape[1])) for p in parts])


def _first_occurrence(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique ids and, for each, the position of its first occurrence in ``ids``."""
    unique_ids, inverse = torch.unique(ids, sorted=True, return_inverse=True)
    positions = torch.arange(len(ids), device=ids.device)
    first = torch.full((len(unique_ids),), len(ids), dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return unique_ids, first


def _offset_over_ranks(count: int) -> int:
    """How many items the ranks before this one hold (their items come first in a gather)."""
    if world_size() == 1:
        return 0
    counts = gather_variable_length(torch.tensor([count]))
    return int(counts[: dist.get_rank()].sum())


def _max_over_ranks(value: float) -> float:
    return float(all_reduce(torch.tensor([value], dtype=torch.float64), dist.ReduceOp.MAX).item())


def _sum_over_ranks(value: int) -> int:
    return int(all_reduce(torch.tensor([value], dtype=torch.long)).item())


def _gather_rows(results: QueryResults, rows: Tensor) -> QueryResults:
    """Each rank's rows -> all rows in order, on every rank."""
    order = torch.argsort(gather_variable_length(rows))

    def gather(tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else gather_variable_length(tensor)[order]

    return QueryResults(
        gather(results.ranks),
        gather(results.candidates),
        gather(results.similarity),
        gather(results.rescored),
    )


def _as_arrays(
    image_ids: Tensor,
    text_image_ids: Tensor,
    image_side: QueryResults,
    text_side: QueryResults,
    rerank_score: str,
) -> dict[str, np.ndarray]:
    arrays = {
        "image_ids": image_ids.numpy(),
        "text_image_ids": text_image_ids.numpy(),
        "i2t_candidates": image_side.candidates.numpy(),
        "i2t_similarity": image_side.similarity.numpy(),
        "t2i_candidates": text_side.candidates.numpy(),
        "t2i_similarity": text_side.similarity.numpy(),
    }
    if image_side.rescored is not None and text_side.rescored is not None:
        arrays["i2t_rescored"] = image_side.rescored.numpy()
        arrays["t2i_rescored"] = text_side.rescored.numpy()
        arrays["rerank_score"] = np.array(rerank_score)
    return arrays

"""Image-text retrieval for families without contrastive embeddings (ViLT, METER): the ITM head scores
every (image, text) pair, as ViLT and METER evaluate retrieval.

That is ``N_images * N_texts`` fusion passes (``itm_passes``), against ``(N_images + N_texts) * k`` for the
two-stage evaluation of vlp.evaluation.retrieval, which the contrastive families use; it is exact rather
than a re-ranking of candidates, and affordable on 1k-image test sets on GPUs. Image rows are split across
ranks; each rank scores its images against all texts and the rows are gathered. Reports
``txt_r1 .. r_mean`` (the same keys as the contrastive evaluation, so a run monitors
``val/retrieval/r_mean`` with either), ``itm_passes``, ``all_pairs``, ``seconds``, and writes the score
matrix as ``predictions/retrieval_<stage>_scores.npz`` (``similarity`` + ``text_image``, which
``vlp-score retrieval --scores`` reads).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from vlp.distributed import gather_variable_length, world_size
from vlp.evaluation.retrieval import RetrievalPass, _device_of, _max_over_ranks
from vlp.metrics.retrieval import retrieval_recall
from vlp.model.vlp import VLPModel
from vlp.types import FUSION, Batch, Encoded


class ITMRetrievalEvaluation:
    """Args:
    ks: the K of R@K.
    itm_objective: the name of the objective whose ITM head scores the pairs.
    pair_batch_size: (image, text) pairs per fusion pass.
    predictions_dir: where the score matrix is written; ``None``: not written.
    """

    needs = (FUSION,)

    def __init__(
        self,
        ks: tuple[int, ...] = (1, 5, 10),
        itm_objective: str = "itm",
        pair_batch_size: int = 256,
        predictions_dir: str | None = None,
    ) -> None:
        self.ks = tuple(ks)
        self.itm_objective = itm_objective
        self.pair_batch_size = pair_batch_size
        self.predictions_dir = Path(predictions_dir) if predictions_dir else None
        self._model: VLPModel | None = None
        self._itm: nn.Module | None = None
        self.reset()

    def bind(self, model: VLPModel, objectives: dict[str, nn.Module]) -> None:
        itm = objectives.get(self.itm_objective)
        if itm is None or not hasattr(itm, "match_logits"):
            raise ValueError(
                f"evaluators.retrieval scores pairs with an ITM objective named {self.itm_objective!r}, but "
                f"the objectives are {sorted(objectives)}: add itm to objectives"
            )
        self._model, self._itm = model, itm

    def reset(self) -> None:
        self._pass = RetrievalPass(embeddings=False, tokens=True)
        self._last: dict[str, np.ndarray] = {}

    def update(self, batch: Batch, encoded: Encoded, model: VLPModel, outputs: dict | None = None) -> None:
        self._pass.add(batch, encoded, model)

    def compute(self) -> dict[str, float]:
        if not self._pass:
            return {}
        images, texts, text_image = self._pass.gather()
        image_ids, image_tokens = images["id"], images["tokens"]
        text_tokens, text_masks = texts["tokens"], texts["mask"]
        rank, ranks = (dist.get_rank(), world_size()) if world_size() > 1 else (0, 1)
        rows = torch.arange(rank, len(image_ids), ranks)
        started = time.perf_counter()
        scores = torch.zeros(0, len(text_image))  # this rank may get no rows (fewer images than ranks)
        if len(rows):
            scores = torch.stack(
                [self._score_row(image_tokens[row], text_tokens, text_masks) for row in rows]
            )
        seconds = time.perf_counter() - started
        order = torch.argsort(gather_variable_length(rows))
        similarity = gather_variable_length(scores)[order]
        metrics = retrieval_recall(similarity, text_image, self.ks)
        pairs = float(similarity.numel())
        metrics.update(itm_passes=pairs, all_pairs=pairs, seconds=_max_over_ranks(seconds))
        metrics["num_images"], metrics["num_texts"] = float(len(image_ids)), float(len(text_image))
        self._last = {
            "similarity": similarity.numpy(),
            "text_image": text_image.numpy(),
            "image_ids": image_ids.numpy(),
        }
        return metrics

    def save(self, stage: str) -> Path | None:
        if self.predictions_dir is None or not self._last:
            return None
        self.predictions_dir.mkdir(parents=True, exist_ok=True)
        path = self.predictions_dir / f"retrieval_{stage}_scores.npz"
        np.savez(path, **self._last)
        return path

    @torch.no_grad()
    def _score_row(self, image: Tensor, text_tokens: Tensor, text_masks: Tensor) -> Tensor:
        """ITM match logits of one image against every text ``[N_texts]``."""
        assert self._model is not None and self._itm is not None, "bind() was not called"
        device = _device_of(self._model)
        logits = []
        for start in range(0, len(text_tokens), self.pair_batch_size):
            mask = text_masks[start : start + self.pair_batch_size]
            length = max(int(mask.sum(dim=1).max()), 1)  # fusion cost grows with length: drop padding
            tokens = text_tokens[start : start + self.pair_batch_size, :length].to(device)
            images = image.to(device).expand(len(tokens), *image.shape)
            pair_logits = self._itm.match_logits(self._model, tokens, mask[:, :length].to(device), images)
            logits.append(pair_logits[:, 1].float().cpu())
        return torch.cat(logits)

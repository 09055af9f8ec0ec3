"""``vlp.load(folder)``: a model exported by vlp-export, served with plain Python methods.

Images are PIL images and texts are strings; every method runs in eval mode without gradients. Inputs go
through the road evaluation takes (vlp.data: RGB conversion, the evaluation transform, the tokenizer at
the data's ``max_length``) and the framework's own forward code (``VLPModel.encode``, the objectives'
heads, vlp.model.generation), so scores equal what ``vlp-eval`` computes for the same inputs::

    model = vlp.load("exports/demo")
    model.match([image], ["a red circle left of a blue square"])  # tensor([0.93])
    model.retrieve("a red circle", gallery_images, k=5, rerank_k=16)
    model.answer(image, "what colour is the circle?")  # with a VQA head
    model.verify(left, right, "both images contain a circle")  # with an NLVR2 head: P(true)
    model.caption(image)  # with a captioning head
    model.explain([image], ["a red circle"]).heatmap(0)  # what the ITM decision rests on (vlp.explain)
    model.explain([image], ["a red circle"], method="occlusion")  # the same, by hiding parts of the image
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import Tensor
from transformers import AutoTokenizer

from vlp.data.collate import tokenize
from vlp.data.datamodule import eval_image_transform
from vlp.data.images import to_rgb
from vlp.evaluation.captioning import decode_captions
from vlp.evaluation.retrieval import rerank_scores
from vlp.explain import (
    EXPLAIN_METHODS,
    ExplainError,
    grad_cam,
    heatmap_image,
    occlusion,
    occlusion_window,
    patch_grid,
    text_to_image_attentions,
)
from vlp.export import (
    ANSWERS_FILE,
    CONFIG_FILE,
    IMAGE_PROCESSING_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    InferenceModules,
    build_inference_modules,
    exported_data,
)
from vlp.objectives.captioning import Captioning
from vlp.objectives.itm import ImageTextMatching
from vlp.objectives.nlvr2 import NLVR2PairClassification
from vlp.objectives.vqa import VQAClassification
from vlp.types import CONTRASTIVE, Encoded, ImageEncoding, TextEncoding

Head = TypeVar("Head")


class MissingHead(RuntimeError):
    """The exported model has no head (or no embeddings) for what was asked."""


class Ranked(NamedTuple):
    """One retrieval result: the gallery position and its score (higher is better)."""

    index: int
    score: float


class ExportedModel:
    """An exported model and its heads on ``device``, with the export's tokenizer and image transform.

    Args:
        modules: the model and its heads (``model``, ``objectives``), weights loaded.
        tokenizer: the run's tokenizer.
        image_settings: the evaluation transform's settings (``image_processing.json``).
        max_length: the data's tokenizer length; longer texts are cut as training cut them.
        answers: the VQA answer vocabulary (label i is ``answers[i]``), ``None`` without a VQA head.
        batch_size: items per forward pass in the methods that take lists.
    """

    def __init__(
        self,
        modules: InferenceModules,
        tokenizer: Any,
        image_settings: dict[str, Any],
        max_length: int,
        answers: list[str] | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> None:
        self.device = torch.device(device)
        self.modules = modules.to(self.device).eval()
        self.model = self.modules.model
        self.tokenizer = tokenizer
        self.transform = eval_image_transform(**image_settings)
        self.max_length = max_length
        self.answers = answers
        self.batch_size = batch_size

    # --- inputs ---------------------------------------------------------------------------------------
    def pixel_values(self, images: Sequence[Image.Image]) -> Tensor:
        """``[B, 3, H, W]``: each image converted to RGB as the data pipeline converts decoded images,
        then the evaluation transform."""
        for image in images:
            if not isinstance(image, Image.Image):
                raise TypeError(f"images must be PIL images, got {type(image).__name__}: use PIL.Image.open")
        return torch.stack([self.transform(to_rgb(image)) for image in images]).to(self.device)

    def text_inputs(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(input_ids ``[B, L]``, attention_mask ``[B, L]``), tokenized as the collators tokenize."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise TypeError("texts must be a list of strings")
        tokens = tokenize(self.tokenizer, list(texts), self.max_length)
        return tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)

    def head(self, kind: type[Head], method: str, hint: str) -> Head:
        """The objective head of class ``kind``; a clear error when the export has none."""
        for objective in self.modules.objectives.values():
            if isinstance(objective, kind):
                return objective
        heads = ", ".join(self.modules.objectives) or "none"
        raise MissingHead(
            f"{method} needs the {kind.__name__} head, which this export does not have (its heads: {heads}): "
            f"export a checkpoint trained with {hint}"
        )

    def _batches(self, items: Sequence[Any]) -> list[Sequence[Any]]:
        return [items[start : start + self.batch_size] for start in range(0, len(items), self.batch_size)]

    def _check_embeddings(self, method: str) -> None:
        if CONTRASTIVE not in self.model.dims.capabilities:
            raise MissingHead(
                f"{method} needs contrastive embeddings, which model family {self.model.dims.family} does "
                "not have: use match() to score pairs"
            )

    # --- the methods --------------------------------------------------------------------------------------
    @torch.no_grad()
    def match(self, images: Sequence[Image.Image], texts: Sequence[str]) -> Tensor:
        """ITM match probability of each (image, text) pair ``[N]`` (images and texts aligned)."""
        if len(images) != len(texts):
            raise ValueError(f"match takes aligned pairs: {len(images)} images but {len(texts)} texts")
        itm = self.head(ImageTextMatching, "match", "objectives.itm")
        probabilities = []
        for image_part, text_part in zip(self._batches(images), self._batches(texts), strict=True):
            image = self.model.encode_image(self.pixel_values(image_part))
            text = self.model.encode_text(*self.text_inputs(text_part))
            logits = itm.match_logits(self.model, text.tokens, text.attention_mask, image.tokens)
            probabilities.append(logits.float().softmax(dim=1)[:, 1].cpu())
        return torch.cat(probabilities) if probabilities else torch.zeros(0)

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> Tensor:
        """L2-normalised contrastive embeddings ``[N, E]`` (cosine similarity = dot product)."""
        self._check_embeddings("embed_images")
        parts = [self.model.encode_image(self.pixel_values(part)).embedding for part in self._batches(images)]
        return torch.cat([part.float().cpu() for part in parts]) if parts else torch.zeros(0)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """L2-normalised contrastive embeddings ``[N, E]`` of the texts."""
        self._check_embeddings("embed_texts")
        parts = [self.model.encode_text(*self.text_inputs(part)).embedding for part in self._batches(texts)]
        return torch.cat([part.float().cpu() for part in parts]) if parts else torch.zeros(0)

    @torch.no_grad()
    def retrieve(
        self,
        query: str | Image.Image,
        gallery: Sequence[Image.Image] | Sequence[str],
        k: int = 5,
        rerank_k: int | None = None,
        rerank_score: str = "itm_logit+itc",
    ) -> list[Ranked]:
        """The ``k`` best gallery items for a text query over images, or an image query over texts, best
        first. Stage 1 ranks by contrastive similarity; with ``rerank_k`` the ITM head re-scores the top
        ``rerank_k`` candidates and they are ranked by ``rerank_score`` (``itm_logit+itc``: the match logit
        plus the similarity, as ALBEF/BLIP and vlp's retrieval evaluation; ``itm_prob``: ITM alone)."""
        if k < 1:
            raise ValueError(f"k={k}: ask for at least one result")
        text_query = isinstance(query, str)
        if text_query:
            similarity = self.embed_images(gallery) @ self.embed_texts([query])[0]
        else:
            similarity = self.embed_texts(gallery) @ self.embed_images([query])[0]
        depth = min(max(k, rerank_k or 0), len(gallery))
        scores, candidates = similarity.topk(depth)
        if rerank_k:
            scores, candidates = scores[:rerank_k], candidates[:rerank_k]
            logits = self._query_match_logits(query, [gallery[int(i)] for i in candidates], text_query)
            scores = rerank_scores(logits, scores, rerank_score)
            order = scores.argsort(descending=True, stable=True)
            scores, candidates = scores[order], candidates[order]
        return [
            Ranked(int(index), float(score)) for index, score in zip(candidates[:k], scores[:k], strict=True)
        ]

    def _query_match_logits(self, query: Any, candidates: list[Any], text_query: bool) -> Tensor:
        """ITM ``[C, 2]`` logits of the query against each candidate: the query is encoded once."""
        itm = self.head(ImageTextMatching, "retrieve(rerank_k=...)", "objectives.itm")
        logits = []
        for part in self._batches(candidates):
            if text_query:
                image, text = self._encode_images(part), self._encode_texts([query], repeat=len(part))
            else:
                image, text = self._encode_images([query], repeat=len(part)), self._encode_texts(part)
            logits.append(itm.match_logits(self.model, text.tokens, text.attention_mask, image.tokens))
        return torch.cat(logits).float().cpu()

    def _encode_images(self, images: Sequence[Image.Image], repeat: int = 1) -> ImageEncoding:
        encoded = self.model.encode_image(self.pixel_values(images))
        return ImageEncoding(tokens=encoded.tokens.expand(repeat, -1, -1) if repeat > 1 else encoded.tokens,
                             embedding=None)  # fmt: skip

    def _encode_texts(self, texts: Sequence[str], repeat: int = 1) -> TextEncoding:
        encoded = self.model.encode_text(*self.text_inputs(texts))
        if repeat == 1:
            return encoded
        tokens, mask = encoded.tokens.expand(repeat, -1, -1), encoded.attention_mask.expand(repeat, -1)
        return TextEncoding(tokens=tokens, attention_mask=mask, embedding=None)

    @torch.no_grad()
    def answer(self, image: Image.Image, question: str) -> str:
        """The VQA head's answer: the highest-scoring entry of the answer vocabulary."""
        vqa = self.head(VQAClassification, "answer", "objectives=[vqa] (experiment=finetune_vqa)")
        assert self.answers is not None, "a VQA export has answers.json"
        encoded = self.model.encode(self.pixel_values([image]), *self.text_inputs([question]))
        return self.answers[int(vqa.logits(encoded, self.model).argmax(dim=1)[0])]

    @torch.no_grad()
    def verify(self, left: Image.Image, right: Image.Image, statement: str) -> float:
        """NLVR2: the probability that ``statement`` is true of the image pair (left, right), from the
        pair classifier (each image fused with the statement, the two pooled states together)."""
        nlvr2 = self.head(NLVR2PairClassification, "verify", "objectives=[nlvr2] (experiment=finetune_nlvr2)")
        # the pair's images one after the other, as the system flattens pixel_values [B, 2, 3, H, W]
        encoded = self.model.encode(self.pixel_values([left, right]), *self.text_inputs([statement]))
        return float(nlvr2.logits(encoded, self.model).float().softmax(dim=1)[0, 1])

    @torch.no_grad()
    def caption(self, image: Image.Image, num_beams: int | None = None) -> str:
        """A caption generated by the captioning decoder: greedy (``num_beams=1``) or beam search, with
        the run's generation settings (``None``: the run's own ``num_beams`` too)."""
        captioning = self.head(
            Captioning, "caption", "objectives=[captioning] (experiment=finetune_captioning)"
        )
        image_tokens = self.model.encode_image(self.pixel_values([image])).tokens
        return decode_captions(self.tokenizer, captioning.generate(image_tokens, self.model, num_beams))[0]

    def explain(
        self,
        images: Sequence[Image.Image],
        texts: Sequence[str],
        task: str = "itm",
        layers: list[int] | None = None,
        method: str = "gradcam",
        window: int | None = None,
        stride: int | None = None,
    ) -> Explanation:
        """Where in each image the decision about its text looks (vlp.explain). ``task``: ``itm`` explains
        the match logit of (image, text); ``vqa`` explains the logit of the answer the VQA head gives to
        the question ``text``. ``method``: ``gradcam`` (Grad-CAM over the fusion's text-to-image
        cross-attention, averaged over ``layers``, default all; a map over the patches) or ``occlusion``
        (the score's drop under a sliding ``window`` moved by ``stride`` pixels of the model's input,
        default a quarter of the image and half of that; a map over ``stride`` blocks)."""
        if len(images) != len(texts):
            raise ValueError(f"explain takes aligned pairs: {len(images)} images but {len(texts)} texts")
        if task not in ("itm", "vqa"):
            raise ValueError(f"task must be itm or vqa, got {task!r}")
        if method not in EXPLAIN_METHODS:
            raise ValueError(f"method must be one of {', '.join(EXPLAIN_METHODS)}, got {method!r}")
        if method == "gradcam" and (window is not None or stride is not None):
            raise ExplainError("window and stride set the occlusion method; Grad-CAM's map is the patch grid")
        if method == "occlusion" and layers is not None:
            raise ExplainError("layers choose Grad-CAM's cross-attention layers; occlusion has none")
        # Grad-CAM reads the text-to-image cross-attention (and refuses fusions without one); occlusion
        # only needs the explained score
        attentions = text_to_image_attentions(self.model.fusion) if method == "gradcam" else []
        scores, grids, answers = [], [], []
        for image_part, text_part in zip(self._batches(images), self._batches(texts), strict=True):
            pixels = self.pixel_values(image_part)
            with torch.no_grad():
                image = self.model.encode_image(pixels)
                text = self.model.encode_text(*self.text_inputs(text_part))
            score, chosen = self._explained_score(task, text, image.tokens)
            if method == "gradcam":
                mask = text.attention_mask
                part_scores, relevance = grad_cam(score, image.tokens, mask, attentions, layers)
                grid = patch_grid(relevance.float().cpu(), self.model.vision.prefix_tokens)
            else:
                window_px, stride_px = occlusion_window(min(pixels.shape[-2:]), window, stride)
                part_scores, grid = occlusion(
                    self._pixel_score(score, len(pixels)), pixels, window_px, stride_px, self.batch_size
                )
            if chosen is not None:
                answers += [self.answers[int(i)] for i in chosen]
            scores.append(part_scores.float().cpu())
            grids.append(grid.float().cpu())
        return Explanation(list(images), list(texts), torch.cat(scores), torch.cat(grids),
                           answers if task == "vqa" else None, method)  # fmt: skip

    def _pixel_score(self, score: Callable[[Tensor], Tensor], batch: int) -> Callable[[Tensor], Tensor]:
        """``score`` of image tokens as a function of pixels, for ``k`` stacked copies of a batch of
        ``batch`` (as vlp.explain.occlusion evaluates several window positions in one call)."""

        def pixel_score(pixels: Tensor) -> Tensor:
            image_tokens = self.model.encode_image(pixels).tokens
            return torch.cat([score(copy) for copy in image_tokens.split(batch)])

        return pixel_score

    def _explained_score(
        self, task: str, text: TextEncoding, image_tokens: Tensor
    ) -> tuple[Callable[[Tensor], Tensor], Tensor | None]:
        """``score(image_tokens) -> [B]`` for Grad-CAM, and for VQA the answer index it explains."""
        mask = text.attention_mask
        if task == "itm":
            itm = self.head(ImageTextMatching, "explain(task='itm')", "objectives.itm")
            return (lambda tokens: itm.match_logits(self.model, text.tokens, mask, tokens)[:, 1]), None
        hint = "objectives=[vqa] (experiment=finetune_vqa)"
        vqa = self.head(VQAClassification, "explain(task='vqa')", hint)

        def logits(tokens: Tensor) -> Tensor:
            encoded = Encoded(image=ImageEncoding(tokens=tokens, embedding=None), text=text)
            return vqa.logits(encoded, self.model)

        with torch.no_grad():
            chosen = logits(image_tokens).argmax(dim=1)
        return (lambda tokens: logits(tokens).gather(1, chosen[:, None]).squeeze(1)), chosen


class Explanation(NamedTuple):
    """What each (image, text) decision rests on, as a map over the image (see vlp.explain)."""

    images: list[Image.Image]
    texts: list[str]
    scores: Tensor  # [N]: the ITM match logit, or the VQA logit of ``answers``
    grids: Tensor  # [N, rows, cols], >= 0: Grad-CAM per image patch, or occlusion per stride block
    answers: list[str] | None  # VQA: the answer each map explains
    method: str = "gradcam"

    def heatmap(self, index: int, alpha: float = 0.5) -> Image.Image:
        """Image ``index`` with its map laid over it (red: what the decision rests on)."""
        return heatmap_image(to_rgb(self.images[index]), self.grids[index], alpha)


def load(folder: str | Path, device: str | torch.device = "cpu", batch_size: int = 64) -> ExportedModel:
    """The model vlp-export wrote to ``folder``, on ``device`` (CPU by default)."""
    from safetensors.torch import load_model

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} is not a vlp-export folder (no {CONFIG_FILE} and {WEIGHTS_FILE}): export one with "
            "vlp-export CKPT OUT"
        )
    config = OmegaConf.load(folder / CONFIG_FILE)
    tokenizer = AutoTokenizer.from_pretrained(folder / TOKENIZER_DIR)
    answers_file = folder / ANSWERS_FILE
    answers = json.loads(answers_file.read_text())["answers"] if answers_file.is_file() else None
    modules = build_inference_modules(config, exported_data(tokenizer, answers))
    load_model(modules, str(folder / WEIGHTS_FILE), strict=True, device=str(device))
    image_settings = json.loads((folder / IMAGE_PROCESSING_FILE).read_text())
    return ExportedModel(modules, tokenizer, image_settings, int(config.text.max_length), answers, device,
                         batch_size)  # fmt: skip

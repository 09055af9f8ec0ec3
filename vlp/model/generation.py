"""Caption generation: greedy and beam search over any next-token scorer.

Both searches see the decoder only as ``next_logits(tokens [N, t], parents [N] | None) -> logits [N, V]``,
the scores of the token after each row's prefix, so they work with any decoder, and tests can hand-build
one whose scores are known. ``parents[i]`` is the row of the previous call that row ``i`` extends (beam
search reorders its beams every step); ``None`` means the rows are those of the previous call, in the
same order. A scorer that recomputes the whole prefix ignores it; one with a KV cache (see
vlp.model.decoder) reorders its cache by it and only decodes the last token.

Conventions shared by both searches:

- a sequence starts with ``bos_id`` ([CLS] for BERT tokenizers) and ends with ``eos_id`` ([SEP]); rows
  that end early are right-padded with ``pad_id``;
- ``max_length`` and ``min_length`` count every token of the output, [CLS] and [SEP] included, as the
  data's ``max_length`` does; a sequence that reaches ``max_length`` without [SEP] is kept, truncated;
- scores are log-probabilities after the repetition penalty (CTRL's: logits of tokens already in the
  sequence are divided by the penalty when positive and multiplied when negative); ``min_length`` only
  forbids [SEP], it does not renormalise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

NextLogits = Callable[[Tensor, Tensor | None], Tensor]  # (tokens [N, t], parents [N]) -> logits [N, V]


def _check_lengths(max_length: int, min_length: int) -> None:
    if max_length < 2:
        raise ValueError(f"max_length={max_length}: generation needs at least 2 tokens ([CLS] and one more)")
    if min_length > max_length:
        raise ValueError(f"min_length={min_length} is above max_length={max_length}: lower min_length")


def next_log_probs(
    logits: Tensor, tokens: Tensor, eos_id: int, min_length: int, repetition_penalty: float
) -> Tensor:
    """Log-probabilities ``[N, V]`` of the next token after ``tokens [N, t]``, with the penalties applied."""
    logits = logits.float()
    if repetition_penalty != 1.0:
        seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, tokens, True)
        penalised = torch.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    log_probs = F.log_softmax(logits, dim=-1)
    if tokens.shape[1] + 1 < min_length:  # [SEP] now would end the sequence below min_length
        log_probs[:, eos_id] = -math.inf
    return log_probs


@torch.no_grad()
def greedy_search(
    next_logits: NextLogits,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_length: int,
    min_length: int = 0,
    repetition_penalty: float = 1.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """The most likely next token at every step, until [SEP] or ``max_length``. Returns ``[B, T]``."""
    _check_lengths(max_length, min_length)
    tokens = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    while tokens.shape[1] < max_length and not finished.all():
        log_probs = next_log_probs(next_logits(tokens, None), tokens, eos_id, min_length, repetition_penalty)
        token = log_probs.argmax(dim=-1).masked_fill(finished, pad_id)
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        finished |= token == eos_id
    return tokens


def _normalised(scores: Tensor, generated: int, length_penalty: float) -> Tensor:
    """A hypothesis' score: its log-probability over (its generated tokens) ** length_penalty."""
    return scores / generated**length_penalty


@torch.no_grad()
def beam_search(
    next_logits: NextLogits,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    num_beams: int,
    max_length: int,
    min_length: int = 0,
    length_penalty: float = 1.0,
    repetition_penalty: float = 1.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """The best hypothesis of a ``num_beams``-wide beam per example. Returns ``[B, T]``.

    ``next_logits`` is called with ``B * num_beams`` rows; rows ``b * num_beams ... (b + 1) * num_beams - 1``
    belong to example ``b`` (repeat the image tokens with ``repeat_interleave(num_beams, 0)``).

    A hypothesis ``y`` is ranked by ``log p(y) / |y| ** length_penalty``, where ``|y|`` counts the generated
    tokens ([SEP] included, [CLS] not; HF does not count the [SEP]): 0 ranks by log-probability, which
    favours short captions, 1 by the mean log-probability per token. Each step extends every live beam by
    every token and keeps the ``num_beams`` best continuations that do not end; those among the
    ``num_beams`` best that end with [SEP] become finished hypotheses, and the best finished one per
    example is kept. The search of an example stops only when no live beam can still beat its best
    finished hypothesis (log-probabilities only fall as a hypothesis grows, so the bound is exact, like
    HF's ``early_stopping="never"``) or at ``max_length``, where the live beams count as (truncated)
    hypotheses too.
    """
    _check_lengths(max_length, min_length)
    beams = num_beams
    tokens = torch.full((batch_size * beams, 1), bos_id, dtype=torch.long, device=device)
    # Every beam starts as the same [CLS]: only one copy is live, or the beam would fill with duplicates.
    beam_scores = torch.full((batch_size, beams), -math.inf, device=device)
    beam_scores[:, 0] = 0.0
    best_scores = torch.full((batch_size,), -math.inf, device=device)
    best = torch.full((batch_size, max_length), pad_id, dtype=torch.long, device=device)
    best_lengths = torch.ones(batch_size, dtype=torch.long, device=device)
    rank = torch.arange(2 * beams, device=device)
    examples = torch.arange(batch_size, device=device)

    def keep_if_better(scores: Tensor, hypotheses: Tensor) -> None:
        """Store ``hypotheses [B, t]`` of the examples where ``scores [B]`` beat their best so far."""
        better = scores > best_scores
        best_scores[better] = scores[better]
        best[better] = pad_id
        best[better, : hypotheses.shape[1]] = hypotheses[better]
        best_lengths[better] = hypotheses.shape[1]

    parents: Tensor | None = None
    while True:
        length = tokens.shape[1]  # tokens so far, [CLS] included
        logits = next_logits(tokens, parents)
        log_probs = next_log_probs(logits, tokens, eos_id, min_length, repetition_penalty)
        vocab = log_probs.shape[1]
        if vocab < 2 * beams:
            raise ValueError(f"num_beams={beams} needs a vocabulary of at least {2 * beams} tokens")
        candidates = (beam_scores[:, :, None] + log_probs.view(batch_size, beams, vocab)).flatten(1)
        # 2K candidates: each beam ends with [SEP] at most once, so K of them at least go on.
        top_scores, top_index = candidates.topk(2 * beams, dim=1)
        source, token = top_index // vocab, top_index % vocab
        previous = tokens.view(batch_size, beams, length)

        # Candidates that end here; as in a K-wide beam, only those ranked among the K best count, which
        # makes num_beams=1 with length_penalty=0 exactly greedy search.
        ends = (token == eos_id) & (rank < beams) & torch.isfinite(top_scores)
        ended = torch.where(ends, _normalised(top_scores, length, length_penalty), -math.inf)
        ended_score, ended_rank = ended.max(dim=1)
        ended_prefix = previous[examples, source[examples, ended_rank]]
        keep_if_better(
            ended_score, torch.cat([ended_prefix, torch.full_like(ended_prefix[:, :1], eos_id)], 1)
        )

        # The K best continuations that do not end become the live beams.
        going_on = torch.where(token == eos_id, -math.inf, top_scores)
        beam_scores, picked = going_on.topk(beams, dim=1)
        parents = (examples[:, None] * beams + source.gather(1, picked)).flatten()
        tokens = torch.cat([tokens[parents], token.gather(1, picked).flatten()[:, None]], dim=1)

        length += 1
        if length == max_length:  # no room for [SEP]: the live beams are hypotheses as they stand
            live_score, live_rank = _normalised(beam_scores, length - 1, length_penalty).max(dim=1)
            keep_if_better(live_score, tokens.view(batch_size, beams, length)[examples, live_rank])
            break
        # The best a live beam can still reach: its log-probability only falls, over a length that is at
        # least one more token and at most max_length - 1; the normalisation is best at one end.
        kindest_length = max_length - 1 if length_penalty > 0 else length
        reachable = _normalised(beam_scores.max(dim=1).values, kindest_length, length_penalty)
        if bool((best_scores >= reachable).all()):
            break
    return best[:, : int(best_lengths.max())]

"""Webdataset streams: read shards, split across ranks and workers, mix datasets, decode, skip bad samples.

Every stage is a small picklable object, so that the pipeline works in DataLoader worker processes. Rank
and world size are passed in explicitly by the datamodule (read from the Trainer), never guessed inside
a worker. Random choices use ``random.Random`` seeded from (seed, rank, worker, pass), never global state.

Training streams come in two modes, cut by the datamodule at the same number of batches on every rank
(DDP needs that):

- *resampled* (default): each (rank, worker) draws shards at random with replacement, forever. Several
  datasets can be mixed with sampling weights (:class:`MixedStreams`).
- *exact epochs*: each pass reads every shard once in an order shuffled per pass (the same on every
  rank), and each (rank, worker) keeps every n-th sample of it, so a sample is seen at most once per
  epoch. The epoch is cut at whole batches: fewer than ranks x workers x batch size samples of a pass
  are left out, different ones each epoch.

Evaluation streams read every sample exactly once: each (rank, worker) keeps every n-th sample.

A sample that fails to decode (see vlp.data.samples) is dropped and counted by reason; the count reaches
the training loop as ``batch["data_skipped"]`` (samples skipped since the previous batch of this
worker), where vlp.callbacks.DataSkipMonitor logs it and enforces the skip-rate limit.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import random
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import webdataset as wds

from vlp.data.samples import BadSample
from vlp.data.tars import TarShardSamples

log = logging.getLogger(__name__)

# Per worker and reason, this many skipped samples are logged with their key; the rest are only counted.
LOGGED_SKIPS_PER_REASON = 3
# A resampled stream over data that is entirely bad would spin forever without producing a batch (so the
# skip-rate limit never sees it): after this many bad samples in a row a worker stops with the reasons.
MAX_CONSECUTIVE_SKIPS = 10_000


def _worker_info() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class SkipCounter:
    """Skipped samples of one worker, by reason. Shared (same object after pickling) by the tar error
    handler, the decode stages and the batching stage of one pipeline."""

    def __init__(self) -> None:
        self.by_reason: Counter = Counter()
        self.pending = 0  # skipped since the last batch left this worker

    def add(self, reason: str, where: str) -> None:
        self.by_reason[reason] += 1
        self.pending += 1
        if self.by_reason[reason] <= LOGGED_SKIPS_PER_REASON:
            log.warning("skipping bad sample %s: %s", where, reason)

    def take(self) -> int:
        pending, self.pending = self.pending, 0
        return pending


class TarErrorHandler:
    """Webdataset handler: unreadable tar data (a truncated or corrupt shard) is counted, logged, skipped."""

    def __init__(self, counter: SkipCounter) -> None:
        self.counter = counter

    def __call__(self, error: Exception) -> bool:
        self.counter.add("unreadable shard data", repr(error)[:200])
        return True


class StreamContext:
    """Where one training stream is, shared by every stage of its pipeline (pickled with it, so one copy
    per worker): which pass (epoch) it is producing, as which worker's share (its *identity*), and how
    far it has got: raw samples that reached decoding, per source; mixing draws; batches made.

    Stages seed their random choices from (pass, identity) rather than from counters of their own, so a
    stream can be rebuilt at any epoch, and a resumed worker can take over another worker's share (see
    :class:`ResumableEpochs`). Without a pass begun (evaluation streams), the identity is the real worker.
    """

    def __init__(self, seed: int | str = 0) -> None:
        self.seed = seed
        self.identity: int | None = None
        self.num_identities = 1
        self.pass_index = 0
        self.raw_seen: Counter = Counter()  # source index -> raw samples that reached decoding
        self.raw_to_skip: dict[int, int] = {}
        self.items_to_skip = 0  # decoded items dropped before batching (streams with expand stages)
        self.mix_draws = 0
        self.mix_draws_to_skip = 0
        self.batches = 0

    def worker(self) -> tuple[int, int]:
        return (self.identity, self.num_identities) if self.identity is not None else _worker_info()

    def begin(self, pass_index: int, identity: int, num_identities: int, resume: dict | None) -> None:
        self.pass_index, self.identity, self.num_identities = pass_index, identity, num_identities
        self.raw_seen = Counter()
        self.mix_draws = self.batches = 0
        resume = resume or {}
        self.raw_to_skip = {int(k): v for k, v in resume.get("raw", {}).items()}
        self.items_to_skip = resume.get("items", 0)
        self.mix_draws_to_skip = resume.get("mix", 0)
        self.batches = resume.get("batches", 0)

    def position(self, items: int) -> dict[str, Any]:
        """What a resumed stream needs to continue right after the batch just made."""
        return {"pass": self.pass_index, "identity": self.identity, "workers": self.num_identities,
                "batches": self.batches, "raw": dict(self.raw_seen), "mix": self.mix_draws,
                "items": items}  # fmt: skip

    def seed_sample(self, source: int, index: int) -> None:
        """Seed the worker's global RNGs (which timm's random augmentations and the collator's caption
        choice and MLM masks draw from) from the sample's place in the stream, so that a sample is
        augmented alike however the stream got to it.

        Only the CPU generator: every draw of the pipeline is on the CPU. ``torch.manual_seed`` would
        also seed every accelerator; in a worker, where CUDA is never initialised, it queues that seeding
        with a formatted stack trace each time (about 0.5 ms a sample, more than the tar reading), and
        with num_workers=0 it would reseed the GPU in the middle of the training process (which
        vlp.callbacks.StepSeed reseeds before every batch anyway)."""
        seed = zlib.crc32(f"{self.seed}/{self.pass_index}/{self.identity}/{source}/{index}".encode())
        random.seed(seed)
        torch.default_generator.manual_seed(seed)


class ResumableEpochs(torch.utils.data.IterableDataset):
    """A training pipeline cut into epochs of ``batches_per_worker`` batches per worker, that can resume
    in the middle of an epoch exactly where a checkpoint left it.

    Each iteration is the pass (epoch) in ``epoch``, a number shared with the worker processes that the
    main process sets before every iteration (:class:`EpochLoader` sets the trainer's epoch), so that a
    stream built at any point produces the right epoch. ``resume`` = ``{"pass", "rotation",
    "positions"}``: in that pass, worker i produces the share of worker (i + rotation) mod W, because the
    DataLoader asks workers in turn and the first batch after the checkpoint was that worker's; it
    continues from the share's saved position (``StreamContext.position``).
    """

    def __init__(
        self,
        pipeline: Any,
        context: StreamContext,
        batches_per_worker: int,
        workers: int,
        resume: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.context = context
        self.batches_per_worker = batches_per_worker
        self.workers = workers
        self.resume = resume
        self.epoch = multiprocessing.Value("i", 0)  # shared with workers started after it

    def __len__(self) -> int:
        return self.batches_per_worker * self.workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers = _worker_info()
        pass_index = int(self.epoch.value)
        identity, position = worker, None
        if self.resume is not None and self.resume["pass"] == pass_index:
            identity = (worker + self.resume["rotation"]) % workers
            position = self.resume["positions"].get(identity)
        self.context.begin(pass_index, identity, workers, position)
        # islice stops without asking the pipeline for one more batch (which would be decoded for nothing)
        yield from itertools.islice(self.pipeline, max(0, self.batches_per_worker - self.context.batches))


class EpochLoader(torch.utils.data.DataLoader):
    """A DataLoader over :class:`ResumableEpochs` that tells it which epoch each iteration is, from
    ``current_epoch()`` (the trainer's; None outside a Trainer: then each iteration is the next epoch),
    just before the workers start on it.

    ``resumed_epoch``: the epoch a resumed run continues in. Lightning starts the first iteration while
    it sets up the optimizers' schedule, before it restores its own epoch counter from the checkpoint,
    so the first iteration takes this one instead."""

    def __init__(
        self,
        dataset: ResumableEpochs,
        current_epoch: Callable[[], int | None],
        resumed_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, **kwargs)
        self.current_epoch = current_epoch
        self.resumed_epoch = resumed_epoch
        self.iterations = 0

    def __iter__(self) -> Any:
        epoch = self.current_epoch()
        if epoch is None:  # used outside a Trainer: each iteration is the next epoch
            epoch = self.iterations
        self.iterations += 1
        if self.resumed_epoch is not None:
            epoch, self.resumed_epoch = max(epoch, self.resumed_epoch), None
        self.dataset.epoch.value = epoch
        return super().__iter__()


class ResampledShardStream(torch.utils.data.IterableDataset):
    """Infinite stream of shard urls drawn with replacement; a distinct, reproducible seed per rank/worker."""

    def __init__(self, urls: list[str], seed: int | str, rank: int, context: StreamContext) -> None:
        super().__init__()
        if not urls:
            raise ValueError("no shards to read")
        self.urls = list(urls)
        self.seed = seed
        self.rank = rank
        self.context = context

    def __iter__(self) -> Iterator[dict[str, str]]:
        worker, _ = self.context.worker()
        rng = random.Random(f"shards-{self.seed}-{self.rank}-{worker}-{self.context.pass_index}")
        while True:
            yield {"url": rng.choice(self.urls)}


class ShuffledShardPass(torch.utils.data.IterableDataset):
    """Every shard once, in an order that depends only on (seed, pass): identical on every rank and worker,
    so that :class:`EveryNthSample` partitions the same sequence everywhere."""

    def __init__(self, urls: list[str], seed: int, context: StreamContext) -> None:
        super().__init__()
        if not urls:
            raise ValueError("no shards to read")
        self.urls = list(urls)
        self.seed = seed
        self.context = context

    def __iter__(self) -> Iterator[dict[str, str]]:
        order = list(self.urls)
        random.Random(f"pass-{self.seed}-{self.context.pass_index}").shuffle(order)
        for url in order:
            yield {"url": url}


class SeededShuffle:
    """Buffer shuffle whose randomness depends on (seed, rank, worker, restart count)."""

    def __init__(
        self, bufsize: int, seed: int, rank: int, context: StreamContext, name: str = "shuffle"
    ) -> None:
        self.bufsize = bufsize
        self.seed = seed
        self.rank = rank
        self.context = context
        self.name = name

    def __call__(self, samples: Iterator[dict]) -> Iterator[dict]:
        if self.bufsize <= 1:
            return samples
        worker, _ = self.context.worker()
        rng = random.Random(f"{self.name}-{self.seed}-{self.rank}-{worker}-{self.context.pass_index}")
        return wds.shuffle(self.bufsize, initial=self.bufsize, rng=rng)(samples)


class EveryNthSample:
    """Keep the samples of this (rank, worker) out of the full stream: exact, balanced to within one."""

    def __init__(self, rank: int, world_size: int, context: StreamContext | None = None) -> None:
        self.rank = rank
        self.world_size = world_size
        self.context = context or StreamContext()

    def __call__(self, samples: Iterator[dict]) -> Iterator[dict]:
        worker, num_workers = self.context.worker()
        stride = self.world_size * num_workers
        mine = self.rank * num_workers + worker
        for index, sample in enumerate(samples):
            if index % stride == mine:
                yield sample


class DecodeOrSkip:
    """Decode each raw sample and transform its image(s); a bad sample is counted and dropped.

    ``decode`` raises BadSample for data it rejects. Any other exception in decoding is also a skip
    (counted under its type), so that one odd sample cannot end a 30-hour run; a systematic failure still
    stops the run, through the skip-rate limit, with the reason in the message.
    """

    def __init__(
        self,
        decode: Callable[[dict], dict],
        transform: Any,
        counter: SkipCounter,
        image_id_offset: int = 0,
        max_consecutive_skips: int = MAX_CONSECUTIVE_SKIPS,
        context: StreamContext | None = None,
        source: int = 0,
    ) -> None:
        self.decode = decode
        self.transform = transform
        self.counter = counter
        self.image_id_offset = image_id_offset
        self.max_consecutive_skips = max_consecutive_skips
        self.context = context  # training streams: counts samples, skips what a resumed stream has done
        self.source = source

    def _apply(self, raw: dict[str, Any]) -> dict[str, Any]:
        item = self.decode(raw)
        if "image" in item:
            item["pixel_values"] = self.transform(item.pop("image"))
        if "images" in item:
            item["pixel_values"] = torch.stack([self.transform(image) for image in item.pop("images")])
        if self.image_id_offset and "image_id" in item:
            item["image_id"] += self.image_id_offset
        return item

    def __call__(self, samples: Iterator[dict]) -> Iterator[dict]:
        in_a_row = 0
        for raw in samples:
            if self.context is not None:
                index = self.context.raw_seen[self.source]
                self.context.raw_seen[self.source] += 1
                if index < self.context.raw_to_skip.get(self.source, 0):
                    continue  # a resumed stream: read, but done before the checkpoint, so not decoded
                self.context.seed_sample(self.source, index)
            where = f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}"
            try:
                item = self._apply(raw)
            except BadSample as error:
                self.counter.add(error.reason, where)
            except Exception as error:  # noqa: BLE001 - see the class docstring
                self.counter.add(f"decode error ({type(error).__name__})", f"{where}: {error}")
            else:
                in_a_row = 0
                yield item
                continue
            in_a_row += 1
            if in_a_row >= self.max_consecutive_skips:
                reasons = ", ".join(f"{reason}: {n}" for reason, n in self.counter.by_reason.most_common(3))
                raise RuntimeError(
                    f"{in_a_row} bad samples in a row and none usable (last {where}; {reasons}): "
                    "are the shards and data config right?"
                )


class BatchWithSkips:
    """Batch samples and attach ``data_skipped``: the samples this worker skipped since its last batch.

    A full batch is held until the next good sample arrives (or the stream ends), so that skips at the
    end of a stream are still reported with the last batch.
    """

    def __init__(
        self,
        batch_size: int,
        collate: Callable[[list], dict],
        partial: bool,
        counter: SkipCounter,
        context: StreamContext | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.collate = collate
        self.partial = partial
        self.counter = counter
        self.context = context  # training streams: each batch carries the stream's position after it

    def _finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch["data_skipped"] = torch.tensor(self.counter.take(), dtype=torch.long)
        return batch

    def __call__(self, samples: Iterator[dict]) -> Iterator[dict]:
        current: list[dict] = []
        held: dict[str, Any] | None = None
        items = 0  # decoded items taken from the stream in this pass
        for sample in samples:
            items += 1
            if self.context is not None and items <= self.context.items_to_skip:
                continue  # a resumed stream with stages after decoding (VQA questions): replayed, dropped
            if held is not None:
                yield self._finish(held)
                held = None
            current.append(sample)
            if len(current) == self.batch_size:
                held, current = self.collate(current), []
                if self.context is not None:
                    self.context.batches += 1
                    held["data_position"] = self.context.position(items)
        if current and self.partial:
            if held is not None:
                yield self._finish(held)
            held = self.collate(current)
        if held is not None:
            yield self._finish(held)


class MixedStreams(torch.utils.data.IterableDataset):
    """Interleave several infinite sample streams, drawing the source of each sample by weight."""

    def __init__(
        self,
        streams: list[wds.DataPipeline],
        weights: list[float],
        seed: int,
        rank: int,
        context: StreamContext,
    ) -> None:
        super().__init__()
        if len(streams) != len(weights) or not streams:
            raise ValueError("MixedStreams needs one weight per stream")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"sampling weights must be >= 0 with a positive sum, got {weights}")
        self.streams = streams
        self.weights = list(weights)
        self.seed = seed
        self.rank = rank
        self.context = context

    def __iter__(self) -> Iterator[dict]:
        worker, _ = self.context.worker()
        rng = random.Random(f"mix-{self.seed}-{self.rank}-{worker}-{self.context.pass_index}")
        iterators = [iter(stream) for stream in self.streams]
        indices = list(range(len(iterators)))
        while True:
            (choice,) = rng.choices(indices, weights=self.weights)
            self.context.mix_draws += 1
            if self.context.mix_draws <= self.context.mix_draws_to_skip:
                continue  # a resumed stream: this draw's sample was used before the checkpoint
            yield next(iterators[choice])


class ReadInBursts:
    """Stage: pass samples on unchanged, in the same order, but pull them from upstream ``size`` at a time.

    The tar reading and grouping upstream are many small Python steps per sample. Interleaved one by one
    with image decoding and transforms, which sweep the CPU caches, they ran about 2.5x slower than in a
    tight loop (~0.2 ms against ~0.08 ms a sample, py-spy in the DataLoader workers of
    benchmarks/data_pipeline.py; see benchmarks/README.md); read in bursts they stay warm, and the
    pipeline spends 2-3 % less CPU per sample. The samples, and so the batches, are the same."""

    def __init__(self, size: int = 128) -> None:
        if size < 1:
            raise ValueError("ReadInBursts needs a size of at least 1")
        self.size = size

    def __call__(self, samples: Iterable[dict]) -> Iterator[dict]:
        samples = iter(samples)
        while burst := list(itertools.islice(samples, self.size)):
            yield from burst


def shard_samples(urls_stage: Any, counter: SkipCounter) -> list[Any]:
    """The first stages of every stream: a shard-url source, then its tar members grouped into samples
    (as ``wds.tarfile_to_samples`` groups them; see vlp.data.tars for why the members are read there),
    read in bursts (see ReadInBursts)."""
    return [urls_stage, TarShardSamples(handler=TarErrorHandler(counter)), ReadInBursts()]

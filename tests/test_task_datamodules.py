"""VQA and NLVR2 datamodules, mixing datasets, webdataset urls and exact epochs."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch

from vlp.data.datamodule import (
    IMAGE_ID_OFFSET_BITS,
    CaptionDataModule,
    NLVR2DataModule,
    VQADataModule,
)
from vlp.data.shards import SplitIndex
from vlp.metrics.vqa import normalize_answer

IMAGE_CONFIG = (32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def ready(datamodule):
    datamodule.set_image_config(*IMAGE_CONFIG)
    return datamodule


def official_questions(raw, subtype: str) -> list[dict]:
    return json.loads((raw / f"v2_OpenEnded_mscoco_{subtype}_questions.json").read_text())["questions"]


def test_vqa_evaluation_reads_every_question_once_with_its_soft_targets(synth_vqa):
    datamodule = ready(
        VQADataModule(str(synth_vqa.shards), str(synth_vqa.tokenizer), batch_size=8, num_workers=2)
    )
    answers = datamodule.answers
    annotations = json.loads((synth_vqa.raw / "v2_mscoco_val2014_annotations.json").read_text())[
        "annotations"
    ]
    by_question = {a["question_id"]: a for a in annotations}
    seen = []
    for batch in datamodule.val_dataloader():
        assert batch["vqa_targets"].shape == (len(batch["question_id"]), len(answers))
        assert batch["input_ids"].shape[0] == batch["pixel_values"].shape[0] == len(batch["answers"])
        for row, question_id in enumerate(batch["question_id"].tolist()):
            official = by_question[question_id]
            assert batch["answers"][row] == [a["answer"] for a in official["answers"]]
            assert batch["answer_type"][row] == official["answer_type"]
            # Soft targets: min(1, 0.3 x the number of the 10 answers that normalize to each answer).
            counts = Counter(normalize_answer(a["answer"]) for a in official["answers"])
            expected = torch.zeros(len(answers))
            for answer, n in counts.items():
                if answer in answers:
                    expected[answers.index(answer)] = min(1.0, 0.3 * n)
            assert torch.allclose(batch["vqa_targets"][row], expected)
            majority = normalize_answer(official["multiple_choice_answer"])
            assert batch["vqa_targets"][row, answers.index(majority)] == batch["vqa_targets"][row].max()
        seen += batch["question_id"].tolist()
    expected = [q["question_id"] for q in official_questions(synth_vqa.raw, "val2014")]
    assert sorted(seen) == sorted(expected)


def test_vqa_test_dev_has_questions_without_targets(synth_vqa):
    datamodule = ready(
        VQADataModule(str(synth_vqa.shards), str(synth_vqa.tokenizer), batch_size=16, num_workers=0)
    )
    batches = list(datamodule.test_dataloader())
    ids = [q for b in batches for q in b["question_id"].tolist()]
    assert sorted(ids) == sorted(q["question_id"] for q in official_questions(synth_vqa.raw, "test-dev2015"))
    assert all(float(b["vqa_targets"].sum()) == 0.0 for b in batches)


def test_vqa_training_epoch_counts_questions(synth_vqa):
    datamodule = ready(
        VQADataModule(str(synth_vqa.shards), str(synth_vqa.tokenizer), batch_size=8, num_workers=0)
    )
    num_questions = SplitIndex.read(synth_vqa.shards / "train2014").extra["num_questions"]
    assert num_questions == len(official_questions(synth_vqa.raw, "train2014"))
    batches = list(datamodule.train_dataloader())
    assert len(batches) == math.ceil(num_questions / 8)
    # Questions of one image are spread by the question shuffle, not all in one batch.
    per_batch_images = [len(set(b["image_id"].tolist())) for b in batches]
    assert max(per_batch_images) > 2


def test_vqa_train_and_val_can_be_concatenated(synth_vqa):
    datamodule = VQADataModule(
        str(synth_vqa.shards), str(synth_vqa.tokenizer), batch_size=8, train_split=["train2014", "val2014"]
    )
    total = len(official_questions(synth_vqa.raw, "train2014")) + len(
        official_questions(synth_vqa.raw, "val2014")
    )
    assert datamodule.epoch_items() == total


def test_nlvr2_batches_pair_left_and_right_images_with_each_row(synth_nlvr2):
    datamodule = ready(
        NLVR2DataModule(str(synth_nlvr2.shards), str(synth_nlvr2.tokenizer), batch_size=4, num_workers=0)
    )
    rows = [json.loads(line) for line in (synth_nlvr2.raw / "data" / "dev.json").read_text().splitlines()]
    label_of = {row["identifier"]: row["label"] == "True" for row in rows}
    seen = []
    for batch in datamodule.val_dataloader():
        assert batch["pixel_values"].shape[1:] == (2, 3, 32, 32)
        assert not torch.equal(batch["pixel_values"][:, 0], batch["pixel_values"][:, 1])
        for identifier, label in zip(batch["identifier"], batch["labels"].tolist(), strict=True):
            assert label == int(label_of[identifier])
        seen += batch["identifier"]
    assert sorted(seen) == sorted(label_of)


def caption_module(synth_data, **kwargs) -> CaptionDataModule:
    options = {"root": str(synth_data.shards), "tokenizer": str(synth_data.tokenizer), "batch_size": 8}
    return ready(CaptionDataModule(**{**options, "num_workers": 0, **kwargs}))


def test_mixing_follows_the_sampling_weights(synth_data):
    mix = {
        "first": {"root": str(synth_data.shards), "split": "train", "weight": 3.0},
        "second": {"root": str(synth_data.shards), "split": "val", "weight": 1.0},
    }
    datamodule = caption_module(synth_data, train_datasets=mix, samples_per_epoch=400)
    sources = Counter()
    for batch in datamodule.train_dataloader():
        sources.update((batch["image_id"] >> IMAGE_ID_OFFSET_BITS).tolist())
    assert sum(sources.values()) == 400
    # Binomial(400, 0.75): standard deviation 8.7 samples; 0.75 +- 0.1 is more than 4 of them.
    assert 0.65 < sources[0] / 400 < 0.85
    assert set(sources) == {0, 1}


def test_weights_without_resampling_are_refused(synth_data):
    mix = {"a": {"root": str(synth_data.shards), "weight": 2.0}, "b": {"root": str(synth_data.shards)}}
    datamodule = caption_module(synth_data, train_datasets=mix, resampled=False)
    with pytest.raises(ValueError, match="resampled=true"):
        datamodule.train_dataloader()


@pytest.mark.parametrize("form", ["brace", "pipe"])
def test_shards_can_come_from_webdataset_urls(synth_data, form):
    folder = synth_data.shards / "train"
    names = SplitIndex.read(folder).shards
    assert names == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    if form == "brace":
        urls = str(folder / "train-{000000..000002}.tar")
    else:
        urls = [f"pipe:cat {folder / name}" for name in names]
    datamodule = caption_module(
        synth_data, train_datasets={"web": {"urls": urls, "num_samples": 48}}, resampled=False
    )
    image_ids = [i for batch in datamodule.train_dataloader() for i in batch["image_id"].tolist()]
    assert len(image_ids) == len(set(image_ids)) == 48


@pytest.fixture
def http_server(synth_data):
    """The synthetic shards served over http on localhost (webdataset reads http urls with curl)."""
    import functools
    import shutil
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    if shutil.which("curl") is None:
        pytest.skip("webdataset reads http urls with curl, which is not installed")

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(synth_data.shards / "train"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_shards_can_come_from_http(synth_data, http_server):
    urls = f"{http_server}/train-{{000000..000002}}.tar"
    datamodule = caption_module(
        synth_data, train_datasets={"web": {"urls": urls, "num_samples": 48}}, resampled=False
    )
    image_ids = [i for batch in datamodule.train_dataloader() for i in batch["image_id"].tolist()]
    assert len(image_ids) == len(set(image_ids)) == 48


def test_urls_without_num_samples_are_a_clear_error(synth_data):
    datamodule = caption_module(synth_data, train_datasets={"web": {"urls": "/x/{0..3}.tar"}})
    with pytest.raises(ValueError, match="num_samples"):
        datamodule.train_dataloader()


def test_exact_epochs_see_every_sample_once_in_a_new_order(synth_data):
    datamodule = caption_module(synth_data, resampled=False, num_workers=2, batch_size=4)
    loader = datamodule.train_dataloader()
    epochs = [[i for batch in loader for i in batch["image_id"].tolist()] for _ in range(2)]
    for seen in epochs:
        assert len(seen) == len(set(seen)) == 48  # 48 images = 2 workers x 6 batches x 4
    assert epochs[0] != epochs[1]


def test_resampled_epochs_have_the_same_length_on_every_rank(synth_data):
    datamodule = caption_module(synth_data, batch_size=5)
    assert datamodule.steps_per_epoch(world_size=2) == math.ceil(48 / 10)

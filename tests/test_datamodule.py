import pytest
import torch

from vlp.data.datamodule import CaptionDataModule
from vlp.data.pipeline import EveryNthSample, ReadInBursts


def make_datamodule(synth_data, **kwargs) -> CaptionDataModule:
    options = dict(
        root=str(synth_data.shards), tokenizer=str(synth_data.tokenizer), batch_size=8, num_workers=0
    )
    options.update(kwargs)
    datamodule = CaptionDataModule(**options)
    datamodule.set_image_config(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return datamodule


def test_train_batches_hold_the_batch_contract(synth_data):
    datamodule = make_datamodule(synth_data)
    loader = datamodule.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 6  # 48 train images / batch size 8
    batch = batches[0]
    assert batch["pixel_values"].shape == (8, 3, 32, 32)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["mlm_labels"].shape
    assert batch["image_id"].shape == (8,)
    tokenizer = datamodule.tokenizer
    assert (batch["input_ids"][:, 0] == tokenizer.cls_token_id).all()
    picked = batch["mlm_labels"] != -100
    assert picked.any()
    assert torch.equal(batch["mlm_labels"][picked], batch["input_ids"][picked])
    assert "retrieval_input_ids" not in batch


def test_training_picks_a_random_caption_of_each_image(synth_data):
    datamodule = make_datamodule(synth_data, batch_size=4)
    texts_by_image: dict[int, set[str]] = {}
    tokenizer = datamodule.tokenizer
    for _ in range(6):
        for batch in datamodule.train_dataloader():
            for image_id, ids in zip(batch["image_id"].tolist(), batch["input_ids"], strict=True):
                texts_by_image.setdefault(image_id, set()).add(
                    tokenizer.decode(ids, skip_special_tokens=True)
                )
    assert max(len(texts) for texts in texts_by_image.values()) > 1


def test_train_augmentation_differs_from_the_deterministic_eval_resize(synth_data):
    datamodule = make_datamodule(synth_data)
    train_transform = datamodule._transform(train=True)
    eval_transform = datamodule._transform(train=False)
    from PIL import Image

    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    picture.paste((30, 30, 200), (0, 0, 20, 64))
    torch.manual_seed(0)
    train_views = [train_transform(picture) for _ in range(4)]
    assert any(not torch.equal(train_views[0], view) for view in train_views[1:])
    assert torch.equal(eval_transform(picture), eval_transform(picture))
    assert eval_transform(picture).shape == (3, 32, 32)


def test_evaluation_reads_every_image_once_with_all_captions(synth_data):
    datamodule = make_datamodule(synth_data, eval_batch_size=6)
    batches = list(datamodule.val_dataloader())
    image_ids = torch.cat([b["image_id"] for b in batches])
    assert len(image_ids) == len(set(image_ids.tolist())) == 20
    first, again = batches[0], next(iter(datamodule.val_dataloader()))
    assert torch.equal(first["mlm_input_ids"], again["mlm_input_ids"])  # evaluation masks are fixed
    owners = first["retrieval_text_image"]
    assert first["retrieval_input_ids"].shape[0] == owners.shape[0] >= 4 * first["image_id"].shape[0]
    assert owners.max() == first["image_id"].shape[0] - 1


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_evaluation_split_across_ranks_is_exact(synth_data, world_size):
    seen = []
    for rank in range(world_size):
        datamodule = make_datamodule(synth_data, eval_batch_size=5)
        datamodule._rank_and_world = lambda rank=rank: (rank, world_size)
        seen += torch.cat([b["image_id"] for b in datamodule.val_dataloader()]).tolist()
    assert len(seen) == len(set(seen)) == 20


def test_every_nth_sample_partitions_the_stream():
    parts = [list(EveryNthSample(rank, 3)(iter(range(10)))) for rank in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_training_streams_differ_across_ranks_and_have_equal_length(synth_data):
    ids = []
    for rank in range(2):
        datamodule = make_datamodule(synth_data)
        datamodule._rank_and_world = lambda rank=rank: (rank, 2)
        batches = list(datamodule.train_dataloader())
        assert len(batches) == 3  # 48 images / (8 per batch * 2 ranks)
        ids.append(torch.cat([b["image_id"] for b in batches]).tolist())
    assert ids[0] != ids[1]


def test_training_streams_differ_across_dataloader_workers(synth_data):
    datamodule = make_datamodule(synth_data, num_workers=2, batch_size=4)
    loader = datamodule.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 12
    # DataLoader alternates workers: even batches come from worker 0, odd from worker 1
    worker0 = torch.cat([b["image_id"] for b in batches[0::2]]).tolist()
    worker1 = torch.cat([b["image_id"] for b in batches[1::2]]).tolist()
    assert worker0 != worker1


def test_epoch_length_comes_from_the_index(synth_data):
    datamodule = make_datamodule(synth_data, batch_size=10)
    assert datamodule.steps_per_epoch(world_size=1) == 5
    assert datamodule.steps_per_epoch(world_size=4) == 2


def test_image_config_must_be_set_before_loading(synth_data):
    datamodule = CaptionDataModule(root=str(synth_data.shards), tokenizer=str(synth_data.tokenizer))
    with pytest.raises(RuntimeError, match="set_image_config"):
        datamodule.train_dataloader()


def test_an_overfitting_trainer_gets_the_same_first_batches_every_epoch(synth_data):
    """debug=overfit trains on Lightning's first ``overfit_batches`` of each epoch: they must be the same
    batches every epoch (a new pass would shuffle new images into them), or nothing can be overfitted."""
    from types import SimpleNamespace

    def first_image_ids(overfit_batches: float, epoch: int) -> list[int]:
        datamodule = make_datamodule(synth_data)
        datamodule.trainer = SimpleNamespace(
            overfit_batches=overfit_batches, current_epoch=epoch, global_rank=0, world_size=1, training=True
        )
        return next(iter(datamodule.train_dataloader()))["image_id"].tolist()

    assert first_image_ids(2, epoch=0) == first_image_ids(2, epoch=3)
    assert first_image_ids(0, epoch=0) != first_image_ids(0, epoch=3)  # normal epochs are new passes


def test_read_in_bursts_passes_every_sample_in_order_pulling_upstream_a_burst_at_a_time():
    pulled = []

    def upstream():
        for index in range(10):
            pulled.append(index)
            yield {"index": index}

    for size in (1, 3, 128):
        pulled.clear()
        stream = ReadInBursts(size)(upstream())
        assert next(stream) == {"index": 0}
        assert len(pulled) == min(size, 10)  # the first burst is read before the first sample leaves
        assert [sample["index"] for sample in stream] == list(range(1, 10))
    with pytest.raises(ValueError, match="at least 1"):
        ReadInBursts(0)

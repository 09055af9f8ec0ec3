"""Two-stage retrieval: chunked contrastive ranks, ITM re-ranking of the top-k, the files it writes, and
the same numbers from 2 gloo ranks as from one process; and all-pairs ITM retrieval (ViLT, METER)."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from vlp.evaluation.itm_retrieval import ITMRetrievalEvaluation
from vlp.evaluation.retrieval import RetrievalEvaluation
from vlp.metrics.retrieval import chunked_ranks, recall_from_ranks, retrieval_recall, topk_recall
from vlp.score import main as vlp_score


class TableModel(nn.Module):
    """encode_text embeds text t as ``text_embeddings[t]``; tokens carry the text index."""

    def __init__(self, text_embeddings: torch.Tensor) -> None:
        super().__init__()
        self.text_embeddings = text_embeddings

    def encode_text(self, input_ids, attention_mask):
        index = input_ids[:, 0]
        return SimpleNamespace(tokens=index[:, None, None].float(), embedding=self.text_embeddings[index])


class TableITM(nn.Module):
    """match_logits reads the (image, text) match logit from a table: a re-ranker we can work by hand."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.pairs_scored = 0

    def match_logits(self, model, text_tokens, text_mask, image_tokens):
        images, texts = image_tokens[:, 0, 0].long(), text_tokens[:, 0, 0].long()
        self.pairs_scored += len(images)
        match = self.table[images, texts]
        return torch.stack([torch.zeros_like(match), match], dim=1)


def feed(evaluator, image_embeddings, text_image, batches):
    """One evaluation batch per list of image ids; captions come with their image."""
    for image_ids in batches:
        image_ids = torch.tensor(image_ids)
        owner = torch.cat(
            [torch.full((int((text_image == i).sum()),), p) for p, i in enumerate(image_ids.tolist())]
        )
        texts = torch.cat([torch.nonzero(text_image == i)[:, 0] for i in image_ids.tolist()])
        batch = {
            "image_id": image_ids,
            "retrieval_input_ids": texts[:, None],
            "retrieval_attention_mask": torch.ones(len(texts), 1, dtype=torch.long),
            "retrieval_text_image": owner,
        }
        image = SimpleNamespace(
            embedding=image_embeddings[image_ids], tokens=image_ids[:, None, None].float()
        )
        evaluator.update(batch, SimpleNamespace(image=image), evaluator._model)


# 3 images with identity embeddings, so similarity[i, t] = text_embeddings[t, i]
HAND_SIMILARITY = torch.tensor(
    [
        [0.9, 0.1, 0.8, 0.0],  # image 0 owns texts 0 and 1
        [0.5, 0.2, 0.3, 0.1],  # image 1 owns text 2
        [0.1, 0.0, 0.4, 0.6],  # image 2 owns text 3
    ]
)
HAND_TEXT_IMAGE = torch.tensor([0, 0, 1, 2])


def hand_evaluator(rerank_score="itm_prob", tmp_path=None):
    perfect_itm = torch.where(HAND_TEXT_IMAGE[None, :] == torch.arange(3)[:, None], 5.0, -5.0)
    evaluator = RetrievalEvaluation(ks=(1, 2), rerank_k=2, rerank_score=rerank_score, chunk_size=1,
                                    predictions_dir=str(tmp_path) if tmp_path else None)  # fmt: skip
    itm = TableITM(perfect_itm)
    evaluator.bind(TableModel(HAND_SIMILARITY.t().contiguous()), {"itm": itm})
    feed(evaluator, torch.eye(3), HAND_TEXT_IMAGE, [[0, 1], [2]])
    return evaluator, itm


def test_reranking_fixes_what_the_top_k_holds_and_nothing_else(tmp_path):
    evaluator, itm = hand_evaluator(tmp_path=tmp_path)
    metrics = evaluator.compute()
    # contrastive: image ranks 0 (0.9), 1 (own 0.3 < text 0's 0.5), 0; text ranks 0, 1, 2, 0
    assert metrics["txt_r1"] == pytest.approx(200 / 3) and metrics["txt_r2"] == 100.0
    assert metrics["img_r1"] == 50.0 and metrics["img_r2"] == 75.0
    # the perfect re-ranker puts every right answer first when it is among the top 2 candidates; text 2's
    # image (similarity 0.3, third) is not, so it stays a miss: everything outside the top-k is left out
    assert metrics["rerank_txt_r1"] == 100.0
    assert metrics["rerank_img_r1"] == 75.0 and metrics["rerank_img_r2"] == 75.0
    # (3 images + 4 texts) x k=2 cross-encoder passes, against 12 for all pairs
    assert metrics["itm_passes"] == 14 == itm.pairs_scored and metrics["all_pairs"] == 12
    assert metrics["stage1_seconds"] >= 0 and metrics["stage2_seconds"] >= 0
    path = evaluator.save("val")
    assert path == tmp_path / "retrieval_val_topk.npz"
    out = tmp_path / "scores.json"
    vlp_score(["--out", str(out), "retrieval", "--scores", str(path), "--ks", "1", "2"])
    rescored = json.loads(out.read_text())
    assert rescored == {key: metrics[key] for key in rescored}
    bookkeeping = {"itm_passes", "all_pairs", "stage1_seconds", "stage2_seconds", "num_images", "num_texts"}
    assert set(rescored) == set(metrics) - bookkeeping


def test_itm_plus_similarity_score_is_the_logit_plus_the_contrastive_score(tmp_path):
    evaluator, _ = hand_evaluator("itm_logit+itc", tmp_path)
    evaluator.compute()
    with np.load(evaluator.save("val")) as saved:
        candidates, similarity, rescored = (
            saved["i2t_candidates"],
            saved["i2t_similarity"],
            saved["i2t_rescored"],
        )
        assert str(saved["rerank_score"]) == "itm_logit+itc"
    own = HAND_TEXT_IMAGE.numpy()[candidates] == np.arange(3)[:, None]
    np.testing.assert_allclose(rescored, np.where(own, 5.0, -5.0) + similarity, rtol=1e-6)
    np.testing.assert_allclose(
        similarity, np.sort(HAND_SIMILARITY.numpy(), axis=1)[:, ::-1][:, :2], rtol=1e-6
    )


def test_reranking_needs_an_itm_objective():
    evaluator = RetrievalEvaluation(rerank_k=16)
    with pytest.raises(ValueError, match="needs an ITM objective named 'itm'"):
        evaluator.bind(TableModel(torch.eye(2)), {"itc": nn.Identity()})
    with pytest.raises(ValueError, match="smaller than R@10"):
        RetrievalEvaluation(rerank_k=5)


def random_case(seed=0, num_images=9, dim=6):
    generator = torch.Generator().manual_seed(seed)
    text_image = torch.cat([torch.full((1 + i % 3,), i) for i in range(num_images)])
    images = torch.nn.functional.normalize(torch.randn(num_images, dim, generator=generator), dim=1)
    texts = torch.nn.functional.normalize(
        images[text_image] + torch.randn(len(text_image), dim, generator=generator), dim=1
    )
    table = torch.randn(num_images, len(text_image), generator=generator)
    return images, texts, text_image, table


def test_chunked_and_top_k_ranks_agree_with_the_dense_matrix():
    images, texts, text_image, _ = random_case()
    dense = retrieval_recall(images @ texts.t(), text_image, ks=(1, 3, 5))
    for chunk_size in (1, 4, 1000):
        assert recall_from_ranks(*chunked_ranks(images, texts, text_image, chunk_size), ks=(1, 3, 5)) == dense
    similarity = images @ texts.t()
    i2t = similarity.topk(5, dim=1)
    t2i = similarity.t().topk(5, dim=1)
    assert topk_recall(i2t.indices, i2t.values, t2i.indices, t2i.values, text_image, ks=(1, 3, 5)) == dense


def single_process_metrics(batches):
    images, texts, text_image, table = random_case()
    evaluator = RetrievalEvaluation(ks=(1, 2, 3), rerank_k=4, chunk_size=2, pair_batch_size=5)
    evaluator.bind(TableModel(texts), {"itm": TableITM(table)})
    feed(evaluator, images, text_image, batches)
    return evaluator.compute()


def itm_only_metrics(batches, predictions_dir=None):
    images, texts, text_image, table = random_case()
    evaluator = ITMRetrievalEvaluation(ks=(1, 2, 3), pair_batch_size=5, predictions_dir=predictions_dir)
    evaluator.bind(TableModel(texts), {"itm": TableITM(table)})
    feed(evaluator, images, text_image, batches)
    return evaluator.compute(), evaluator


EVALUATIONS = {"two_stage": single_process_metrics, "itm_only": lambda batches: itm_only_metrics(batches)[0]}


def _ddp_worker(rank, init_file, out_dir, batches_per_rank, evaluation="two_stage"):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        metrics = EVALUATIONS[evaluation](batches_per_rank[rank])
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(metrics))
    finally:
        dist.destroy_process_group()


def test_two_ranks_split_the_work_and_agree_with_one_process(tmp_path):
    # rank 1 sees image 4 a second time, as a padded distributed sampler would show it
    batches_per_rank = [[[0, 1, 2], [3, 4]], [[5, 6], [7, 8, 4]]]
    expected = single_process_metrics([[0, 1, 2], [3, 4], [5, 6], [7, 8]])
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path), batches_per_rank), nprocs=2, join=True)
    for rank in range(2):
        metrics = json.loads((tmp_path / f"rank{rank}.json").read_text())
        timing = {"stage1_seconds", "stage2_seconds"}
        assert {k: v for k, v in metrics.items() if k not in timing} == pytest.approx(
            {k: v for k, v in expected.items() if k not in timing}
        )
    assert expected["itm_passes"] == (9 + 18) * 4 and expected["all_pairs"] == 9 * 18
    # the re-ranker does change the numbers on this case (a random table is a poor re-ranker)
    assert expected["rerank_r_mean"] != expected["r_mean"]


def test_all_pairs_itm_retrieval_ranks_by_the_itm_score_matrix(tmp_path):
    _, _, text_image, table = random_case()
    # image 4 is seen twice (a padded sampler): it counts once, with the captions of its first occurrence
    metrics, evaluator = itm_only_metrics([[0, 1, 2], [3, 4], [5, 6], [7, 8, 4]], str(tmp_path))
    expected = retrieval_recall(table, text_image, ks=(1, 2, 3))
    assert {key: metrics[key] for key in expected} == pytest.approx(expected)
    assert metrics["itm_passes"] == metrics["all_pairs"] == 9 * 18 == evaluator._itm.pairs_scored
    out = tmp_path / "scores.json"
    vlp_score(["--out", str(out), "retrieval", "--scores", str(evaluator.save("val")), "--ks", "1", "2", "3"])
    assert json.loads(out.read_text()) == pytest.approx(expected)


def test_all_pairs_itm_retrieval_on_two_ranks_agrees_with_one_process(tmp_path):
    batches_per_rank = [[[0, 1, 2], [3, 4]], [[5, 6], [7, 8, 4]]]
    expected, _ = itm_only_metrics([[0, 1, 2], [3, 4], [5, 6], [7, 8]])
    mp.spawn(
        _ddp_worker,
        args=(str(tmp_path / "init"), str(tmp_path), batches_per_rank, "itm_only"),
        nprocs=2,
        join=True,
    )
    for rank in range(2):
        metrics = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert {k: v for k, v in metrics.items() if k != "seconds"} == pytest.approx(
            {k: v for k, v in expected.items() if k != "seconds"}
        )


def test_vlp_score_retrieval_takes_a_dense_score_matrix(tmp_path, capsys):
    path = tmp_path / "scores.npz"
    np.savez(path, similarity=HAND_SIMILARITY.numpy(), text_image=HAND_TEXT_IMAGE.numpy())
    out = tmp_path / "metrics.json"
    vlp_score(["--out", str(out), "retrieval", "--scores", str(path), "--ks", "1", "2"])
    assert json.loads(out.read_text()) == retrieval_recall(HAND_SIMILARITY, HAND_TEXT_IMAGE, ks=(1, 2))
    np.savez(path, similarity=HAND_SIMILARITY.numpy())
    with pytest.raises(SystemExit):
        vlp_score(["retrieval", "--scores", str(path)])
    assert "a dense similarity needs text_image" in capsys.readouterr().err


def test_a_gallery_smaller_than_k_reranks_everything():
    # 3 images, 4 texts, rerank_k 16: every candidate is re-ranked, so R@10 is defined (and perfect)
    evaluator = RetrievalEvaluation(rerank_k=16, rerank_score="itm_prob")
    perfect_itm = torch.where(HAND_TEXT_IMAGE[None, :] == torch.arange(3)[:, None], 5.0, -5.0)
    evaluator.bind(TableModel(HAND_SIMILARITY.t().contiguous()), {"itm": TableITM(perfect_itm)})
    feed(evaluator, torch.eye(3), HAND_TEXT_IMAGE, [[0, 1, 2]])
    metrics = evaluator.compute()
    assert metrics["itm_passes"] == 3 * 4 + 4 * 3  # each direction re-scores all of its candidates
    assert metrics["rerank_r_mean"] == 100.0 and metrics["img_r10"] == 100.0

"""Captioning: the causal decoder, greedy and beam search, the caption evaluator and vlp-train on it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import compose_train_config
from vlp.build import build_run
from vlp.checkpoint import init_from_checkpoint
from vlp.evaluation.captioning import CaptionEvaluation
from vlp.metrics.caption import caption_scores, load_caption_results
from vlp.model.decoder import CaptionDecoder
from vlp.model.generation import beam_search, greedy_search
from vlp.optim import parameter_groups
from vlp.types import Encoded, ImageEncoding, ObjectiveOutput, TextEncoding

BOS, EOS, PAD = 2, 3, 0  # the synthetic tokenizer's [CLS], [SEP], [PAD]


def encoded_images(image_tokens: torch.Tensor) -> Encoded:
    """An Encoded whose image tokens are given (the caption objective reads nothing else)."""
    rows = image_tokens.shape[0]
    return Encoded(
        image=ImageEncoding(tokens=image_tokens, embedding=torch.zeros(rows, 1)),
        text=TextEncoding(
            tokens=torch.zeros(rows, 1, 1), attention_mask=torch.ones(rows, 1), embedding=torch.zeros(rows, 1)
        ),
    )


def make_decoder(model, share: bool) -> CaptionDecoder:
    dims = model.dims
    torch.manual_seed(1)
    return CaptionDecoder(
        dims.text_width, dims.vision_width, dims.vocab_size, dims.fusion_layers, share_with_fusion=share
    ).eval()


@pytest.mark.parametrize("share", [False, True])
def test_a_token_only_changes_the_logits_of_later_positions(tiny_model, share):
    decoder = make_decoder(tiny_model, share)
    image = torch.randn(2, 5, tiny_model.dims.vision_width)
    ids = torch.randint(4, 50, (2, 9))
    changed = ids.clone()
    changed[:, 6] = (ids[:, 6] + 1 - 4) % 46 + 4
    with torch.no_grad():
        before, after = decoder(ids, image, tiny_model), decoder(changed, image, tiny_model)
    assert torch.allclose(before[:, :6], after[:, :6], atol=1e-6)  # positions 0..5 never see token 6
    assert not torch.allclose(before[:, 6:], after[:, 6:], atol=1e-4)
    with torch.no_grad():  # and the image matters
        assert not torch.allclose(before, decoder(ids, torch.randn_like(image), tiny_model), atol=1e-4)


@pytest.mark.parametrize("share", [False, True])
def test_cached_decoding_gives_the_full_pass_logits_also_after_reordering(tiny_model, share):
    decoder = make_decoder(tiny_model, share)
    image = torch.randn(3, 5, tiny_model.dims.vision_width)
    ids = torch.randint(4, 50, (3, 6))
    scorer = decoder.scorer(image, tiny_model)
    with torch.no_grad():
        full = decoder(ids, image, tiny_model)
        for position in range(4):
            assert torch.allclose(scorer(ids[:, : position + 1], None), full[:, position], atol=1e-5)
        # Beam search reorders its rows: row i now continues row parents[i], with that row's image.
        parents = torch.tensor([2, 2, 0])
        reordered = torch.cat([ids[parents, :4], ids[:, 4:5]], dim=1)
        expected = decoder(reordered, image[parents], tiny_model)[:, -1]
        assert torch.allclose(scorer(reordered, parents), expected, atol=1e-5)


def test_sharing_reuses_the_fusion_layers_without_registering_them_twice(synth_data, tmp_path):
    cfg = compose_train_config([
        f"data_dir={synth_data.root}", f"run_dir={tmp_path}", "experiment=finetune_captioning",
        "objectives.captioning.decoder.share_with_fusion=true",
    ])  # fmt: skip
    system = build_run(cfg).system
    decoder_names = [name for name, _ in system.objectives["captioning"].decoder.named_parameters()]
    assert not any("cross_attention" in name or "mlp" in name for name in decoder_names)
    groups = parameter_groups(system, 0.01, 1e-3, {"model": 0.2})
    optimised = [id(p) for group in groups for p in group["params"]]
    assert len(optimised) == len(set(optimised)) == len(list(system.parameters()))
    batch = {
        "input_ids": torch.tensor([[BOS, 10, 11, EOS], [BOS, 12, EOS, PAD]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
    }
    encoded = encoded_images(torch.randn(2, 17, system.model.dims.vision_width))
    system.objectives["captioning"](batch, encoded, system.model).loss.backward()
    assert system.model.fusion.layers[0].cross_attention.query.weight.grad is not None
    assert system.model.text.encoder.embeddings.word_embeddings.weight.grad is not None  # the tied head


@pytest.mark.parametrize("share", ["false", "true"])
def test_finetuning_starts_from_a_pretraining_checkpoint(synth_data, tmp_path, share):
    def build(*overrides):
        torch.manual_seed(len(overrides))
        cfg = compose_train_config([f"data_dir={synth_data.root}", f"run_dir={tmp_path}", *overrides])
        return build_run(cfg).system

    pretrained = build()  # itc + itm + mlm, as `make demo` trains it
    torch.save({"state_dict": pretrained.state_dict()}, tmp_path / "pre.ckpt")
    system = build("experiment=finetune_captioning", f"model.init_from={tmp_path / 'pre.ckpt'}",
                   f"objectives.captioning.decoder.share_with_fusion={share}")  # fmt: skip
    for name, tensor in system.model.state_dict().items():
        assert torch.equal(tensor, pretrained.model.state_dict()[name]), name
    report = init_from_checkpoint(system, tmp_path / "pre.ckpt")
    assert report.missing  # the decoder is new: it starts fresh
    assert all(name.startswith("objectives.captioning.decoder.") for name in report.missing)


def test_the_lm_loss_is_next_token_cross_entropy_over_real_tokens(synth_data, tmp_path):
    cfg = compose_train_config([
        f"data_dir={synth_data.root}", f"run_dir={tmp_path}", "experiment=finetune_captioning",
        "objectives.captioning.label_smoothing=0.0", "objectives.captioning.max_length=12",
    ])  # fmt: skip
    system = build_run(cfg).system.eval()
    objective, model = system.objectives["captioning"], system.model
    ids = torch.tensor([[BOS, 10, 11, 12, EOS], [BOS, 13, EOS, PAD, PAD]])
    mask = (ids != PAD).long()
    image_tokens = torch.randn(2, 17, model.dims.vision_width)
    encoded = encoded_images(image_tokens)
    output = objective({"input_ids": ids, "attention_mask": mask}, encoded, model)
    with torch.no_grad():
        log_probs = objective.decoder(ids[:, :-1], image_tokens, model).log_softmax(-1)
    targets = [(0, 0, 10), (0, 1, 11), (0, 2, 12), (0, 3, EOS), (1, 0, 13), (1, 1, EOS)]
    expected = -sum(log_probs[row, position, token] for row, position, token in targets) / len(targets)
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert output.metric_weights["acc"] == len(targets)
    generated = output.predictions["caption_ids"]  # eval mode: a caption per image
    assert generated.shape[0] == 2 and (generated[:, 0] == BOS).all()
    assert generated.shape[1] <= objective.max_length
    objective.train()
    assert not objective({"input_ids": ids, "attention_mask": mask}, encoded, model).predictions


# --- generation -------------------------------------------------------------------------------------


def test_greedy_search_equals_beam_search_with_one_beam(tiny_model):
    decoder = make_decoder(tiny_model, share=False)
    image = torch.randn(6, 5, tiny_model.dims.vision_width)

    def scorer():
        """The random decoder, with [SEP] made likelier with length, faster for later images, so that
        captions end at different steps and some run into max_length."""
        decode = decoder.scorer(image, tiny_model)

        def next_logits(tokens, parents):
            logits = decode(tokens, parents).clone()
            logits[:, EOS] += 0.06 * tokens.shape[1] * torch.arange(1, 7)
            return logits

        return next_logits

    settings = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, max_length=12, min_length=5, repetition_penalty=1.3)
    greedy = greedy_search(scorer(), 6, **settings)
    beam = beam_search(scorer(), 6, num_beams=1, length_penalty=0.0, **settings)
    assert torch.equal(greedy, beam)
    lengths = (greedy != PAD).sum(1)
    assert lengths.min() == 5 and lengths.max() == 12 and len(set(lengths.tolist())) >= 3


def table_scorer(tables: list[dict[tuple[int, ...], dict[int, float]]], beams: int):
    """A decoder whose next-token probabilities are given: ``tables[example][prefix] = {token: p}``
    (prefixes without [CLS]); unlisted tokens get a tiny probability. Rows belong to example ``row //
    beams``, as beam_search lays them out."""

    def next_logits(tokens: torch.Tensor, parents: torch.Tensor | None) -> torch.Tensor:
        logits = torch.full((tokens.shape[0], 8), math.log(1e-6))
        for row, prefix in enumerate(tokens.tolist()):
            for token, probability in tables[row // beams].get(tuple(prefix[1:]), {}).items():
                logits[row, token] = math.log(probability)
        return logits

    return next_logits


A, B, C = 4, 5, 6
# Greedy takes A (0.6), then [SEP] (0.5): p = 0.30. B then [SEP] has p = 0.4 * 0.97 = 0.39.
GREEDY_TRAP = {(): {A: 0.6, B: 0.4}, (A,): {EOS: 0.5, A: 0.25, B: 0.25}, (B,): {EOS: 0.97, C: 0.03}}
# The same with A and B swapped, so that the two examples of a batch want different answers.
SWAPPED = {(): {B: 0.6, A: 0.4}, (B,): {EOS: 0.5, A: 0.25, B: 0.25}, (A,): {EOS: 0.97, C: 0.03}}


def greedy(tables):
    settings = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, max_length=6)
    return greedy_search(table_scorer(tables, 1), len(tables), **settings).tolist()


def beam(tables, num_beams: int, length_penalty: float):
    settings = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, max_length=6, length_penalty=length_penalty)
    scorer = table_scorer(tables, num_beams)
    return beam_search(scorer, len(tables), num_beams=num_beams, **settings).tolist()


def test_beam_search_finds_the_likelier_caption_that_greedy_misses():
    assert greedy([GREEDY_TRAP, SWAPPED]) == [[BOS, A, EOS], [BOS, B, EOS]]
    assert beam([GREEDY_TRAP, SWAPPED], num_beams=2, length_penalty=0.0) == [[BOS, B, EOS], [BOS, A, EOS]]


def test_length_penalty_trades_total_for_per_token_probability():
    # "A" then [SEP]: log p = -0.70 (-0.35 per token); "B C" then [SEP]: -0.82 (-0.27 per token).
    table = {(): {A: 0.55, B: 0.45}, (A,): {EOS: 0.9, C: 0.1}, (B,): {C: 0.99}, (B, C): {EOS: 0.99}}
    assert beam([table], num_beams=2, length_penalty=0.0) == [[BOS, A, EOS]]
    # Length-normalised, the longer caption wins although the shorter one finished first: finished
    # hypotheses are kept while live beams could still beat them.
    assert beam([table], num_beams=2, length_penalty=1.0) == [[BOS, B, C, EOS]]


def test_a_beam_that_never_ends_is_kept_truncated_at_max_length():
    table = {(): {A: 0.9}, (A,): {A: 0.9}, (A, A): {A: 0.9}, (A, A, A): {A: 0.9}, (A, A, A, A): {A: 0.9}}
    assert beam([table], num_beams=2, length_penalty=1.0) == [[BOS, A, A, A, A, A]]


# --- evaluation -------------------------------------------------------------------------------------


def caption_batch(tokenizer, image_ids, generated, references):
    ids = tokenizer(generated, padding="longest", return_tensors="pt")["input_ids"]
    batch = {"image_id": torch.tensor(image_ids), "captions": references}
    return batch, {"captioning": ObjectiveOutput(loss=torch.zeros(()), predictions={"caption_ids": ids})}


def test_the_evaluator_scores_its_results_file_with_the_coco_metrics(synth_data, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(synth_data.tokenizer)
    evaluator = CaptionEvaluation(tokenizer, predictions_dir=str(tmp_path), use_java=False)
    references = {
        7: ["A red circle.", "There is one object: a red circle."],
        3: ["A blue square and a red circle.", "A blue square is to the left of a red circle."],
        5: ["A green triangle.", "A small green triangle on a dark background."],
    }
    generated = {7: "a red circle.", 3: "a blue square and a circle.", 5: ""}  # empty: an early [SEP]
    for image_ids in ([7, 3], [5, 3]):  # image 3 twice (as when ranks share a padded last batch): scored once
        batch, outputs = caption_batch(
            tokenizer, image_ids, [generated[i] for i in image_ids], [references[i] for i in image_ids]
        )
        evaluator.update(batch, None, None, outputs)
    metrics = evaluator.compute()
    path = evaluator.save("val")
    results = json.loads(path.read_text())
    assert path.name == "caption_val_results.json"
    assert results == [{"image_id": i, "caption": generated[i]} for i in (3, 5, 7)]
    official = caption_scores(load_caption_results(path), references, use_java=False)
    assert {key: metrics[key] for key in official} == pytest.approx(official)
    assert set(official) >= {"Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"} and metrics["num_images"] == 3


def test_a_split_without_references_only_counts_images(synth_data):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(synth_data.tokenizer)
    evaluator = CaptionEvaluation(tokenizer, use_java=False)
    batch, outputs = caption_batch(tokenizer, [1, 2], ["a red circle.", "a cat."], [[], []])
    evaluator.update(batch, None, None, outputs)
    assert evaluator.compute() == {"num_images": 2.0}


def test_caption_batches_carry_every_raw_caption_of_their_images(synth_data, tmp_path):
    karpathy = json.loads(synth_data.karpathy_json.read_text())
    raw = {image["cocoid"]: [s["raw"] for s in image["sentences"]] for image in karpathy["images"]}
    cfg = compose_train_config([f"data_dir={synth_data.root}", f"run_dir={tmp_path}",
                                "experiment=finetune_captioning", "data.num_workers=0"])  # fmt: skip
    run = build_run(cfg)
    batch = next(iter(run.datamodule.val_dataloader()))
    assert len(batch["captions"]) == len(batch["image_id"])
    for image_id, captions in zip(batch["image_id"].tolist(), batch["captions"], strict=True):
        assert captions == raw[image_id]


# --- vlp-train --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_finetuning_captioning_writes_results_that_score_as_logged(synth_data, tmp_path):
    from tests.test_train import vlp_train

    vlp_train(synth_data, tmp_path, "experiment=finetune_captioning", "debug=limit",
              "trainer.limit_val_batches=1.0", "data.batch_size=8", "data.eval_batch_size=8",
              "trainer.max_epochs=1", "system.scheduler.warmup_steps=2",
              "evaluators.captioning.use_java=false", "objectives.captioning.max_length=12")  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    results = load_caption_results(tmp_path / "predictions" / "caption_val_results.json")
    karpathy = json.loads(synth_data.karpathy_json.read_text())
    references = {
        image["cocoid"]: [s["raw"] for s in image["sentences"]]
        for image in karpathy["images"]
        if image["split"] == "val"
    }
    assert sorted(r["image_id"] for r in results) == sorted(references)  # every val image, once
    official = caption_scores(results, references, use_java=False)
    assert metrics["val/captioning/CIDEr"] == pytest.approx(official["CIDEr"], abs=1e-6)
    assert metrics["val/captioning/Bleu_4"] == pytest.approx(official["Bleu_4"], abs=1e-6)
    assert metrics["val/captioning/num_images"] == len(references)

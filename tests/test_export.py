"""vlp-export and vlp.load: an exported folder rebuilds the checkpoint's model and heads exactly, sees
inputs as evaluation sees them, and gives the scores, answers and captions the run itself gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import REPO_ROOT, compose_train_config
from tests.test_train import vlp_train


def caption_image_files(synth_data) -> dict[int, Path]:
    """Image id -> raw image file of the synthetic captions benchmark (Karpathy json)."""
    karpathy = json.loads(synth_data.karpathy_json.read_text())
    root = synth_data.karpathy_json.parent
    return {entry["cocoid"]: root / entry["filepath"] / entry["filename"] for entry in karpathy["images"]}


def open_images(paths: list[Path]) -> list[Image.Image]:
    return [Image.open(path) for path in paths]


@dataclass
class BuiltRun:
    system: torch.nn.Module
    datamodule: object
    checkpoint: Path


def build_checkpoint(run_dir: Path, data_dir: Path, *overrides: str) -> BuiltRun:
    """A run folder as vlp-train leaves it (``config.yaml``, ``checkpoints/last.ckpt`` with optimizer
    state), from a freshly built system: the weights are random, the layout is real."""
    from vlp.build import build_run

    cfg = compose_train_config([f"data_dir={data_dir}", f"run_dir={run_dir}", *overrides])
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(0)
    run = build_run(cfg)
    optimizer = torch.optim.AdamW(run.system.parameters())
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": run.system.state_dict(), "optimizer_states": [optimizer.state_dict()],
                "global_step": 0}, checkpoint)  # fmt: skip
    return BuiltRun(run.system.eval(), run.datamodule, checkpoint)


@pytest.fixture(scope="module")
def pretraining(synth_data, tmp_path_factory):
    """A built ITC + ITM + MLM run (ITC with momentum copies and a queue) and its export."""
    import vlp
    from vlp.export import export

    root = tmp_path_factory.mktemp("pretraining")
    run = build_checkpoint(root / "run", synth_data.root, "objectives.itc.momentum=0.995",
                           "objectives.itc.queue_size=16")  # fmt: skip
    out = export(run.checkpoint, root / "export")
    return run, out, vlp.load(out)


# --- what the folder holds ---------------------------------------------------------------------------

INFERENCE_HEADS = {
    "demo": {"itm"},  # ITC + ITM + MLM: ITC and MLM only train
    "finetune_retrieval": {"itm"},  # ITC + ITM
    "finetune_vqa": {"vqa"},
    "finetune_nlvr2": {"nlvr2"},
    "finetune_captioning": {"captioning"},
    "pretrain_vilt": {"itm"},  # the other families: a single stream (ViLT), co-attention (METER) ...
    "pretrain_meter": {"itm"},
    "pretrain_clip": set(),  # ... and a dual encoder, whose embeddings need no head
}
TASK_DATA = {"finetune_vqa": "synth_vqa", "finetune_nlvr2": "synth_nlvr2"}


@pytest.mark.parametrize("experiment", sorted(INFERENCE_HEADS))
def test_an_export_holds_exactly_the_model_and_inference_heads_of_the_checkpoint(
    experiment, synth_data, request, tmp_path
):
    import vlp
    from vlp.export import export

    if experiment in TASK_DATA:
        request.getfixturevalue(TASK_DATA[experiment])
    overrides = (
        ["objectives.itc.momentum=0.995", "objectives.itc.queue_size=16"] if experiment == "demo" else []
    )
    run = build_checkpoint(tmp_path / "run", synth_data.root, f"experiment={experiment}", *overrides)
    out = export(run.checkpoint, tmp_path / "export")
    loaded = vlp.load(out)

    heads = INFERENCE_HEADS[experiment]
    assert set(loaded.modules.objectives) == heads
    saved = run.system.state_dict()
    expected = {name for name in saved if name.startswith("model.") or name.split(".")[1] in heads}
    exported = loaded.modules.state_dict()
    assert set(exported) == expected  # no optimizer state, momentum copies, queue, MLM head
    for name in expected:
        assert torch.equal(exported[name], saved[name]), name
    assert (out / "answers.json").is_file() == (experiment == "finetune_vqa")
    if experiment == "finetune_vqa":
        assert loaded.answers == run.datamodule.answers
    # what the family and heads can serve works, the rest is refused by name
    from vlp.inference import MissingHead
    from vlp.types import CONTRASTIVE

    images, texts = open_images(sorted(caption_image_files(synth_data).values())[:2]), ["a red circle"] * 2
    if "itm" in heads:
        assert ((loaded.match(images, texts) > 0) & (loaded.match(images, texts) < 1)).all()
        # occlusion explains any ITM head (ViLT's single stream too): quarter-side windows, 8x8 blocks
        assert loaded.explain(images, texts, method="occlusion").grids.shape == (2, 8, 8)
    else:
        with pytest.raises(MissingHead, match="match needs the ImageTextMatching head"):
            loaded.match(images, texts)
    if CONTRASTIVE in loaded.model.dims.capabilities:
        assert loaded.embed_images(images).shape == loaded.embed_texts(texts).shape
    else:
        with pytest.raises(MissingHead, match="needs contrastive embeddings"):
            loaded.retrieve(texts[0], images)
    # nothing points back at the data folder: the folder is all that vlp.load reads
    texts = [path.read_text() for path in out.rglob("*") if path.is_file() and path.suffix != ".safetensors"]
    assert not any(str(synth_data.root) in text for text in texts)


def test_the_export_sees_images_and_texts_as_evaluation_does(pretraining, synth_data):
    """Pixels and token ids of the export equal those of the run's validation batches; the embeddings and
    ITM scores equal the checkpoint's own on those batches."""
    run, _, model = pretraining
    batch = next(iter(run.datamodule.val_dataloader()))
    files = caption_image_files(synth_data)
    images = open_images([files[image_id] for image_id in batch["image_id"].tolist()])
    texts = [captions[0] for captions in batch["captions"]]  # what the evaluation collator tokenizes

    assert torch.allclose(model.pixel_values(images), batch["pixel_values"], atol=1e-6)
    input_ids, attention_mask = model.text_inputs(texts)
    assert torch.equal(input_ids, batch["input_ids"]) and torch.equal(attention_mask, batch["attention_mask"])

    with torch.no_grad():
        encoded = run.system.model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        logits = run.system.objectives["itm"].match_logits(
            run.system.model, encoded.text.tokens, encoded.text.attention_mask, encoded.image.tokens
        )
    assert torch.allclose(model.embed_images(images), encoded.image.embedding, atol=1e-5)
    assert torch.allclose(model.embed_texts(texts), encoded.text.embedding, atol=1e-5)
    assert torch.allclose(model.match(images, texts), logits.softmax(dim=1)[:, 1], atol=1e-5)


def test_embeddings_are_unit_vectors_one_per_input(pretraining, synth_data):
    _, _, model = pretraining
    images = open_images(sorted(caption_image_files(synth_data).values())[:3])
    image_embeddings = model.embed_images(images)
    text_embeddings = model.embed_texts(["a red circle", "two blue squares left of a circle"])
    assert image_embeddings.shape == (3, 64) and text_embeddings.shape == (2, 64)  # embed_dim of albef_tiny
    assert torch.allclose(image_embeddings.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(text_embeddings.norm(dim=1), torch.ones(2), atol=1e-5)


def test_retrieval_ranks_by_similarity_and_reranks_the_top_candidates_by_itm(pretraining, synth_data):
    _, _, model = pretraining
    gallery = open_images(sorted(caption_image_files(synth_data).values())[:8])
    query = "a green triangle above a red square"
    similarity = model.embed_images(gallery) @ model.embed_texts([query])[0]

    ranked = model.retrieve(query, gallery, k=5)
    assert [r.index for r in ranked] == similarity.argsort(descending=True)[:5].tolist()
    assert [r.score for r in ranked] == pytest.approx(
        similarity.sort(descending=True).values[:5].tolist(), abs=1e-6
    )

    reranked = model.retrieve(query, gallery, k=3, rerank_k=6, rerank_score="itm_prob")
    top6 = similarity.argsort(descending=True)[:6].tolist()
    assert {r.index for r in reranked} <= set(top6)  # only stage 1's candidates are re-scored
    probabilities = model.match([gallery[i] for i in top6], [query] * 6)
    best = sorted(zip(top6, probabilities.tolist(), strict=True), key=lambda pair: -pair[1])[:3]
    assert [r.index for r in reranked] == [index for index, _ in best]
    assert [r.score for r in reranked] == pytest.approx([score for _, score in best], abs=1e-5)

    texts = [query, "a blue circle", "three yellow squares", "a red square"]
    by_text = model.retrieve(gallery[0], texts, k=10, rerank_k=4)  # image query over texts; k > gallery
    assert sorted(r.index for r in by_text) == [0, 1, 2, 3]
    scores = [r.score for r in by_text]
    assert scores == sorted(scores, reverse=True)


# --- errors ---------------------------------------------------------------------------------------------


def test_methods_without_their_head_say_what_to_export(pretraining, synth_data):
    from vlp.inference import MissingHead

    _, _, model = pretraining
    image = open_images(sorted(caption_image_files(synth_data).values())[:1])[0]
    with pytest.raises(
        MissingHead, match=r"answer needs the VQAClassification head.*heads: itm.*objectives=\[vqa\]"
    ):
        model.answer(image, "what colour is the circle?")
    with pytest.raises(MissingHead, match=r"caption needs the Captioning head.*objectives=\[captioning\]"):
        model.caption(image)
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        model.match([image, image], ["a circle"])
    with pytest.raises(TypeError, match="PIL images"):
        model.match(["not an image"], ["a circle"])


def test_export_errors_are_one_line_before_any_work(pretraining, tmp_path, capsys):
    from vlp.export import main

    run, out, _ = pretraining

    def error_of(*argv: str | Path) -> str:
        with pytest.raises(SystemExit) as stopped:
            main([str(arg) for arg in argv])
        assert stopped.value.code == 2
        message = capsys.readouterr().err
        assert message.startswith("vlp-export: error: ") and message.count("\n") == 1
        return message

    assert "no such checkpoint file" in error_of(tmp_path / "missing.ckpt", tmp_path / "a")
    garbage = tmp_path / "run" / "checkpoints" / "garbage.ckpt"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"not a checkpoint at all")
    assert "not a readable checkpoint" in error_of(
        garbage, tmp_path / "b", "--config", out.parent / "run" / "config.yaml"
    )
    assert "no config.yaml next to" in error_of(garbage, tmp_path / "c")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(run.checkpoint.read_bytes()[:1000])
    assert "not a readable checkpoint" in error_of(
        truncated, tmp_path / "d", "--config", out.parent / "run" / "config.yaml"
    )
    assert "already exists and is not an empty folder" in error_of(run.checkpoint, out)
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_a_config_of_another_model_is_refused_naming_the_tensors(pretraining, synth_data, tmp_path):
    from vlp.export import ExportError, export

    run, _, _ = pretraining
    other = compose_train_config(
        [f"data_dir={synth_data.root}", f"run_dir={tmp_path}", "model.fusion.num_layers=3"]
    )
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(other, resolve=True))
    with pytest.raises(
        ExportError, match=r"does not match the model of .*model\.fusion\.layers\.2\..*\(missing\)"
    ):
        export(run.checkpoint, tmp_path / "export", tmp_path / "config.yaml")
    assert not (tmp_path / "export").exists()


def test_load_refuses_a_folder_that_is_not_an_export(tmp_path):
    import vlp

    with pytest.raises(FileNotFoundError, match="is not a vlp-export folder"):
        vlp.load(tmp_path)


def test_importing_vlp_stays_cheap():
    code = "import sys, vlp; print(sorted(m for m in ('torch', 'transformers', 'timm') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- end to end: vlp-train -> vlp-export -> vlp.load in a fresh process ---------------------------------


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1")


def vlp_export(checkpoint: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vlp.export", str(checkpoint), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def in_fresh_process(folder: Path, calls: str) -> object:
    """Run ``calls`` (an expression over ``model`` = vlp.load(folder) and ``Image``) in a new Python
    process, from another working directory; returns its JSON result."""
    code = (
        "import json, sys, vlp\nfrom PIL import Image\n"
        f"model = vlp.load({str(folder)!r})\n"
        f"print(json.dumps({calls}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                            cwd=folder.parent, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_an_exported_checkpoint_gives_its_itm_scores_in_a_fresh_process(synth_data, tmp_path):
    """Train briefly with vlp-train, score (image, text) pairs from the checkpoint through the run's own
    data and model code, export, move the folder, and score the same pairs with vlp.load elsewhere."""
    from vlp.build import build_run

    run_dir = tmp_path / "run"
    vlp_train(synth_data, run_dir, "debug=limit", "data.batch_size=8", "data.eval_batch_size=8",
              "trainer.max_epochs=1", "system.scheduler.warmup_steps=2")  # fmt: skip
    checkpoint = run_dir / "checkpoints" / "last.ckpt"

    run = build_run(OmegaConf.load(run_dir / "config.yaml"))
    run.system.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    run.system.eval()
    batch = next(iter(run.datamodule.val_dataloader()))
    with torch.no_grad():
        encoded = run.system.model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        # each image with its caption, then with the next image's caption (a mismatched pair)
        text_tokens = torch.cat([encoded.text.tokens, encoded.text.tokens.roll(-1, 0)])
        text_mask = torch.cat([encoded.text.attention_mask, encoded.text.attention_mask.roll(-1, 0)])
        image_tokens = torch.cat([encoded.image.tokens, encoded.image.tokens])
        logits = run.system.objectives["itm"].match_logits(
            run.system.model, text_tokens, text_mask, image_tokens
        )
    expected = logits.softmax(dim=1)[:, 1]
    assert float(expected.max() - expected.min()) > 1e-4  # the pairs score differently: the check can fail

    files = caption_image_files(synth_data)
    image_files = [str(files[image_id]) for image_id in batch["image_id"].tolist()] * 2
    captions = [captions[0] for captions in batch["captions"]]
    texts = captions + captions[1:] + captions[:1]

    result = vlp_export(checkpoint, tmp_path / "export")
    assert "heads: itm" in result.stdout
    moved = tmp_path / "elsewhere" / "model"
    moved.parent.mkdir()
    (tmp_path / "export").rename(moved)
    scores = in_fresh_process(
        moved, f"model.match([Image.open(f) for f in {image_files!r}], {texts!r}).tolist()"
    )
    assert torch.allclose(torch.tensor(scores), expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_a_vqa_export_answers_as_the_finetuned_run_predicted(synth_data, synth_vqa, tmp_path):
    from vlp.data.convert.vqa import image_path

    run_dir = tmp_path / "run"
    vlp_train(synth_data, run_dir, "experiment=finetune_vqa", "debug=limit", "trainer.max_epochs=1",
              "trainer.limit_val_batches=1", "data.batch_size=8", "data.eval_batch_size=8",
              "system.scheduler.warmup_steps=2")  # fmt: skip
    predicted = json.loads((run_dir / "predictions" / "vqa_val_results.json").read_text())
    questions = {
        q["question_id"]: q
        for q in json.loads((synth_vqa.raw / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())[
            "questions"
        ]
    }
    asked = [questions[row["question_id"]] for row in predicted]
    calls = [(str(image_path(synth_vqa.raw, "val2014", q["image_id"])), q["question"]) for q in asked]

    vlp_export(run_dir / "checkpoints" / "last.ckpt", tmp_path / "export")
    answers = in_fresh_process(
        tmp_path / "export", f"[model.answer(Image.open(f), q) for f, q in {calls!r}] + [model.answers]"
    )
    vocabulary = answers.pop()
    assert len(answers) == len(predicted) == 8
    assert all(isinstance(answer, str) and answer in vocabulary for answer in answers)
    assert answers == [row["answer"] for row in predicted]  # what the run's own evaluation answered


@pytest.mark.slow
def test_an_nlvr2_export_verifies_as_the_finetuned_run_predicts(synth_data, synth_nlvr2, tmp_path):
    """verify(left, right, statement) on the raw dev files equals the probability the finetuned run's own
    system gives the same rows through its datamodule, and agrees with the run's predictions file."""
    from vlp.build import build_run
    from vlp.data.convert.nlvr2 import pair_image_paths
    from vlp.metrics.nlvr2 import load_nlvr2_rows

    run_dir = tmp_path / "run"
    vlp_train(synth_data, run_dir, "experiment=finetune_nlvr2", "debug=limit", "trainer.max_epochs=1",
              "data.batch_size=8", "data.eval_batch_size=8", "system.scheduler.warmup_steps=2")  # fmt: skip
    run = build_run(OmegaConf.load(run_dir / "config.yaml"))
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    run.system.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    run.system.eval()
    batch = next(iter(run.datamodule.val_dataloader()))
    with torch.no_grad():
        pixels = batch["pixel_values"].flatten(0, 1)  # [B, 2, ...] -> left0, right0, left1, ...
        encoded = run.system.model.encode(pixels, batch["input_ids"], batch["attention_mask"])
        logits = run.system.objectives["nlvr2"].logits(encoded, run.system.model)
    expected = logits.softmax(dim=1)[:, 1]
    assert float(expected.max() - expected.min()) > 1e-4  # the rows score differently: the check can fail

    rows = {row["identifier"]: row for row in load_nlvr2_rows(synth_nlvr2.raw / "data" / "dev.json")}
    calls = [
        (*map(str, pair_image_paths(synth_nlvr2.raw / "images", "dev", rows[identifier])),
         rows[identifier]["sentence"])
        for identifier in batch["identifier"]
    ]  # fmt: skip
    vlp_export(checkpoint, tmp_path / "export")
    probabilities = in_fresh_process(
        tmp_path / "export", f"[model.verify(Image.open(l), Image.open(r), s) for l, r, s in {calls!r}]"
    )
    assert torch.allclose(torch.tensor(probabilities), expected, atol=1e-5, rtol=0)
    csv_lines = (run_dir / "predictions" / "nlvr2_val_predictions.csv").read_text().split()
    predicted = dict(line.split(",") for line in csv_lines)
    assert [str(p > 0.5) for p in probabilities] == [predicted[i] for i in batch["identifier"]]


@pytest.mark.slow
def test_a_captioning_export_writes_the_captions_the_finetuned_run_wrote(synth_data, tmp_path):
    run_dir = tmp_path / "run"
    vlp_train(synth_data, run_dir, "experiment=finetune_captioning", "debug=limit", "trainer.max_epochs=1",
              "trainer.limit_val_batches=1", "data.batch_size=8", "data.eval_batch_size=8",
              "system.scheduler.warmup_steps=2", "evaluators.captioning.use_java=false",
              "objectives.captioning.max_length=12")  # fmt: skip
    written = json.loads((run_dir / "predictions" / "caption_val_results.json").read_text())
    files = caption_image_files(synth_data)
    image_files = [str(files[row["image_id"]]) for row in written]

    vlp_export(run_dir / "checkpoints" / "last.ckpt", tmp_path / "export")
    greedy = f"[model.caption(Image.open(f)) for f in {image_files!r}]"
    beam = f"model.caption(Image.open({image_files[0]!r}), num_beams=3)"
    greedy, beam = in_fresh_process(tmp_path / "export", f"[{greedy}, {beam}]")
    assert len(greedy) == len(written) == 8
    assert greedy == [row["caption"] for row in written]  # the experiment decodes greedily, as here
    assert isinstance(beam, str)


def test_a_run_whose_data_folder_moved_exports_with_data_dir(pretraining, synth_data, tmp_path, capsys):
    """The run config holds resolved paths under its data_dir: --data-dir moves them all, and the export
    is the same as from the original folder; without it the error says what to pass."""
    import shutil
    import stat

    from vlp.export import main

    run, out, model = pretraining
    moved = tmp_path / "moved_data"
    shutil.copytree(synth_data.root / "synth" / "tokenizer", moved / "synth" / "tokenizer")
    config = OmegaConf.load(out.parent / "run" / "config.yaml")
    config.data.tokenizer = config.data.tokenizer.replace(str(synth_data.root), str(tmp_path / "gone"))
    config.data_dir = str(tmp_path / "gone")
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(config))
    with pytest.raises(SystemExit):
        main([str(run.checkpoint), str(tmp_path / "a"), "--config", str(tmp_path / "config.yaml")])
    assert "cannot be loaded" in capsys.readouterr().err and not (tmp_path / "a").exists()

    main([str(run.checkpoint), str(tmp_path / "b"), "--config", str(tmp_path / "config.yaml"),
          "--data-dir", str(moved)])  # fmt: skip
    assert (tmp_path / "b" / "tokenizer").is_dir()
    from safetensors.torch import load_file

    moved_weights = load_file(tmp_path / "b" / "model.safetensors")
    weights = load_file(out / "model.safetensors")
    assert moved_weights.keys() == weights.keys()
    assert all(torch.equal(moved_weights[name], weights[name]) for name in weights)
    # the weights are as readable as the other files (safetensors alone would leave them 0600)
    files = [path for path in (tmp_path / "b").iterdir() if path.is_file()]
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in files}
    assert len(set(modes.values())) == 1, modes
    with pytest.raises(SystemExit):
        main([str(run.checkpoint), str(tmp_path / "c"), "--data-dir", str(tmp_path / "nowhere")])
    assert "--data-dir" in (err := capsys.readouterr().err) and "no such folder" in err

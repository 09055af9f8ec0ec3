"""Frozen-feature probe for synthetic NLVR2: is what the task needs in a checkpoint's features at all?

    python scripts/nlvr2_probe.py DATA_DIR CHECKPOINT [--scratch]

With the checkpoint frozen (loaded as ``model.init_from`` loads it, eval transform), every train and dev
row of DATA_DIR's synthetic NLVR2 gets, per image, the pretrained ITM head's match logit for (image,
sentence) and the pooled fusion state (``cls``, the NLVR2 objective's pooling). Small classifiers are then
fit on train for many epochs: (i) logistic regression on [itm_left, itm_right], (ii) an MLP on [state_left;
state_right], (iii) (i) per template. Dev accuracy is printed per template beside the template's
train-majority prior (an image-blind baseline that knows the template). ``--scratch`` probes a randomly
initialised model instead, as a control. About a minute on one CPU thread.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from torch import Tensor, nn

from vlp.build import build_run
from vlp.data.synthetic_tasks import NLVR2_TEMPLATE_PATTERNS, nlvr2_template
from vlp.metrics.nlvr2 import load_nlvr2_rows
from vlp.objectives.base import pool_fused
from vlp.train import CONFIG_DIR

TEMPLATES = list(NLVR2_TEMPLATE_PATTERNS)
Features = dict[str, Tensor]


def extract(data_dir: Path, checkpoint: Path | None) -> dict[str, Features]:
    """Per split: ``itm [N, 2]`` (match minus no-match logit, left/right), ``state [N, 2 * width]``,
    ``labels [N]`` and ``template [N]`` (index into TEMPLATES)."""
    overrides = ["experiment=finetune_nlvr2", f"data_dir={data_dir}", "data.num_workers=0"]
    overrides += [f"model.init_from={checkpoint}"] if checkpoint else []
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):  # an ITM objective, so that init_from loads the pretrained ITM head into it
        cfg.objectives.itm = OmegaConf.create(
            {"_target_": "vlp.objectives.itm.ImageTextMatching", "_partial_": True, "pooling": "cls"}
        )
        cfg.evaluators = {}
    run = build_run(cfg)
    system, datamodule = run.system.eval(), run.datamodule
    model, itm_head = system.model, system.objectives["itm"].head
    raw = data_dir / "synth" / "raw" / "nlvr2" / "data"
    features = {}
    for split in ("train", "dev"):
        sentences = {row["identifier"]: row["sentence"] for row in load_nlvr2_rows(raw / f"{split}.json")}
        datamodule.splits["val"] = split  # the eval dataloader (no augmentation) over this split
        parts: dict[str, list[Tensor]] = {"itm": [], "state": [], "labels": [], "template": []}
        with torch.no_grad():
            for batch in datamodule.val_dataloader():
                pairs = batch["labels"].shape[0]
                encoded = model.encode(
                    batch["pixel_values"].flatten(0, 1), batch["input_ids"], batch["attention_mask"]
                )
                mask = encoded.text.attention_mask.repeat_interleave(2, dim=0)
                fused = model.fuse(
                    encoded.text.tokens.repeat_interleave(2, dim=0), mask, encoded.image.tokens
                )
                pooled = pool_fused(fused, mask, "cls")
                logits = itm_head(pooled)
                parts["itm"].append((logits[:, 1] - logits[:, 0]).reshape(pairs, 2))
                parts["state"].append(pooled.reshape(pairs, -1))
                parts["labels"].append(batch["labels"])
                names = [nlvr2_template(sentences[i]) for i in batch["identifier"]]
                parts["template"].append(torch.tensor([TEMPLATES.index(name) for name in names]))
        features[split] = {key: torch.cat(value) for key, value in parts.items()}
    return features


def fit(
    x_train: Tensor, y_train: Tensor, x_dev: Tensor, hidden: int = 0, epochs: int = 100, lr: float = 1e-2
) -> Tensor:
    """Dev predictions of a logistic regression (``hidden=0``) or a one-hidden-layer MLP, trained with AdamW
    on standardised features in batches of 256."""
    torch.manual_seed(0)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_dev = (x_train - mean) / std, (x_dev - mean) / std
    width = x_train.shape[1]
    net = (
        nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, 2))
        if hidden
        else nn.Linear(width, 2)
    )
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-2 if hidden else 1e-4)
    for _ in range(epochs):
        for rows in torch.randperm(len(x_train)).split(256):
            loss = nn.functional.cross_entropy(net(x_train[rows]), y_train[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return net(x_dev).argmax(1)


def per_template(train: Features, dev: Features, probe: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Tensor:
    predicted = torch.zeros_like(dev["labels"])
    for k in range(len(TEMPLATES)):
        rows, dev_rows = train["template"] == k, dev["template"] == k
        if rows.any() and dev_rows.any():
            predicted[dev_rows] = probe(train["itm"][rows], train["labels"][rows], dev["itm"][dev_rows])
    return predicted


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--scratch", action="store_true", help="probe a randomly initialised model instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    features = extract(args.data_dir, None if args.scratch else args.checkpoint)
    train, dev = features["train"], features["dev"]
    majority = torch.tensor(
        [int(train["labels"][train["template"] == k].float().mean() >= 0.5) for k in range(len(TEMPLATES))]
    )
    predictions = {
        "prior": majority[dev["template"]],
        "(i) itm": fit(train["itm"], train["labels"], dev["itm"]),
        "(ii) state": fit(train["state"], train["labels"], dev["state"], hidden=256, lr=1e-3),
        "(iii) itm/tmpl": per_template(train, dev, lambda x, y, xd: fit(x, y, xd, epochs=200)),
    }
    print(f"{'template':12s} {'dev':>4s} " + " ".join(f"{name:>14s}" for name in predictions))
    for k, template in [*enumerate(TEMPLATES), (None, "all")]:
        rows = torch.ones_like(dev["labels"], dtype=torch.bool) if k is None else dev["template"] == k
        scores = [100 * (p[rows] == dev["labels"][rows]).float().mean().item() for p in predictions.values()]
        print(f"{template:12s} {int(rows.sum()):4d} " + " ".join(f"{score:14.1f}" for score in scores))


if __name__ == "__main__":
    main()

"""vlp-tokenizer: train a small WordPiece tokenizer on a caption corpus, offline.

The demo and the tests cannot download a tokenizer, so they train one on the synthetic captions with
the `tokenizers` library and save it as a HF ``PreTrainedTokenizerFast`` folder; the training run then
loads it with ``AutoTokenizer.from_pretrained(folder)``, the same call a hub name goes through.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A BERT-style (lower-cased, [CLS] ... [SEP]) WordPiece tokenizer trained on ``texts``."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    texts = list(texts)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.model = models.WordPiece(vocab=canonical_vocab(tokenizer, texts), unk_token="[UNK]")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def canonical_vocab(tokenizer: Tokenizer, texts: list[str]) -> dict[str, int]:
    """The trained vocabulary in an order, and where possible a content, that do not depend on the run.

    The trainer's ids follow hash-map iteration order and its merges break count ties the same way, so
    two trainings on the same texts give different ids (and different embedding rows for a word under
    the same seed). Ids here are the special tokens, then every other token sorted. When the budget kept
    every training word whole, the intermediate pieces (the part ties decide) are dropped: whole words
    and single characters (each also as ``##c``) tokenize everything the same way."""
    trained = tokenizer.get_vocab()
    words = {
        word
        for text in texts
        for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text))
    }
    kept = set(trained)
    if words <= kept:
        kept = {token for token in kept if token in words or len(token.removeprefix("##")) == 1}
    ordered = SPECIAL_TOKENS + sorted(kept - set(SPECIAL_TOKENS))
    return {token: index for index, token in enumerate(ordered)}


def karpathy_train_captions(karpathy_json: Path) -> list[str]:
    """Raw captions of the Karpathy train (+restval) split: never fit the tokenizer on evaluation text."""
    images = json.loads(Path(karpathy_json).read_text())["images"]
    return [
        s["raw"] for image in images if image.get("split") in ("train", "restval") for s in image["sentences"]
    ]


def vqa_questions(questions_json: Path) -> list[str]:
    """Question texts of a VQA v2 ``v2_OpenEnded_mscoco_<subtype>_questions.json`` (pass train ones)."""
    return [q["question"] for q in json.loads(Path(questions_json).read_text())["questions"]]


def nlvr2_sentences(jsonl: Path) -> list[str]:
    """Sentences of an NLVR2 ``<split>.json`` (JSON lines; pass train.json)."""
    lines = Path(jsonl).read_text().splitlines()
    return [json.loads(line)["sentence"] for line in lines if line.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vlp-tokenizer", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--karpathy-json", type=Path, required=True, help="captions to train on (train split)"
    )
    parser.add_argument("--vqa-questions", type=Path, nargs="*", default=[], help="also VQA questions files")
    parser.add_argument("--nlvr2-jsonl", type=Path, nargs="*", default=[], help="also NLVR2 train.json files")
    parser.add_argument("--out", type=Path, required=True, help="folder for the saved tokenizer")
    parser.add_argument("--vocab-size", type=int, default=1000)
    args = parser.parse_args(argv)
    texts = karpathy_train_captions(args.karpathy_json)
    for path in args.vqa_questions:
        texts += vqa_questions(path)
    for path in args.nlvr2_jsonl:
        texts += nlvr2_sentences(path)
    tokenizer = train_wordpiece(texts, args.vocab_size)
    tokenizer.save_pretrained(args.out)
    print(f"vlp-tokenizer: {len(tokenizer)} tokens saved to {args.out}")


if __name__ == "__main__":
    main()

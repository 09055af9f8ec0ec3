"""vlp-tokenizer: the same texts give the same tokenizer, token ids included."""

import torch

from vlp.data.tokenizer import SPECIAL_TOKENS, train_wordpiece

TEXTS = [
    "A red circle is above a blue square.",
    "Two green triangles and a purple diamond.",
    "The picture contains a yellow circle.",
    "What color is the diamond?",
] * 5


def test_training_twice_gives_identical_ids():
    # the trainer's own ids follow hash-map order, which changes from process to process and also
    # between two trainings in one process, so two trainings here are enough to see it
    first, second = (train_wordpiece(TEXTS, vocab_size=300).get_vocab() for _ in range(2))
    assert first == second
    assert [first[token] for token in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))


def test_every_training_word_is_one_token_and_unseen_words_fall_back_to_characters():
    tokenizer = train_wordpiece(TEXTS, vocab_size=300)
    assert tokenizer.tokenize("a purple diamond above the circle") == [
        "a", "purple", "diamond", "above", "the", "circle",
    ]  # fmt: skip
    assert tokenizer.tokenize("cubed") == ["c", "##u", "##b", "##e", "##d"]
    assert "[UNK]" not in tokenizer.tokenize("red cubes")
    encoded = tokenizer("a red circle")["input_ids"]
    assert encoded[0] == tokenizer.cls_token_id and encoded[-1] == tokenizer.sep_token_id


def test_batch_tokenizing_through_the_rust_backend_equals_the_transformers_call():
    from vlp.data.collate import TOKEN_FIELDS, tokenize

    tokenizer = train_wordpiece(TEXTS, vocab_size=300)
    texts = [
        "A red circle is above a blue square.",
        "",
        "  Ünïcode   crème brûlée, tabs\tand\nnewlines  ",
        "two " * 30,  # truncated at max_length
        "What color is the diamond?",
    ]

    def reference(max_length: int) -> dict:
        encoded = tokenizer(texts, padding="longest", truncation=True, max_length=max_length,
                            return_special_tokens_mask=True, return_tensors="np")  # fmt: skip
        return {name: encoded[name].tolist() for name in TOKEN_FIELDS}

    for sides in ("right", "left"):
        tokenizer.padding_side = tokenizer.truncation_side = sides
        for max_length in (40, 8):  # each length gets its own configured backend
            got = tokenize(tokenizer, texts, max_length)
            assert {name: got[name].dtype for name in TOKEN_FIELDS} == dict.fromkeys(TOKEN_FIELDS, torch.long)
            assert {name: got[name].tolist() for name in TOKEN_FIELDS} == reference(max_length)
    assert tokenize(tokenizer, texts, 8)["input_ids"].shape == (len(texts), 8)
    # the tokenizer the caller holds keeps its own settings: what tokenize sets up is a copy
    fresh = train_wordpiece(TEXTS, vocab_size=300)
    tokenize(fresh, texts, 8)
    assert fresh.backend_tokenizer.truncation is None and fresh.backend_tokenizer.padding is None

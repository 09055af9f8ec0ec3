"""vlp-tokenizer: the same texts give the same tokenizer, token ids included."""

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

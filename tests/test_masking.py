import torch

from vlp.data.collate import mask_tokens

MASK_ID, VOCAB = 4, 1000


def masked_sample(probability: float, shape=(400, 250), seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(10, VOCAB, shape, generator=generator)
    special = torch.zeros(shape, dtype=torch.long)
    special[:, 0] = special[:, -1] = 1  # [CLS] ... [SEP]
    masked, labels = mask_tokens(input_ids, special, MASK_ID, VOCAB, probability, generator)
    return input_ids, special, masked, labels


def test_masking_rates_are_15_percent_then_80_10_10():
    input_ids, special, masked, labels = masked_sample(0.15)
    picked = labels != -100
    eligible = ~special.bool()
    assert abs(picked[eligible].float().mean().item() - 0.15) < 0.005
    n_picked = picked.sum().item()
    to_mask = (masked == MASK_ID) & picked
    unchanged = (masked == input_ids) & picked
    # a random replacement can draw the original token (1 in 1000) or [MASK] itself (1 in 1000)
    replaced = picked & ~to_mask & ~unchanged
    assert abs(to_mask.sum().item() / n_picked - 0.80) < 0.01
    assert abs(replaced.sum().item() / n_picked - 0.10) < 0.01
    assert abs(unchanged.sum().item() / n_picked - 0.10) < 0.01


def test_labels_hold_the_original_tokens_and_special_tokens_are_never_picked():
    input_ids, special, masked, labels = masked_sample(0.5)
    picked = labels != -100
    assert torch.equal(labels[picked], input_ids[picked])
    assert not picked[special.bool()].any()
    assert torch.equal(masked[~picked], input_ids[~picked])


def test_the_same_generator_seed_gives_the_same_masks():
    first = masked_sample(0.15, seed=5)
    second = masked_sample(0.15, seed=5)
    third = masked_sample(0.15, seed=6)
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])
    assert not torch.equal(first[3], third[3])

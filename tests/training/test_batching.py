"""Length-grouped batches: every pair once, replayable, less padding than random order; the padded batch."""

from psychocounsel.training.batching import LengthGroupedBatches, pad_right


def test_length_grouped_batches_cover_every_pair_once_with_less_padding():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(20, 500) for _ in range(203)]
    sampler = LengthGroupedBatches(lengths, batch_size=8, seed=3, megabatch=5)
    order = list(sampler)
    assert sorted(order) == list(range(203))
    assert order == list(LengthGroupedBatches(lengths, 8, seed=3, megabatch=5))  # replayable on resume
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new order each epoch

    def padded(idx):  # tensor cells when each batch pads to its longest
        return sum(8 * max(lengths[i] for i in idx[k:k + 8]) for k in range(0, len(idx), 8))

    shuffled = rng.sample(range(203), 203)
    assert padded(order) < 0.8 * padded(shuffled)
    # every full batch is one slice of a length-sorted megabatch (so aligned with the loader's cuts of 8);
    # the partial batch of 203 % 8 = 3 comes last
    batches = [order[k:k + 8] for k in range(0, 200, 8)]
    assert all([lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True) for b in batches)


def test_pad_right_keeps_each_last_token_in_place():
    ids, mask = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]

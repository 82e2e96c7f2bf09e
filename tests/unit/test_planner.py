import pytest

from rankserve.ranker.planner import plan_batches


@pytest.mark.parametrize("batch_size", [5, 13, 25])
def test_every_n_gives_near_equal_batches_within_bounds(batch_size):
    for n in range(1, 2001):
        batches = plan_batches(n, batch_size)
        sizes = [b.stop - b.start for b in batches]
        # Contiguous, in order, every row exactly once.
        assert batches[0].start == 0 and batches[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(batches, batches[1:], strict=False))
        assert max(sizes) - min(sizes) <= 1, (n, sizes)
        assert max(sizes) <= 25
        if n >= 5:
            assert min(sizes) >= 5, (n, sizes)
        else:
            assert sizes == [n]
        assert len(batches) <= -(-n // batch_size)


def test_thousand_candidates_make_forty_batches_of_25():
    assert [b.stop - b.start for b in plan_batches(1000)] == [25] * 40


def test_one_more_spreads_instead_of_a_lone_batch():
    sizes = [b.stop - b.start for b in plan_batches(1001)]
    assert len(sizes) == 41 and set(sizes) == {24, 25}


def test_zero_candidates_make_no_batches():
    assert plan_batches(0) == []


@pytest.mark.parametrize("bad", [4, 26, 0])
def test_batch_size_out_of_range_is_rejected(bad):
    with pytest.raises(ValueError, match=r"\[5, 25\]"):
        plan_batches(100, bad)

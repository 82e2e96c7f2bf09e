import numpy as np

from rankserve.ranker.merge import BatchOutcome, merge


def _ids(pos: int) -> str:
    return f"i{pos}"


def test_page_is_sorted_by_score_with_ties_in_retrieval_order():
    out = [BatchOutcome(slice(0, 5), np.array([1, 5, 3, 5, 0], np.float32), 2)]
    page = merge(out, 5, 4, _ids)
    assert [i.item_id for i in page.items] == ["i1", "i3", "i2", "i0"]
    assert [i.score for i in page.items] == [5, 5, 3, 1]
    assert not page.degradation.degraded and page.degradation.reasons == []
    assert page.candidates_scored == 5 and page.model_version == 2


def test_failed_batches_rank_below_scored_items_in_retrieval_order():
    out = [
        BatchOutcome(slice(0, 3), error_status="UNAVAILABLE", error_message="down"),
        BatchOutcome(slice(3, 6), np.array([-4, -2, -9], np.float32), 1),
        BatchOutcome(slice(6, 9), error_status="UNAVAILABLE"),
        BatchOutcome(slice(9, 12), error_status="DEADLINE_EXCEEDED"),
    ]
    page = merge(out, 12, 12, _ids)
    assert [i.item_id for i in page.items][:3] == ["i4", "i3", "i5"]
    fb = page.items[3:]
    assert [i.item_id for i in fb] == ["i0", "i1", "i2", "i6", "i7", "i8", "i9", "i10", "i11"]
    assert all(i.fallback for i in fb) and not any(i.fallback for i in page.items[:3])
    scores = [i.score for i in page.items]
    assert scores == sorted(scores, reverse=True) and fb[0].score < -9
    d = page.degradation
    assert d.degraded and d.fallback_candidates == 9
    assert d.failed_batches == 3 and d.total_batches == 4
    assert d.reasons == ["1 of 4 batches failed: DEADLINE_EXCEEDED",
                         "2 of 4 batches failed: UNAVAILABLE"]
    assert page.candidates_scored == 3


def test_every_batch_failed_gives_retrieval_order():
    out = [BatchOutcome(slice(0, 5), error_status="UNAVAILABLE"),
           BatchOutcome(slice(5, 10), error_status="UNAVAILABLE")]
    page = merge(out, 10, 4, _ids, np.linspace(1, 0, 10), debug=True)
    assert [i.item_id for i in page.items] == ["i0", "i1", "i2", "i3"]
    assert [i.retrieval_rank for i in page.items] == [0, 1, 2, 3]
    assert page.items[0].retrieval_score == 1.0
    assert page.degradation.fallback_candidates == 10 and page.model_version == 0


def test_non_finite_model_scores_are_fallback_and_counted():
    out = [BatchOutcome(slice(0, 4), np.array([1, np.nan, np.inf, 2], np.float32), 1)]
    page = merge(out, 4, 4, _ids)
    assert [i.item_id for i in page.items] == ["i3", "i0", "i1", "i2"]
    assert page.degradation.fallback_candidates == 2
    assert "2 candidates got a non-finite model score" in page.degradation.reasons


def test_mixed_versions_report_the_one_with_most_rows():
    out = [BatchOutcome(slice(0, 5), np.zeros(5, np.float32), 3),
           BatchOutcome(slice(5, 10), np.zeros(5, np.float32), 4),
           BatchOutcome(slice(10, 15), np.zeros(5, np.float32), 4)]
    page = merge(out, 15, 3, _ids)
    assert page.model_version == 4
    assert page.degradation.reasons == [
        "batches were scored by model versions 3 (5 rows), 4 (10 rows); reporting 4"]
    assert not page.degradation.degraded


def test_debug_fields_stay_zero_without_debug():
    out = [BatchOutcome(slice(0, 2), np.array([0, 1], np.float32), 1)]
    page = merge(out, 2, 2, _ids, np.array([0.9, 0.8]))
    assert page.items[0].retrieval_rank == 0 and page.items[0].retrieval_score == 0.0

"""Feature specs: the file format, what a bad spec is told, and how a spec fills a model's
inputs from item, user and request features (per candidate, per request, tiled)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from rankserve.ranker.entity_features import (
    FeatureInfo,
    FeatureSourceUnavailable,
    Fetched,
)
from rankserve.ranker.errors import InvalidArgument
from rankserve.ranker.model_inputs import InputAssembler
from rankserve.ranker.spec import SpecError, load_spec, parse_spec
from rankserve.ranker.types import CallerCandidate, RankQuery

ITEMS = {"a": (1.5, 3, b"shoes", [0.1, 0.2]), "b": (2.5, 7, b"bags", [0.3, 0.4])}
USERS = {"u1": ([1.0, 2.0, 3.0],)}


class MemoryStore:
    """An EntityFeatures over a dict, failing on demand."""

    def __init__(self, entity: str, rows: Mapping[str, tuple], schema: Sequence[FeatureInfo]):
        self._entity = entity
        self._rows = rows
        self._schema = {f.name: f for f in schema}
        self.down = False
        self.calls: list[list[str]] = []

    @property
    def entity(self) -> str:
        return self._entity

    def schema(self) -> Mapping[str, FeatureInfo]:
        return self._schema

    async def fetch(self, keys: Sequence[str], names: Sequence[str]) -> Fetched:
        self.calls.append(list(keys))
        if self.down:
            raise FeatureSourceUnavailable("connection refused")
        order = list(self._schema)
        found = np.array([k in self._rows for k in keys])
        columns, defaulted = {}, {}
        for name in names:
            info = self._schema[name]
            col = info.defaults(len(keys))
            for i, key in enumerate(keys):
                if key in self._rows:
                    col[i] = self._rows[key][order.index(name)]
            columns[name] = col
            defaulted[name] = int((~found).sum())
        return Fetched(columns, found, 0, "v1", defaulted)

    async def close(self) -> None:
        return None


def items() -> MemoryStore:
    return MemoryStore("item", ITEMS, [
        FeatureInfo("price", "float32"), FeatureInfo("category_id", "int64", default=-1),
        FeatureInfo("category", "string"), FeatureInfo("embedding", "float32", 2)])


def users() -> MemoryStore:
    return MemoryStore("user", USERS, [FeatureInfo("embedding", "float32", 3)])


SPEC = {
    "output": "score",
    "features": {"request.segment": {"dtype": "int64", "default": 4}},
    "inputs": [
        {"name": "dense", "per": "candidate", "dtype": "float32", "shape": [4],
         "features": ["item.price", "item.category_id", "item.embedding"]},
        {"name": "category", "per": "candidate", "dtype": "string", "shape": [],
         "features": ["item.category"]},
        {"name": "user", "per": "request", "dtype": "float32", "shape": [4],
         "features": ["user.embedding", "user.found"]},
        {"name": "segment", "per": "request", "broadcast": "client", "dtype": "int64",
         "features": ["request.segment"]},
    ],
}


def test_a_spec_file_parses_with_defaults_and_declared_features(tmp_path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("inputs:\n  - {name: x, per: candidate, shape: [], features: [item.price]}\n")
    spec = load_spec(path)
    assert (spec.signature, spec.output, spec.encoding) == ("serving_default", "scores",
                                                             "tensors")
    assert spec.input("x").shape == () and spec.input("x").dtype == "float32"
    full = parse_spec(SPEC)
    assert full.input("dense").width == 4 and full.input("segment").tiled
    assert not full.input("user").tiled
    assert full.features_of("item") == ["price", "category_id", "embedding", "category"]
    assert full.declared["request.segment"].default == 4


@pytest.mark.parametrize(("change", "message"), [
    ({"inputs": []}, "inputs is a non-empty list"),
    ({"encoding": "protobuf"}, "encoding must be one of tensors, tf_example"),
    ({"inputs": [{"name": "x", "per": "row", "features": ["item.a"]}]},
     r"inputs\[0\] \(x\): per must be one of candidate, request"),
    ({"inputs": [{"name": "x", "per": "candidate", "features": ["shop.a"]}]},
     "the source must be one of item, user, request"),
    ({"inputs": [{"name": "x", "per": "request", "features": ["item.a"]}]},
     "a per: request input cannot hold item features"),
    ({"inputs": [{"name": "x", "per": "candidate", "features": ["item.a"],
                  "broadcast": "client"}]}, "broadcast applies to per: request inputs only"),
    ({"inputs": [{"name": "x", "per": "candidate", "features": ["item.a", "item.b"]}]},
     "give the shape: the widths of item.a, item.b are only known to the stores"),
    ({"inputs": [{"name": "x", "per": "candidate", "shape": [3],
                  "features": ["request.query"]}]}, "its features give 1"),
    ({"inputs": [{"name": "x", "per": "request", "shape": [], "features": ["request.q"]}]},
     "no input is per: candidate"),
    ({"features": {"request.query": {"dtype": "string"}},
      "inputs": [{"name": "x", "per": "candidate", "features": ["item.a"]}]},
     "'query' is a built-in request feature"),
    ({"signatur": "x", "inputs": [{"name": "x", "per": "candidate",
                                  "features": ["item.a"]}]}, "unknown key 'signatur'"),
])
def test_a_bad_spec_says_which_key_to_change(change, message) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({**SPEC, **change}, "spec.yaml")


def test_unreadable_files_name_the_file(tmp_path) -> None:
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("inputs: [\n")
    with pytest.raises(SpecError, match="broken.yaml: not valid YAML"):
        load_spec(broken)


def test_the_assembler_checks_the_spec_against_the_stores() -> None:
    spec = parse_spec({"inputs": [{"name": "x", "per": "candidate", "shape": [3],
                                   "features": ["item.price", "item.embedding"]}]}, "s")
    InputAssembler(spec, items=items(), users=None)
    wrong = parse_spec({"inputs": [{"name": "x", "per": "candidate", "shape": [2],
                                    "features": ["item.price", "item.embedding"]}]}, "s")
    with pytest.raises(SpecError, match=r"shape \[2\] holds 2 values per row, its features"
                                        r" give 3: item.price \(1\), item.embedding \(2\)"):
        InputAssembler(wrong, items=items(), users=None)
    missing = parse_spec({"inputs": [{"name": "x", "per": "candidate", "shape": [],
                                      "features": ["item.colour"]}]}, "s")
    with pytest.raises(SpecError, match="the item store has no feature 'colour'; it has"
                                        " category, category_id, embedding, price"):
        InputAssembler(missing, items=items(), users=None)
    text_in_number = parse_spec({"inputs": [{"name": "x", "per": "candidate", "shape": [],
                                             "features": ["item.category"]}]}, "s")
    with pytest.raises(SpecError, match="feature item.category is string and cannot fill a"
                                        " float32 input"):
        InputAssembler(text_in_number, items=items(), users=None)
    no_users = parse_spec({"inputs": [
        {"name": "x", "per": "candidate", "shape": [], "features": ["item.price"]},
        {"name": "u", "per": "request", "shape": [3], "features": ["user.embedding"]}]}, "s")
    with pytest.raises(SpecError, match="'user.embedding' needs a user feature store"):
        InputAssembler(no_users, items=items(), users=None)
    unknown_request = parse_spec({"inputs": [{"name": "x", "per": "candidate", "shape": [],
                                              "features": ["request.mood"]}]}, "s")
    with pytest.raises(SpecError, match="request feature 'mood' is neither built in"):
        InputAssembler(unknown_request, items=items(), users=None)


async def test_inputs_per_candidate_per_request_and_tiled() -> None:
    assembler = InputAssembler(parse_spec(SPEC), items=items(), users=users())
    query = RankQuery("r", user_id="u1", user_known=True, request_features={"segment": 9})
    inputs, report = await assembler.assemble(query, ["b", "a", "b"])
    np.testing.assert_allclose(inputs.per_candidate["dense"],
                               [[2.5, 7, 0.3, 0.4], [1.5, 3, 0.1, 0.2], [2.5, 7, 0.3, 0.4]])
    assert inputs.per_candidate["category"].tolist() == [b"bags", b"shoes", b"bags"]
    np.testing.assert_allclose(inputs.per_request["user"], [[1, 2, 3, 1]])
    batch = inputs.batch(slice(1, 3))
    assert batch["dense"].shape == (2, 4) and batch["category"].shape == (2,)
    assert batch["user"].shape == (1, 4)  # broadcast by the model: sent once
    assert batch["segment"].tolist() == [9, 9]  # broadcast: client, tiled to the rows
    assert report.missing_values == 0 and report.reasons == []


async def test_missing_entities_and_values_take_defaults_and_are_counted() -> None:
    assembler = InputAssembler(parse_spec(SPEC), items=items(), users=users())
    # An anonymous user: no user fetch at all; the segment the caller did not send.
    inputs, report = await assembler.assemble(RankQuery("r", query="x"), ["a", "zz"],
                                              caller_ids=True)
    np.testing.assert_allclose(inputs.per_candidate["dense"][1], [0, -1, 0, 0])
    np.testing.assert_allclose(inputs.per_request["user"], [[0, 0, 0, 0]])
    assert inputs.per_request["segment"].tolist() == [4]
    assert report.unknown_candidates == 1
    assert "1 candidate id(s) unknown to the item store: scored with feature defaults" in \
        report.reasons
    # price, category_id, embedding (2) and category of "zz", plus the segment.
    assert report.missing_values == 1 + 1 + 2 + 1 + 1


async def test_unknown_caller_candidates_can_be_dropped() -> None:
    spec = parse_spec({**SPEC, "unknown_candidates": "drop"})
    inputs, report = await InputAssembler(spec, items=items(), users=users()).assemble(
        RankQuery("r", candidates=(CallerCandidate("a"), CallerCandidate("zz"))), ["a", "zz"],
        caller_ids=True)
    assert inputs.rows == 1 and report.dropped.tolist() == [1]
    assert "dropped, as the model's spec says" in report.reasons[0]


async def test_a_store_that_is_down_degrades_with_defaults() -> None:
    store = items()
    store.down = True
    assembler = InputAssembler(parse_spec(SPEC), items=store, users=users())
    inputs, report = await assembler.assemble(RankQuery("r", query="x"), ["a", "b"])
    # The store's own error (an address, a host name) goes to the log, not to the caller.
    assert report.degraded and report.reasons == [
        "item features unavailable: every item feature took its default"]
    np.testing.assert_allclose(inputs.per_candidate["dense"], [[0, -1, 0, 0]] * 2)


async def test_an_outage_is_not_unknown_candidates_even_when_the_spec_drops_them() -> None:
    store = items()
    store.down = True
    spec = parse_spec({**SPEC, "unknown_candidates": "drop"})
    inputs, report = await InputAssembler(spec, items=store, users=users()).assemble(
        RankQuery("r", candidates=(CallerCandidate("a"), CallerCandidate("b"))), ["a", "b"],
        caller_ids=True)
    assert inputs.rows == 2 and report.unknown_candidates == 0 and report.dropped.size == 0
    assert report.degraded and report.unavailable == {"item"}


async def test_non_finite_values_become_zero_and_are_counted() -> None:
    store = MemoryStore("item", {"a": (np.nan, 1, b"x", [np.inf, 0.5])}, items()._schema.values())
    inputs, report = await InputAssembler(parse_spec(SPEC), items=store, users=users()).assemble(
        RankQuery("r", query="x"), ["a"])
    np.testing.assert_allclose(inputs.per_candidate["dense"], [[0, 1, 0, 0.5]])
    assert report.nonfinite == 2 and report.nonfinite_rows == 1


async def test_a_request_feature_of_the_wrong_size_or_type_is_invalid_argument() -> None:
    assembler = InputAssembler(parse_spec(SPEC), items=items(), users=users())
    with pytest.raises(InvalidArgument, match="'segment' has 2 value"):
        await assembler.assemble(RankQuery("r", request_features={"segment": (1, 2)}), ["a"])
    with pytest.raises(InvalidArgument, match="'segment' must be int64"):
        await assembler.assemble(RankQuery("r", request_features={"segment": "gold"}), ["a"])


class Mood:
    """A provider of a derived request feature."""

    def __init__(self, catalog) -> None:
        self.catalog = catalog

    def schema(self):
        return {"mood": FeatureInfo("mood", "float32", 2)}

    def compute(self, query):
        return {"mood": np.array([len(query.query), 1.0], np.float32)}


async def test_providers_named_in_the_spec_compute_request_features() -> None:
    from rankserve.ranker.request_features import load_provider

    spec = parse_spec({"request_features": [f"{__name__}:Mood"], "inputs": [
        {"name": "x", "per": "candidate", "shape": [], "features": ["item.price"]},
        {"name": "m", "per": "request", "shape": [2], "features": ["request.mood"]}]})
    provider = load_provider(spec.request_features[0], None)
    inputs, _ = await InputAssembler(spec, items=items(), users=None, providers=[provider]
                                     ).assemble(RankQuery("r", query="lamp"), ["a"])
    np.testing.assert_allclose(inputs.per_request["m"], [[4, 1]])
    with pytest.raises(SpecError, match="cannot import no_such"):
        load_provider("no_such:Thing", None)


async def test_defaults_unknown_ids_and_outages_reach_the_metrics() -> None:
    from prometheus_client import CollectorRegistry

    from rankserve.ranker.metrics import RankerMetrics
    from rankserve.ranker.pipeline import Ranker, RankerConfig
    from rankserve.ranker.types import ScoredBatch

    class Zeros:
        async def score(self, model, inputs, rows, timeout_s, call=None):
            return ScoredBatch(np.zeros(rows, np.float32), 1)

    registry = CollectorRegistry()
    store = items()
    ranker = Ranker(RankerConfig(), retriever=None, scorer=Zeros(),
                    inputs=InputAssembler(parse_spec(SPEC), items=store, users=users()),
                    caller_source=_caller(), metrics=RankerMetrics(registry))
    ask = RankQuery("r", candidates=(CallerCandidate("a"), CallerCandidate("zz")), page_size=2)
    await ranker.rank(ask)
    store.down = True
    res = await ranker.rank(ask)
    assert res.degradation.degraded and res.degradation.missing_feature_values > 0
    sample = registry.get_sample_value
    assert sample("rankserve_unknown_candidates_total", {"policy": "defaults"}) == 1
    assert sample("rankserve_feature_source_unavailable_total", {"source": "item"}) == 1
    assert sample("rankserve_feature_values_defaulted_total") == (1 + 1 + 2 + 1 + 1) + (
        2 * (1 + 1 + 2 + 1) + 1)


def _caller():
    from rankserve.ranker.caller_candidates import CallerCandidates

    return CallerCandidates()


async def test_a_model_with_a_spec_of_its_own_gets_its_own_inputs_even_as_a_shadow() -> None:
    from rankserve.ranker.pipeline import Ranker, RankerConfig
    from rankserve.ranker.routing_config import parse_policy
    from rankserve.ranker.types import ScoredBatch

    seen: dict[str, set[str]] = {}

    class Recording:
        async def score(self, model, inputs, rows, timeout_s, call=None):
            seen.setdefault(model.name, set()).update(inputs)
            return ScoredBatch(np.zeros(rows, np.float32), 1)

    other = parse_spec({"output": "out", "inputs": [
        {"name": "price_only", "per": "candidate", "shape": [], "features": ["item.price"]}]})
    router = parse_policy({"default": {"experiment": "e"}, "experiments": {"e": {
        "arms": [{"name": "a", "model": "live", "weight": 1}],
        "shadow": {"name": "s", "model": "next", "version": 2}}}})
    store = items()
    ranker = Ranker(RankerConfig(), retriever=None, scorer=Recording(),
                    inputs=InputAssembler(parse_spec(SPEC), items=store, users=users()),
                    model_inputs={"next": InputAssembler(other, items=store, users=users())},
                    caller_source=_caller(), router=lambda: router)
    await ranker.rank(RankQuery("r", candidates=(CallerCandidate("a"),), page_size=1))
    await ranker.shadow.drain()
    assert seen == {"live": {"dense", "category", "user", "segment"}, "next": {"price_only"}}
    assert ranker.shadow.outcomes["ok"] == 1
    await ranker.close()


class Drifted(MemoryStore):
    """A store whose newer import no longer matches the spec: a feature gone or resized."""

    def __init__(self, how: str) -> None:
        base = items()
        super().__init__("item", ITEMS, base._schema.values())
        self.how = how

    async def fetch(self, keys, names):
        if self.how == "slow":
            await asyncio.sleep(5)
        if self.how == "gone":
            raise KeyError("the item store has no feature 'embedding'")
        got = await super().fetch(keys, names)
        got.columns["embedding"] = np.zeros((len(keys), 3), np.float32)
        return got


@pytest.mark.parametrize("how", ["gone", "resized", "slow"])
async def test_a_store_that_no_longer_fits_or_hangs_degrades_instead_of_failing(how) -> None:
    assembler = InputAssembler(parse_spec(SPEC), items=Drifted(how), users=users())
    inputs, report = await assembler.assemble(RankQuery("r", query="x"), ["a", "b"],
                                              timeout_s=0.05)
    assert report.unavailable == {"item"} and inputs.rows == 2
    np.testing.assert_allclose(inputs.per_candidate["dense"], [[0, -1, 0, 0]] * 2)


def test_a_spec_refuses_defaults_and_casts_that_would_change_values() -> None:
    with pytest.raises(SpecError, match=r"features.request.seg.default: 'n/a' is no float32"):
        parse_spec({**SPEC, "features": {"request.seg": {"dtype": "float32",
                                                         "default": "n/a"}}})
    with pytest.raises(SpecError, match="'false' is no bool value"):
        parse_spec({**SPEC, "features": {"request.seg": {"dtype": "bool",
                                                         "default": "false"}}})
    floats_into_ints = parse_spec({"inputs": [{"name": "x", "per": "candidate", "shape": [],
                                               "dtype": "int64", "features": ["item.price"]}]})
    with pytest.raises(SpecError, match="feature item.price is float32; a int64 input would"
                                        " truncate it"):
        InputAssembler(floats_into_ints, items=items(), users=None)


@pytest.mark.parametrize("value", [2.9, 3_000_000_000_000_000_000_000, float("nan"), "7"])
async def test_a_request_feature_the_dtype_cannot_hold_is_refused(value) -> None:
    assembler = InputAssembler(parse_spec(SPEC), items=items(), users=users())
    with pytest.raises(InvalidArgument, match="'segment' must be int64"):
        await assembler.assemble(RankQuery("r", request_features={"segment": value}), ["a"])


async def test_an_unknown_item_takes_the_spec_s_default_while_the_store_is_up() -> None:
    spec = parse_spec({**SPEC, "features": {**SPEC["features"],
                                            "item.price": {"default": -5.0}}})
    inputs, _ = await InputAssembler(spec, items=items(), users=users()).assemble(
        RankQuery("r", query="x"), ["zz"], caller_ids=True)
    assert inputs.per_candidate["dense"][0, 0] == -5.0


async def test_dropped_candidates_count_as_retrieved_not_as_defaulted_values() -> None:
    from rankserve.ranker.pipeline import Ranker, RankerConfig
    from rankserve.ranker.types import ScoredBatch

    class Zeros:
        async def score(self, model, inputs, rows, timeout_s, call=None):
            return ScoredBatch(np.zeros(rows, np.float32), 1)

    spec = parse_spec({**SPEC, "unknown_candidates": "drop"})
    ranker = Ranker(RankerConfig(), retriever=None, scorer=Zeros(), caller_source=_caller(),
                    inputs=InputAssembler(spec, items=items(), users=users()))
    res = await ranker.rank(RankQuery("r", candidates=(
        CallerCandidate("a"), CallerCandidate("zz"), CallerCandidate("b")), page_size=3))
    assert res.candidates_retrieved == 3 and res.candidates_scored == 2
    assert res.degradation.dropped_candidates == 1
    assert res.degradation.missing_feature_values == 1  # the segment the call did not send


async def test_a_float16_input_carries_float_features_at_half_the_bytes() -> None:
    """A model that declares a float16 input gets its float32 features cast; a value past
    float16's range becomes non-finite, is counted and zeroed, as any non-finite value."""
    spec = dict(SPEC, inputs=[dict(SPEC["inputs"][0], dtype="float16")])
    store = MemoryStore("item", {"a": (1.5, 3, b"x", [0.1, 0.2]), "b": (1e6, 7, b"y", [0.3, 0.4])},
                        items()._schema.values())
    inputs, report = await InputAssembler(parse_spec(spec), items=store, users=users()).assemble(
        RankQuery("r", query="x"), ["a", "b"])
    dense = inputs.per_candidate["dense"]
    assert dense.dtype == np.float16 and dense.nbytes == 2 * 4 * 2
    np.testing.assert_allclose(dense, [[1.5, 3, 0.1, 0.2], [0, 7, 0.3, 0.4]], rtol=1e-3)
    assert report.nonfinite == 1 and report.nonfinite_rows == 1

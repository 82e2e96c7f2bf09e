"""Model server pieces without sockets: tensors, validation, batching, policies, config, CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rankserve.server.modelserver import cli
from rankserve.server.modelserver.batching import Batcher, merge_key, split_outputs
from rankserve.server.modelserver.config import VersionPolicy, parse_policy, read_config_file
from rankserve.server.modelserver.errors import ConfigError, InvalidInput, Overloaded, TooLarge
from rankserve.server.modelserver.runtime import Signature, TensorSpec, warm_up_inputs
from rankserve.server.modelserver.tensors import EncodedInputs, from_numpy, to_numpy
from rankserve.server.modelserver.validation import check_inputs
from rankserve.server.modelserver.versions import scan_versions
from rankserve.tfserving.v1 import tensor_pb2

LIMIT = 1 << 20
F32 = np.dtype(np.float32)
SIG = Signature(
    "serving_default",
    inputs={
        "context": TensorSpec(F32, 1, (1, 3)),
        "candidates": TensorSpec(F32, 1, (None, 2)),
    },
    outputs={"scores": TensorSpec(F32, 1, (None,))},
)


# Run in a fresh process with TensorFlow made unimportable: every module of the model server but
# the runtime must import, and the runtime must not (which shows the block works).
CONFINEMENT = """
import importlib, pkgutil, sys

class BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "tensorflow_serving"):
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, BlockTensorFlow())
import rankserve.server.modelserver as package

imported = []
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if info.name.rpartition(".")[2] not in ("tf_runtime", "__main__"):
        importlib.import_module(info.name)
        imported.append(info.name)
importlib.import_module("rankserve.tools.warmup_file")
loaded = [m for m in sys.modules if m.partition(".")[0] in ("tensorflow", "tensorflow_serving")]
assert not loaded, loaded
try:
    importlib.import_module("rankserve.server.modelserver.tf_runtime")
except ImportError as exc:
    print("tf_runtime:", exc)
else:
    raise AssertionError("tf_runtime imported although TensorFlow is blocked")
print("imported:", " ".join(sorted(imported)))
"""


def test_only_tf_runtime_imports_tensorflow() -> None:
    proc = subprocess.run([sys.executable, "-c", CONFINEMENT], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert lines["tf_runtime"] == "blocked: tensorflow"
    imported = set(lines["imported"].split())
    for module in ("app", "servicer", "tensors", "config", "warmup", "versions", "cli"):
        assert f"rankserve.server.modelserver.{module}" in imported


# ---- tensors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [True, False])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.arange(4, dtype=np.float64),
        np.array([[1, -2]], dtype=np.int32),
        np.array([5, 2**40], dtype=np.int64),
        np.array([0.5, -1.5], dtype=np.float16),
        np.array([True, False]),
        np.zeros((0, 3), np.float32),
    ],
)
def test_tensor_round_trip(array: np.ndarray, content: bool) -> None:
    proto = from_numpy(array, use_tensor_content=content)
    assert bool(proto.tensor_content) == (content and array.size > 0)
    back = to_numpy("x", proto, LIMIT)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_strings_use_string_val() -> None:
    proto = from_numpy(np.array([b"a", b"bc"], dtype=object))
    assert list(proto.string_val) == [b"a", b"bc"]
    assert to_numpy("s", proto, LIMIT).tolist() == [b"a", b"bc"]


def test_typed_fields_follow_tensorflow_fill_rules() -> None:
    proto = tensor_pb2.TensorProto(dtype=1, tensor_shape={"dim": [{"size": 2}, {"size": 2}]})
    np.testing.assert_array_equal(to_numpy("x", proto, LIMIT), np.zeros((2, 2), np.float32))
    proto.float_val.extend([1.0, 2.0])
    np.testing.assert_array_equal(to_numpy("x", proto, LIMIT), [[1, 2], [2, 2]])
    proto.float_val.extend([3, 4, 5])
    with pytest.raises(InvalidInput, match="5 values but shape \\[2, 2\\] holds 4"):
        to_numpy("x", proto, LIMIT)


def test_bad_tensor_protos_are_invalid_input() -> None:
    proto = from_numpy(np.ones((2, 2), np.float32), use_tensor_content=True)
    proto.tensor_content = proto.tensor_content[:-1]
    with pytest.raises(InvalidInput, match="tensor_content has 15 bytes.*needs 16"):
        to_numpy("x", proto, LIMIT)
    with pytest.raises(InvalidInput, match="unknown rank"):
        to_numpy("x", tensor_pb2.TensorProto(dtype=1, tensor_shape={"unknown_rank": True}), LIMIT)
    with pytest.raises(InvalidInput, match="unsupported dtype"):
        to_numpy("x", tensor_pb2.TensorProto(dtype=14), LIMIT)  # DT_BFLOAT16


def _declaring(shape, **fields) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(
        dtype=1, tensor_shape={"dim": [{"size": s} for s in shape]}, **fields
    )


@pytest.mark.parametrize(
    ("shape", "fields", "message"),
    [
        # One repeated value, a shape of 2**40 rows: TensorFlow's fill rule would expand it.
        ((2**40, 300), {"float_val": [1.0]}, "'x' declares shape \\[1099511627776, 300\\]"),
        # No value at all: zeros of the declared shape.
        ((1 << 20, 1 << 20), {}, "1099511627776 elements, 4.0 TiB decoded"),
        # Dims whose product overflows int64 (it wrapped to 0 before) are still too large.
        ((2**32, 2**32, 2**32), {"float_val": [1.0]}, "elements"),
        ((2**40,), {"tensor_content": b"\0" * 8}, "at most 1.0 MiB"),
    ],
)
def test_declared_sizes_are_bounded_before_any_allocation(shape, fields, message) -> None:
    with pytest.raises(TooLarge, match=message) as info:
        to_numpy("x", _declaring(shape, **fields), LIMIT)
    assert info.value.status == "RESOURCE_EXHAUSTED"


def test_the_bound_covers_a_requests_inputs_together() -> None:
    half = _declaring((LIMIT // 8,), float_val=[1.0])  # LIMIT / 2 bytes each once decoded
    fits = EncodedInputs({"a": half}, LIMIT)
    assert fits.decode()["a"].nbytes == LIMIT // 2
    three = EncodedInputs({"a": half, "b": half, "c": _declaring((LIMIT // 4,))}, LIMIT)
    assert {n: h.nbytes for n, h in three.declared().items()} == {
        "a": LIMIT // 2, "b": LIMIT // 2, "c": LIMIT}
    with pytest.raises(TooLarge, match="input 'c'"):
        three.decode()


def test_a_negative_dimension_is_invalid_not_too_large() -> None:
    with pytest.raises(InvalidInput, match="negative dimension in shape \\[-1, 3\\]"):
        to_numpy("x", _declaring((-1, 3), float_val=[1.0]), LIMIT)


# ---- validation ------------------------------------------------------------------------------


def _inputs(**overrides):
    inputs = {"context": np.zeros((1, 3), np.float32), "candidates": np.zeros((4, 2), np.float32)}
    inputs.update(overrides)
    return {k: v for k, v in inputs.items() if v is not None}


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (_inputs(context=None), "missing input 'context'.*expects inputs 'candidates', 'context'"),
        (_inputs(extra=np.zeros(1, np.float32)), "unknown input 'extra'"),
        (_inputs(candidates=np.zeros((4, 2), np.int64)), "DT_INT64.*expects DT_FLOAT"),
        (_inputs(candidates=np.zeros(2, np.float32)), "shape \\[2\\].*expects \\[\\?, 2\\]"),
        (_inputs(context=np.zeros((1, 4), np.float32)), "shape \\[1, 4\\].*expects \\[1, 3\\]"),
        (
            _inputs(candidates=np.array([[np.nan, np.inf], [1, -np.inf]], np.float32)),
            "'candidates' has 3 non-finite value\\(s\\) \\(1 NaN, 2 infinite\\) of 4",
        ),
    ],
)
def test_validation_says_what_to_change(inputs, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_inputs(SIG, inputs)


def test_valid_inputs_pass_and_warm_up_uses_ones_for_unknown_dims() -> None:
    check_inputs(SIG, _inputs())
    warm = warm_up_inputs(SIG)
    assert warm["context"].shape == (1, 3) and warm["candidates"].shape == (1, 2)
    check_inputs(SIG, warm)


# ---- batching --------------------------------------------------------------------------------


def test_merge_key_separates_contexts_and_split_restores_rows() -> None:
    a = _inputs(candidates=np.ones((2, 2), np.float32))
    b = _inputs(candidates=np.ones((3, 2), np.float32))
    c = _inputs(context=np.ones((1, 3), np.float32))
    assert merge_key(SIG, a)[0] == merge_key(SIG, b)[0] != merge_key(SIG, c)[0]
    assert merge_key(SIG, b)[1] == 3
    parts = split_outputs({"scores": np.arange(5.0), "total": np.float32(7)}, [2, 3])
    assert [p["scores"].tolist() for p in parts] == [[0, 1], [2, 3, 4]]
    assert all(p["total"] == 7 for p in parts)


class FakeModel:
    """scores = row sums + context sum; fails on any -1 in the candidates; records batches."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, inputs):
        with self.lock:
            self.rows.append(len(inputs["candidates"]))
        if (inputs["candidates"] == -1).any():
            raise ValueError("bad row")
        return {"scores": inputs["candidates"].sum(axis=1) + inputs["context"].sum()}


async def _burst(batcher: Batcher, calls):
    return await asyncio.gather(*(batcher.submit(c) for c in calls), return_exceptions=True)


async def test_batcher_merges_splits_and_respects_max_rows() -> None:
    model = FakeModel()
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(SIG, model, executor, max_rows=10, max_wait_s=0.05)
        calls = [_inputs(candidates=np.full((5, 2), i, np.float32)) for i in range(8)]
        results = await _burst(batcher, calls)
        for i, result in enumerate(results):
            np.testing.assert_array_equal(result["scores"], np.full(5, 2.0 * i))
        assert batcher.model_calls == len(model.rows) == 4
        assert max(model.rows) <= 10
        other = [_inputs(context=np.full((1, 3), i, np.float32)) for i in range(3)]
        await _burst(batcher, other)
        assert batcher.model_calls == 7  # different contexts: one call each
        await batcher.close()


async def test_a_lone_call_waits_the_gap_and_a_steady_burst_merges_past_it() -> None:
    """With a 0.4 s window and a 0.1 s gap: a call alone runs after about the gap; calls that
    keep arriving every 0.03 s merge into one model call until the window is up."""
    model = FakeModel()
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(SIG, model, executor, max_rows=1000, max_wait_s=0.4, idle_gap_s=0.1)
        started = time.monotonic()
        await batcher.submit(_inputs())
        alone = time.monotonic() - started
        assert 0.09 <= alone < 0.3, alone

        async def spaced(i: int):
            await asyncio.sleep(0.03 * i)
            return await batcher.submit(_inputs())

        before = batcher.model_calls
        await asyncio.gather(*(spaced(i) for i in range(6)))  # 0.15 s of arrivals, 0.03 apart
        assert batcher.model_calls - before == 1
        await batcher.close()


async def test_each_group_of_calls_that_can_merge_has_its_own_window() -> None:
    """A burst that starts while another one waits is not cut short when the older one's window
    closes: with 0.4 s windows, context A at 0 s runs at 0.4 s, and context B's calls at 0.25
    and 0.5 s merge into one model call at 0.65 s."""
    model = FakeModel()
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(SIG, model, executor, max_rows=1000, max_wait_s=0.4, idle_gap_s=0.4)
        other = np.ones((1, 3), np.float32)

        async def at(delay: float, inputs):
            await asyncio.sleep(delay)
            return await batcher.submit(inputs)

        await asyncio.gather(at(0.0, _inputs()), at(0.25, _inputs(context=other)),
                             at(0.5, _inputs(context=other)))
        assert batcher.model_calls == 2 and sorted(model.rows) == [4, 8]
        await batcher.close()


async def test_a_call_that_can_merge_with_nothing_runs_at_once() -> None:
    fixed = Signature("serving_default", inputs={"context": SIG.inputs["context"]},
                      outputs={"score": TensorSpec(F32, 1, (1,))})
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(fixed, lambda inputs: {"score": inputs["context"].sum(axis=1)},
                          executor, max_rows=1000, max_wait_s=5.0, idle_gap_s=5.0)
        started = time.monotonic()
        result = await batcher.submit({"context": np.ones((1, 3), np.float32)})
        assert time.monotonic() - started < 2.0  # not the 5 s window
        np.testing.assert_array_equal(result["score"], [3.0])
        await batcher.close()


@pytest.mark.parametrize(("inline_below_s", "model_s", "on_loop"), [
    (1.0, 0.0, True),     # a fast model: after the first call, merged calls run on the loop
    (0.0, 0.0, False),    # 0: always on the executor
    (0.005, 0.02, False),  # a model slower than the bound stays on its thread
])
async def test_fast_models_run_on_the_event_loop_after_their_first_call(
        inline_below_s: float, model_s: float, on_loop: bool) -> None:
    model = FakeModel()
    threads: list[int] = []

    def timed(inputs):
        threads.append(threading.get_ident())
        time.sleep(model_s)
        return model(inputs)

    loop_thread = threading.get_ident()
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(SIG, timed, executor, max_rows=100, max_wait_s=0.01,
                          inline_below_s=inline_below_s)
        for burst in range(3):
            calls = [_inputs(candidates=np.full((2, 2), burst + i, np.float32))
                     for i in range(4)]
            for call, result in zip(calls, await _burst(batcher, calls), strict=True):
                np.testing.assert_array_equal(
                    result["scores"], call["candidates"].sum(axis=1) + call["context"].sum())
        await batcher.close()
    assert batcher.model_calls == len(threads) == 3  # each burst merged into one call
    assert threads[0] != loop_thread  # the first call is always timed on the executor
    assert all((t == loop_thread) == on_loop for t in threads[1:]), threads


async def test_a_failing_call_does_not_fail_the_calls_merged_with_it() -> None:
    model = FakeModel()
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(SIG, model, executor, max_rows=100, max_wait_s=0.05)
        calls = [_inputs(candidates=np.full((2, 2), v, np.float32)) for v in (1, -1, 2)]
        ok1, bad, ok2 = await _burst(batcher, calls)
        assert isinstance(bad, ValueError)
        np.testing.assert_array_equal(ok1["scores"], [2, 2])
        np.testing.assert_array_equal(ok2["scores"], [4, 4])
        assert model.rows == [6, 2, 2, 2]
        await batcher.close()


async def test_a_full_queue_refuses_at_once_and_keeps_what_it_admitted() -> None:
    """TF Serving's max_enqueued_batches: past the bound a call is refused with a retry hint,
    while the model is busy; the calls already queued are all answered."""
    gate = threading.Event()
    model = FakeModel()

    def blocked(inputs):
        gate.wait(5)
        return model(inputs)

    shed = []
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(SIG, blocked, executor, max_rows=10, max_wait_s=0.0,
                          max_queued_rows=10, on_shed=lambda: shed.append(1))
        running = asyncio.create_task(batcher.submit(_inputs()))  # 4 rows, taken at once
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(batcher.submit(_inputs())) for _ in range(2)]  # 8 rows
        await asyncio.sleep(0)
        full = "queue full: 8 rows wait for the model \\(at most 10\\)"
        with pytest.raises(Overloaded, match=full) as refused:
            await batcher.submit(_inputs())
        assert refused.value.status == "RESOURCE_EXHAUSTED"
        assert refused.value.retry_after_ms >= 1
        assert batcher.shed == 1 and shed == [1]
        gate.set()
        for result in await asyncio.gather(running, *queued):
            assert result["scores"].shape == (4,)
        await batcher.close()


async def test_rows_taken_for_later_model_calls_still_count_as_waiting() -> None:
    """The worker takes the whole queue at once and runs it chunk by chunk: rows of chunks not
    yet run still wait, and the bound counts them."""
    permits = threading.Semaphore(0)
    model = FakeModel()

    def gated(inputs):
        permits.acquire(timeout=5)
        return model(inputs)

    async def until(check) -> None:
        for _ in range(500):
            if check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(SIG, gated, executor, max_rows=4, max_wait_s=0.0, max_queued_rows=8)
        a = asyncio.create_task(batcher.submit(_inputs()))  # 4 rows, running
        await until(lambda: batcher.model_calls == 1)
        b, c = (asyncio.create_task(batcher.submit(_inputs())) for _ in range(2))  # 8 queued
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="8 rows wait"):
            await batcher.submit(_inputs())
        permits.release()  # a ends; b runs, c is taken but waits
        await a
        await until(lambda: batcher.model_calls == 2)
        d = asyncio.create_task(batcher.submit(_inputs()))  # c's 4 + d's 4 = 8: admitted
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="8 rows wait"):
            await batcher.submit(_inputs())
        for _ in range(3):
            permits.release()
        assert all(r["scores"].shape == (4,) for r in await asyncio.gather(b, c, d))
        await batcher.close()


# ---- versions, policies, config --------------------------------------------------------------


def test_policies() -> None:
    on_disk = [1, 2, 3, 10]
    assert parse_policy("latest:2").select(on_disk) == {3, 10}
    assert parse_policy("latest").select(on_disk) == {10}
    assert parse_policy("all").select(on_disk) == {1, 2, 3, 10}
    assert parse_policy("specific:1,3,7").select(on_disk) == {1, 3}
    assert VersionPolicy().describe() == "latest:1"
    for bad in ("latest:0", "newest", "specific:", "specific:a", "all:2"):
        with pytest.raises(ConfigError, match="latest:N"):
            parse_policy(bad)


def test_scan_ignores_other_names_and_versions_still_being_copied(tmp_path: Path) -> None:
    for name in ("1", "12", "tmp", "3", "²"):  # a superscript digit is no version
        (tmp_path / name).mkdir()
    for name in ("1", "12", "tmp", "²"):
        (tmp_path / name / "saved_model.pb").write_bytes(b"x")
    assert sorted(scan_versions(tmp_path)) == [1, 12]
    assert scan_versions(tmp_path / "missing") == {}


def test_tf_serving_config_file(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text(
        """
        model_config_list {
          config {
            name: "ranker" base_path: "/models/ranker" model_platform: "tensorflow"
            model_version_policy { specific { versions: 1 versions: 2 } }
            version_labels { key: "stable" value: 1 }
            version_labels { key: "canary" value: 2 }
          }
          config { name: "other" base_path: "/models/other"
                   model_version_policy { latest { num_versions: 3 } } }
          config { name: "third" base_path: "/models/third" model_version_policy { all {} } }
        }
        """
    )
    ranker, other, third = read_config_file(path)
    assert ranker.name == "ranker" and str(ranker.base_path) == "/models/ranker"
    assert ranker.policy.describe() == "specific:1,2"
    assert ranker.labels == {"stable": 1, "canary": 2}
    assert other.policy.describe() == "latest:3" and third.policy.describe() == "all"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: ", "models.config"),
        ('model_config_list { config { name: "a" } }', "name and a base_path"),
        (
            'model_config_list { config { name: "a" base_path: "/a" model_platform: "onnx" } }',
            "only 'tensorflow'",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/a" } '
            'config { name: "a" base_path: "/b" } }',
            "names a model twice",
        ),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_config_file(path)


# ---- settings and command line ---------------------------------------------------------------


def _args(*argv: str):
    return cli.configure_parser(__import__("argparse").ArgumentParser()).parse_args(argv)


def test_flags_override_environment(monkeypatch) -> None:
    monkeypatch.setenv("RANKSERVE_MODELSERVER_PORT", "9000")
    monkeypatch.setenv("RANKSERVE_MODELSERVER_GRACE_S", "2.5")
    settings = cli.settings_from_args(
        _args("--model-name", "m", "--model-base-path", "/models/m", "--port", "0")
    )
    assert settings.port == 0 and settings.grace_s == 2.5
    assert settings.version_policy == "latest:1" and settings.batch_max_wait_ms == 15.0
    assert settings.batch_idle_gap_ms == 3.0


def test_settings_need_exactly_one_model_source(capsys) -> None:
    assert cli.handle(_args("--port", "0")) == 2
    assert cli.handle(_args("--model-name", "m")) == 2
    assert cli.handle(_args("--model-config-file", "c", "--model-name", "m")) == 2
    assert "model_base_path" in capsys.readouterr().err


def test_settings_fields_are_documented() -> None:
    from rankserve.server.modelserver.settings import ModelServerSettings

    for name, field in ModelServerSettings.model_fields.items():
        assert field.description, name


def test_help_shows_each_settings_default_and_env_var() -> None:
    from rankserve.server.modelserver.settings import ModelServerSettings

    text = " ".join(cli.configure_parser(__import__("argparse").ArgumentParser()).format_help()
                    .split())
    for name in ModelServerSettings.model_fields:
        assert f"--{name.replace('_', '-')} " in text, name
        assert f"env RANKSERVE_MODELSERVER_{name.upper()})" in text, name
    assert "(default 8500; env RANKSERVE_MODELSERVER_PORT)" in text


def test_an_empty_flag_unsets_an_optional_setting_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("RANKSERVE_MODELSERVER_MODEL_NAME", "m")
    monkeypatch.setenv("RANKSERVE_MODELSERVER_MODEL_BASE_PATH", "/models/m")
    settings = cli.settings_from_args(
        _args("--model-name", "", "--model-base-path", "", "--model-config-file", "c")
    )
    assert settings.model_name is None and settings.model_config_file == Path("c")

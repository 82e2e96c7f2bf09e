"""Rank of 1000 candidates x 300 features through the stack, beside the compute floor and a
naive client.

Rows (all on this machine, in one run, so they compare as ratios):
  stack, gzip off / on  ranker -> Envoy -> 2 model servers, 40 batches of 25 in flight at once
  stack, float16        the same, the demo model re-exported to take float16 inputs (cast to
                        float32 inside) and the spec saying so: half the bytes, no codec
  transport floor       the same 40 Predict calls (same sizes, all in flight at once) from a bare
                        grpc.aio client through the same Envoy config to 2 echo servers that
                        answer 25 scores without a model: what the fan-out itself costs
  bare client, Envoy,   the transport floor's calls through the first stack's Envoy to its
  2 model servers       model servers: splits the stack's gap over the floor into the ranker's
                        part and the model servers'
  compute floor         the same 1000 rows in ONE in-process call of the SavedModel signature
  naive client          the same 40 batches sent one after another with the official
                        tensorflow-serving-api stubs and tf.make_tensor_proto, through Envoy

The stack rows, the transport floor and the naive client run side by side, each on its own
processes (the bare client's second row and the naive client on the first stack's), and take
turns in short slices (bench.interleave), so the machine's drift moves them alike.

Latency: sequential calls (p50, p99). Throughput: a closed loop at a fixed concurrency for a
fixed time. CPU: user + system seconds of every process involved (client included) per Rank,
also split by tier. Bytes: what Envoy received from its client per Rank (HTTP/2 framing
included).

    python -m bench.rank_bench [--latency-calls 200] [--throughput-s 10] [--concurrency 4]
                               [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from bench.interleave import Calls, RankerCalls, Subject, measure
from bench.measure import TIERS, Row, percentiles, table, tier_table
from rankserve.demo.build import DemoPaths, ensure_demo
from rankserve.demo.queries import SAMPLE_REQUESTS
from rankserve.loadtest.cpu import self_cpu_s
from rankserve.ranker.model_signature import saved_model_file
from rankserve.ranking.v1 import ranking_pb2
from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.processes import Child, start, wait_ready_file
from rankserve.tools.stack.settings import StackSettings

RESULTS = Path(__file__).parent / "results"


def rank_request(i: int) -> ranking_pb2.RankRequest:
    s = SAMPLE_REQUESTS[i % len(SAMPLE_REQUESTS)]
    return ranking_pb2.RankRequest(
        request_id=f"bench-{i}",
        query=s.query,
        user=ranking_pb2.User(id=s.user_id, known=s.user_known),
        context=ranking_pb2.Context(device=s.device, locale=s.locale,
                                    viewed_item_ids=list(s.viewed_item_ids)),
        page_size=10,
        candidate_limit=1000,
    )


def _stack_settings(prefix: str, **kw: object) -> StackSettings:
    # Tracing off: its cost is measured on its own by bench.tracing_bench.
    return StackSettings(ranker_port=0, traces=False,
                         run_dir=Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-")), **kw)


def stack_rows(paths: DemoPaths) -> list[tuple[str, StackSettings, StackInputs]]:
    """(label, settings, inputs) of each row Ranks go through the stack for."""
    from rankserve.demo.half_inputs import write_half_input_variant

    inputs = StackInputs(paths.catalog_dir, paths.model_config_file)
    # The demo model re-exported to take float16 inputs and the spec saying so: the ranker
    # sends the same features at half the bytes, with no codec.
    work = Path(tempfile.mkdtemp(prefix="bench-half-"))
    half = write_half_input_variant(paths, work)
    return [
        ("stack: ranker+Envoy+2 servers, gzip off", _stack_settings("none"), inputs),
        ("stack: ranker+Envoy+2 servers, gzip on", _stack_settings("gzip", compression="gzip"),
         inputs),
        ("stack: ranker+Envoy+2 servers, deflate on",
         _stack_settings("deflate", compression="deflate"), inputs),
        ("stack: float16 inputs (model declares them)",
         _stack_settings("half", spec=half.spec_file),
         StackInputs(paths.catalog_dir, half.model_config_file)),
        ("stack: model on ONNX Runtime (--onnx-models)", _stack_settings("onnx", onnx_models="*"),
         inputs),
    ]


class _EchoStack(LocalStack):
    """The local stack's Envoy in front of echo servers (bench.echo_predict), no ranker."""

    def _start_model_servers(self) -> None:
        children = []
        for i in range(1, self.settings.replicas + 1):
            ready = self.run_dir / f"echo-{i}.ready"
            child = Child(f"echo-{i}", [*self._py("bench.echo_predict"), "--ready-file",
                                        str(ready)], self.run_dir / f"echo-{i}.log")
            children.append(start(child, env=self._env("echo")))
            wait_ready_file(child, ready, self.settings.start_timeout_s)
        self.model_servers = children

    def _start_ranker(self, port: int | None = None, generation: int = 0) -> None:
        return None


def _rank_requests(paths: DemoPaths, batch: int = 25) -> list[bytes]:
    """The Predict requests of one Rank, serialised once: what the ranker sends, built by its
    own request builder from the demo's context and candidates."""
    from rankserve.ranker.scoring import build_request
    from rankserve.ranker.types import ModelRef

    context, cands = _inputs(paths)
    return [build_request(ModelRef("ranker"), {"context": context,
                                               "candidates": cands[i:i + batch]}
                          ).SerializeToString()
            for i in range(0, cands.shape[0], batch)]


class FloorCalls(Calls):
    """The transport floor's Rank: the 40 Predict requests of one Rank, serialised once, all in
    flight at once from a bare grpc.aio client through Envoy."""

    def __init__(self, stack: LocalStack, requests: list[bytes]) -> None:
        assert stack.envoy is not None
        super().__init__(stack.envoy.address)
        self._requests = requests
        self._predict: grpc.aio.UnaryUnaryMultiCallable | None = None

    async def __call__(self, i: int) -> str:
        if self._predict is None:
            self._predict = self.channel().unary_unary(
                "/tensorflow.serving.PredictionService/Predict")
        predict = self._predict
        await asyncio.gather(*(predict(r, timeout=10) for r in self._requests))
        return ""

    async def aclose(self) -> None:
        self._predict = None
        await super().aclose()


def bench_interleaved(paths: DemoPaths, args: argparse.Namespace) -> list[Row]:
    """Every stack row, the transport floor and the naive client, measured in turns
    (bench.interleave)."""
    rows = stack_rows(paths)
    requests = _rank_requests(paths)
    with contextlib.ExitStack() as opened:
        subjects = []
        for label, settings, inputs in rows:
            print(f"starting {label} ...", file=sys.stderr, flush=True)
            stack = opened.enter_context(LocalStack(settings, inputs, out=lambda _l: None))
            subjects.append(Subject(stack, RankerCalls(stack, rank_request)))
        print("starting the transport floor ...", file=sys.stderr, flush=True)
        echo = opened.enter_context(_EchoStack(_stack_settings("floor"), rows[0][2],
                                               out=lambda _l: None))
        subjects.append(Subject(echo, FloorCalls(echo, requests), client_tier=TIERS[0]))
        # The floor's bare client through the first stack's Envoy to its model servers: the
        # stack's gap over the floor splits into the ranker's part (the stack against this row)
        # and the model servers' (this row against the floor). The idle ranker is set aside.
        first = subjects[0].stack
        assert first.ranker is not None
        direct = Subject(first, FloorCalls(first, requests), client_tier=TIERS[0],
                         aside=(first.ranker.pid,))
        subjects.append(direct)
        # Through the first stack's Envoy and model servers; a quarter of the sequential calls,
        # each Rank taking as long as it does.
        naive = Subject(first, NaiveCalls(first, paths), latency_share=0.25)
        subjects.append(naive)
        measure(subjects, rounds=args.rounds, latency_calls=args.latency_calls,
                seconds=args.throughput_s, concurrency=args.concurrency)
    note = (f"{args.concurrency} callers, {args.throughput_s:g} s in {args.rounds} slices"
            " taken in turns with the other rows")
    out = [sub.tally.row(label, note) for sub, (label, _s, _i) in zip(subjects[:-3], rows,
                                                                   strict=True)]
    out.append(subjects[-3].tally.row(
        "transport floor: bare client, Envoy, 2 echo",
        f"the {len(requests)} Predicts of one Rank at once; {note}"))
    out.append(direct.tally.row(
        "bare client, Envoy, 2 model servers",
        f"the floor's calls to the first stack's model servers; {note}"))
    out.append(naive.tally.row("naive: 40 sequential Predicts, official stubs",
                               f"one caller, sequential; {args.throughput_s:g} s in"
                               f" {args.rounds} slices taken in turns with the other rows"))
    return out


def _inputs(paths: DemoPaths) -> tuple[np.ndarray, np.ndarray]:
    from rankserve.demo.candidates import CandidateMaker

    maker = CandidateMaker.open(paths.catalog_dir)
    got = maker(SAMPLE_REQUESTS[0])
    return got.context[None, :].astype(np.float32), maker.features(got.rows)


def bench_floor(paths: DemoPaths, args: argparse.Namespace) -> Row:
    import tensorflow as tf  # the benchmark process may load TensorFlow; the ranker never does

    context, cands = _inputs(paths)
    version_dir = saved_model_file(paths.model_base_path).parent
    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    ctx_t, cand_t = tf.constant(context), tf.constant(cands)
    for _ in range(20):
        fn(context=ctx_t, candidates=cand_t)
    lat = []
    c0 = self_cpu_s()
    for _ in range(args.latency_calls):
        t = time.perf_counter()
        fn(context=ctx_t, candidates=cand_t)["scores"].numpy()
        lat.append(time.perf_counter() - t)
    cpu = (self_cpu_s() - c0) / args.latency_calls
    p50, p99 = percentiles(lat)
    return Row("compute floor: 1 in-process call, 1000 rows", p50, p99,
               1 / float(np.mean(lat)), cpu, 0.0, "one thread, sequential")


class NaiveCalls(Calls):
    """The naive client's Rank: the 40 batches one after another through Envoy, each request
    built with tf.make_tensor_proto and sent with the official tensorflow-serving-api stub
    (blocking: a slice's callers take turns, so it is one caller)."""

    def __init__(self, stack: LocalStack, paths: DemoPaths) -> None:
        import tensorflow as tf  # the benchmark process may load TensorFlow; the ranker never does
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        assert stack.envoy is not None
        super().__init__(stack.envoy.address)
        self._context, self._cands = _inputs(paths)
        self._tf, self._predict_pb2 = tf, predict_pb2
        self._sync = grpc.insecure_channel(stack.envoy.address)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._sync)

    async def __call__(self, i: int) -> str:
        tf, predict_pb2 = self._tf, self._predict_pb2
        for first in range(0, self._cands.shape[0], 25):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "ranker"
            req.inputs["context"].CopyFrom(tf.make_tensor_proto(self._context))
            req.inputs["candidates"].CopyFrom(tf.make_tensor_proto(self._cands[first:first + 25]))
            self._stub.Predict(req, timeout=10)
        return ""

    async def aclose(self) -> None:
        self._sync.close()
        await super().aclose()


def ratios(rows: list[Row]) -> str:
    """The stack against the transport floor and the naive client, and each way of cutting
    bytes against none, as ratios (this run's)."""
    def row(prefix: str) -> Row:
        return next(r for r in rows if r.path.startswith(prefix))

    stack = row("stack: ranker+Envoy+2 servers, gzip off")
    floor, naive, direct = row("transport"), row("naive"), row("bare client, Envoy, 2 model")
    ranker_ms = (stack.cpu_s_per_rank - direct.cpu_s_per_rank) * 1e3
    servers_ms = (direct.cpu_s_per_rank - floor.cpu_s_per_rank) * 1e3
    lines = [f"stack (gzip off) against the transport floor: p50"
             f" x{stack.p50_ms / floor.p50_ms:.2f}, CPU per Rank"
             f" x{stack.cpu_s_per_rank / floor.cpu_s_per_rank:.2f}, throughput"
             f" x{stack.ranks_per_s / floor.ranks_per_s:.2f}; against the naive client: p50"
             f" {naive.p50_ms / stack.p50_ms:.1f}x faster",
             f"the stack's CPU over the floor's, {ranker_ms + servers_ms:.1f} ms per Rank:"
             f" {ranker_ms:.1f} where the ranker replaces the bare client (same Envoy and model"
             f" servers), {servers_ms:.1f} where the model servers replace the echo servers"
             f" (same bare client)"]
    for prefix, what in (("stack: ranker+Envoy+2 servers, gzip on", "gzip"),
                         ("stack: ranker+Envoy+2 servers, deflate on", "deflate"),
                         ("stack: float16", "float16 inputs")):
        other = row(prefix)
        lines.append(f"{what} against none: bytes"
                     f" x{other.bytes_per_rank / stack.bytes_per_rank:.2f},"
                     f" CPU per Rank x{other.cpu_s_per_rank / stack.cpu_s_per_rank:.2f}, p50"
                     f" x{other.p50_ms / stack.p50_ms:.2f}, throughput"
                     f" x{other.ranks_per_s / stack.ranks_per_s:.2f}")
    onnx = row("stack: model on ONNX Runtime")
    floor_ratios = (f"p50 x{onnx.p50_ms / floor.p50_ms:.2f}, CPU per Rank"
                    f" x{onnx.cpu_s_per_rank / floor.cpu_s_per_rank:.2f}, throughput"
                    f" x{onnx.ranks_per_s / floor.ranks_per_s:.2f}")
    lines.append(f"ONNX Runtime against TensorFlow: CPU per Rank"
                 f" x{onnx.cpu_s_per_rank / stack.cpu_s_per_rank:.2f}, p50"
                 f" x{onnx.p50_ms / stack.p50_ms:.2f}, throughput"
                 f" x{onnx.ranks_per_s / stack.ranks_per_s:.2f}; against the transport floor:"
                 f" {floor_ratios}; against the naive client: p50"
                 f" {naive.p50_ms / onnx.p50_ms:.1f}x faster")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency-calls", type=int, default=200, help="Sequential calls per path.")
    p.add_argument("--throughput-s", type=float, default=10.0, help="Closed-loop duration.")
    p.add_argument("--concurrency", type=int, default=4, help="Closed-loop callers.")
    p.add_argument("--rounds", type=int, default=5,
                   help="Turns the rows take: each gets this share of the calls and time.")
    args = p.parse_args(argv)
    paths = ensure_demo()
    rows = []
    rows.extend(bench_interleaved(paths, args))
    print("measuring the compute floor ...", file=sys.stderr, flush=True)
    rows.insert(-1, bench_floor(paths, args))
    text = table(rows) + "\n\n" + ratios(rows) + "\n\n" + tier_table(rows)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "python": platform.python_version(),
        "args": vars(args),
    }
    (RESULTS / "rank_bench.json").write_text(
        json.dumps({**meta, "rows": [r.as_dict() for r in rows]}, indent=2))
    (RESULTS / "rank_bench.md").write_text(
        f"# Rank benchmark ({meta['date']}, {meta['machine']})\n\n"
        "`make bench` (python -m bench.rank_bench). Rank = 1000 candidates x 300 features,"
        " batch 25.\n\n" + text + "\n\n" + "\n".join(f"- {r.path}: {r.note}" for r in rows) + "\n")
    print(f"wrote {RESULTS / 'rank_bench.json'} and {RESULTS / 'rank_bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

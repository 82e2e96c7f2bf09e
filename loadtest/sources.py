"""Where the requests of a load test come from: captured traffic, or the demo catalog.

A source yields ``Payloads``: serialised requests of one kind, sent in turn (cycling when the
test needs more than there are). Serialising up front keeps the generator's own cost out of the
measurement and tells exactly how many bytes each request puts on the wire.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import wrappers_pb2

from rankserve.loadtest.targets import Kind
from rankserve.ranker.planner import plan_batches
from rankserve.ranker.scoring import build_request
from rankserve.ranker.tensors import fill_tensor_proto, from_tensor_proto
from rankserve.ranker.types import ModelRef
from rankserve.ranking.v1 import ranking_pb2
from rankserve.server.ranking.capture_files import Damage, list_capture_files, read_records
from rankserve.tfserving.v1 import predict_pb2

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """The requested traffic cannot be produced (empty capture, wrong kind, bad model)."""


@dataclass
class Payloads:
    kind: Kind
    items: list[bytes]
    description: str
    # Candidates per Predict request (predict payloads), for the report.
    batch_sizes: list[int] = field(default_factory=list)
    _gzip_sizes: list[int] | None = None
    # What the report should say about where the requests came from (damaged capture files).
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> bytes:
        return self.items[i % len(self.items)]

    def gzip_size(self, i: int) -> int:
        """Size of request ``i`` after gRPC's gzip (zlib, default level): its wire bytes."""
        if self._gzip_sizes is None:
            self._gzip_sizes = [_gzip_len(p) for p in self.items]
        return self._gzip_sizes[i % len(self.items)]


def _gzip_len(data: bytes) -> int:
    c = zlib.compressobj(wbits=31)
    return len(c.compress(data)) + len(c.flush())


def parse_model(text: str) -> ModelRef:
    """NAME, NAME@VERSION (digits) or NAME@LABEL."""
    name, _, choice = text.partition("@")
    if not name:
        raise SourceError(f"model {text!r}: expected NAME, NAME@VERSION or NAME@LABEL")
    if choice.isdigit():
        return ModelRef(name, version=int(choice))
    return ModelRef(name, label=choice or None)


# -- replay ------------------------------------------------------------------------------------


def replay(where: Path, kind: Kind, *, model: ModelRef | None = None,
           batch_size: int | None = None) -> Payloads:
    """The captured requests of ``kind`` under ``where`` (a file or a capture directory), in
    capture order. ``model`` re-addresses them to another model or version (a load test of v2
    with v1's traffic); ``batch_size`` re-splits each Rank call's candidates (predict only).

    A damaged file (cut short, garbage in it) gives every whole record before the damage; where
    it stopped is logged as a warning and kept in ``notes`` and the description."""
    files = list_capture_files(where)
    if not files:
        raise SourceError(f"no capture files (*.capture.zst) under {where}")
    ranks: list[ranking_pb2.RankRequest] = []
    batches: dict[str, list[tuple[int, predict_pb2.PredictRequest]]] = defaultdict(list)
    damaged: list[Damage] = []
    for rec in read_records(files, on_damage=damaged.append):
        which = rec.WhichOneof("record")
        if which == "rank":
            ranks.append(rec.rank.request)
        elif which == "predict":
            batches[rec.request_id].append((rec.predict.batch_index, rec.predict.request))
    notes = [f"damaged capture file replayed up to the damage: {d}" for d in damaged]
    for note in notes:
        log.warning("%s", note)
    desc = f"replay of {len(files)} capture file(s) under {where}"
    if notes:
        desc += f" ({len(notes)} damaged, read up to the damage; see notes)"
    damage = "".join(f"; {n}" for n in notes)
    if kind == "rank":
        if not ranks:
            raise SourceError(f"{where}: the capture holds no Rank requests{damage}")
        for r in ranks:
            if model is not None:
                _select_rank_model(r, model)
        return Payloads("rank", [r.SerializeToString() for r in ranks], desc, notes=notes)
    if not batches:
        raise SourceError(f"{where}: the capture holds no Predict requests{damage}")
    out: list[predict_pb2.PredictRequest] = []
    for parts in batches.values():
        parts.sort(key=lambda p: p[0])
        reqs = [p[1] for p in parts]
        out.extend(_rebatch(reqs, batch_size) if batch_size else reqs)
    if model is not None:
        for req in out:
            _select_predict_model(req, model)
    return Payloads("predict", [r.SerializeToString() for r in out], desc,
                    [_rows(r) for r in out], notes=notes)


def _rows(req: predict_pb2.PredictRequest) -> int:
    """Candidates in a captured batch: the longest leading dim among its inputs (a per-request
    input sent once has 1; per-candidate and tiled inputs have the batch's rows)."""
    leads = [int(t.tensor_shape.dim[0].size) for t in req.inputs.values() if t.tensor_shape.dim]
    return max(leads, default=0)


def _rebatch(reqs: list[predict_pb2.PredictRequest], batch_size: int
             ) -> list[predict_pb2.PredictRequest]:
    """One Rank call's batches, re-split at another batch size (same candidates, same order).

    Inputs with one row per candidate (per-candidate, tiled, or serialized tf.Examples) are
    concatenated and cut again; an input sent once per batch is kept as it is.
    """
    rows = [_rows(r) for r in reqs]
    per_row = [name for name, t in reqs[0].inputs.items()
               if all(t.tensor_shape.dim and r.inputs[name].tensor_shape.dim[0].size == n
                      for r, n in zip(reqs, rows, strict=True))]
    joined = {name: np.concatenate([from_tensor_proto(r.inputs[name]) for r in reqs])
              for name in per_row}
    out = []
    for b in plan_batches(sum(rows), batch_size):
        req = predict_pb2.PredictRequest()
        req.CopyFrom(reqs[0])
        for name, values in joined.items():
            req.inputs[name].Clear()  # fill_tensor_proto writes into an empty tensor
            fill_tensor_proto(req.inputs[name], values[b])
        out.append(req)
    return out


def _select_predict_model(req: predict_pb2.PredictRequest, model: ModelRef) -> None:
    spec = req.model_spec
    spec.name = model.name
    spec.ClearField("version_choice")
    if model.version is not None:
        spec.version.CopyFrom(wrappers_pb2.Int64Value(value=model.version))
    elif model.label:
        spec.version_label = model.label


def _select_rank_model(req: ranking_pb2.RankRequest, model: ModelRef) -> None:
    req.model.Clear()
    req.model.name = model.name
    if model.version is not None:
        req.model.version = model.version
    elif model.label:
        req.model.label = model.label


# -- synthesis ---------------------------------------------------------------------------------


def demo_catalog_dir() -> Path:
    """The demo catalog, built first if this machine has none yet.

    The build runs in a child process: training the demo model imports TensorFlow, which this
    process never loads.
    """
    out = subprocess.run([sys.executable, "-m", "rankserve.demo.build"], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SourceError(f"building the demo catalog failed:\n{out.stderr[-2000:]}")
    for line in out.stdout.splitlines():
        if line.startswith("catalog_dir: "):
            return Path(line.split(": ", 1)[1])
    raise SourceError("the demo build did not report its catalog directory")


def synthesize(kind: Kind, catalog_dir: Path, *, requests: int = 8, batch_size: int = 25,
               model: ModelRef | None = None, candidates: int = 1000, page_size: int = 20,
               seed: int = 1) -> Payloads:
    """Traffic made like the ranker makes it: seeded random demo requests; for ``predict``,
    their candidates' features split into batches exactly as the pipeline would."""
    from rankserve.demo.candidates import CandidateMaker
    from rankserve.demo.queries import random_requests

    maker = CandidateMaker.open(catalog_dir)
    cat = maker.catalog
    demo = random_requests(requests, seed=seed, num_items=cat.manifest.num_items,
                           num_users=len(cat.user_ids))
    model = model or ModelRef("ranker")
    desc = f"synthetic: {requests} demo requests (seed {seed}) from {catalog_dir}"
    if kind == "rank":
        items = []
        for d in demo:
            req = ranking_pb2.RankRequest(
                query=d.query, user=ranking_pb2.User(id=d.user_id, known=d.user_known),
                context=ranking_pb2.Context(device=d.device, locale=d.locale,
                                            viewed_item_ids=list(d.viewed_item_ids)),
                page_size=page_size, candidate_limit=candidates)
            _select_rank_model(req, model)
            items.append(req.SerializeToString())
        return Payloads("rank", items, desc)
    items, sizes = [], []
    for d in demo:
        got = maker(d, candidates)
        feats = maker.features(got.rows)
        for b in plan_batches(feats.shape[0], batch_size):
            # The demo model's two inputs (rankserve.demo.features lays them out).
            inputs = {"context": got.context.reshape(1, -1), "candidates": feats[b]}
            items.append(build_request(model, inputs).SerializeToString())
            sizes.append(b.stop - b.start)
    return Payloads("predict", items, desc + f", batches of {batch_size}", sizes)

"""Builds the demo once per machine: catalog, titles, hidden truth, the ranking model and a TF
Serving model config, cached under ``$RANKSERVE_HOME`` (default ``~/.cache/rankserve``).

The cache directory is named by a hash of the build spec, so changing a size, the seed or
BUILD_VERSION builds afresh beside the old one. A build happens in a temporary directory that
is renamed into place when complete, under a file lock, so concurrent callers wait for one
build and nobody ever sees half of one.

    python -m rankserve.demo.build [--home DIR] [--num-items N]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format

from rankserve.tfserving.v1 import model_server_config_pb2

# Bump when the generator, relevance or model changes what a build produces.
BUILD_VERSION = 2
SEED = 7
TRAIN_SEED = 11
NUM_USERS = 10_000
TRAIN_REQUESTS = 8_000
TRAIN_EPOCHS = 15
MODEL_NAME = "ranker"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoPaths:
    root: Path
    catalog_dir: Path
    # TF Serving base path of the model: versions live in numbered directories under it.
    model_base_path: Path
    model_name: str
    # TF Serving ModelServerConfig (text format) serving model_base_path.
    model_config_file: Path
    # Hidden relevance parameters; never given to the ranker.
    truth_dir: Path
    # Item titles, one a line in catalog row order (for display only).
    titles_file: Path

    @classmethod
    def at(cls, root: Path) -> DemoPaths:
        return cls(
            root=root,
            catalog_dir=root / "catalog",
            model_base_path=root / "models" / MODEL_NAME,
            model_name=MODEL_NAME,
            model_config_file=root / "models.config",
            truth_dir=root / "truth",
            titles_file=root / "titles.txt",
        )

    def version_dir(self, version: int) -> Path:
        return self.model_base_path / str(version)

    def titles(self) -> list[str]:
        return self.titles_file.read_text().splitlines()


def default_home() -> Path:
    env = os.environ.get("RANKSERVE_HOME")
    return Path(env) if env else Path.home() / ".cache" / "rankserve"


def build_spec(num_items: int) -> dict[str, int | str]:
    return {
        "build_version": BUILD_VERSION,
        "sources": source_fingerprint(),
        "num_items": num_items,
        "num_users": NUM_USERS,
        "seed": SEED,
        "train_seed": TRAIN_SEED,
        "train_requests": TRAIN_REQUESTS,
        "train_epochs": TRAIN_EPOCHS,
    }


# Sources whose change alters what a build produces: the generator, relevance, training, and
# the ranker code that makes the model's inputs. Their hash is part of the cache key, so a
# stale model can never be served beside a newer context layout or relevance.
_SOURCES = (
    "demo/vocab.py", "demo/ids.py", "demo/synth.py", "demo/relevance.py", "demo/queries.py",
    "demo/candidates.py", "demo/trainset.py", "demo/model.py", "demo/features.py",
    "ranker/catalog.py", "ranker/context.py", "ranker/retrieval.py",
)  # fmt: skip


def source_fingerprint() -> str:
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for rel in _SOURCES:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _key(spec: dict[str, int | str]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def model_config_text(base_path: Path, name: str = MODEL_NAME) -> str:
    """TF Serving's model config of the demo model: its two newest versions served, version 1
    labelled "stable" (the rollout walkthrough moves the label)."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(
        name=name, base_path=str(base_path.resolve()), model_platform="tensorflow")
    model.model_version_policy.latest.num_versions = 2
    model.version_labels["stable"] = 1
    return text_format.MessageToString(config)


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def _step(progress: Progress, label: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    progress(f"{label} ... {time.perf_counter() - t0:.1f} s")


def ensure_demo(
    home: Path | None = None, *, num_items: int = 50_000, progress: Progress = print
) -> DemoPaths:
    """The demo build for this spec, built now if it is not cached yet."""
    home = (Path(home) if home is not None else default_home()).expanduser().absolute()
    spec = build_spec(num_items)
    key = _key(spec)
    final = home / f"demo-{key}"
    paths = DemoPaths.at(final)
    if (final / "build.json").is_file():
        progress(f"demo: cached build {final}")
        return paths
    with _locked(home / f".demo-{key}.lock"):
        if (final / "build.json").is_file():  # another process built it while we waited
            progress(f"demo: built meanwhile by another process {final}")
            return paths
        # Under the lock any leftover of this key is from a build that died.
        for stale in home.glob(f".demo-{key}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        tmp = home / f".demo-{key}.tmp-{os.getpid()}"
        try:
            _build(tmp, final, spec, progress)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return paths


def _build(tmp: Path, final: Path, spec: dict[str, Any], progress: Progress) -> None:
    # Imported here: generating data needs only numpy; TensorFlow loads for training only.
    from rankserve.demo.candidates import CandidateMaker
    from rankserve.demo.synth import generate
    from rankserve.demo.trainset import make_training_lists
    from rankserve.demo.vocab import VOCAB

    t_all = time.perf_counter()
    paths = DemoPaths.at(tmp)
    n = spec["num_items"]
    with _step(
        progress,
        f"catalog: {n:,} items x 300 features, {spec['num_users']:,} users,"
        f" {len(VOCAB)} query words",
    ):
        world = generate(n, spec["num_users"], spec["seed"])
        world.write(paths.catalog_dir, paths.truth_dir, paths.titles_file)
        del world
    maker = CandidateMaker.open(paths.catalog_dir)
    from rankserve.demo.features import context_dim, write_spec

    write_spec(paths.catalog_dir, maker.catalog.manifest)
    from rankserve.demo.relevance import Truth

    truth = Truth.open(paths.truth_dir)
    with _step(
        progress, f"training lists: {spec['train_requests']:,} requests, retrieval top-1000"
    ):
        lists = make_training_lists(
            maker, truth, num_requests=spec["train_requests"], seed=spec["train_seed"]
        )
        np.savez(tmp / "train_lists.npz", contexts=lists.contexts, rows=lists.rows,
                 labels=lists.labels)  # fmt: skip
    with _step(progress, "tensorflow: import"):
        from rankserve.demo import model as tfmodel
    with _step(progress, f"model: {spec['train_epochs']} epochs, listwise softmax loss"):
        trained = tfmodel.train(
            maker.catalog.item_features, lists, seed=spec["train_seed"],
            epochs=spec["train_epochs"], progress=progress,
        )  # fmt: skip
    with _step(progress, f"export: {MODEL_NAME}/1 (SavedModel, signature serving_default)"):
        tfmodel.export(trained, paths.version_dir(1))
        signature = tfmodel.signature_of(paths.version_dir(1))
        _check_signature(signature, context_dim(maker.catalog.manifest))
    (tmp / "models.config").write_text(model_config_text(final / "models" / MODEL_NAME))
    from rankserve.demo.evaluate import evaluate

    t0 = time.perf_counter()
    result = evaluate(maker, truth, tfmodel.load_scorer(paths.version_dir(1)))
    progress(f"check: {result} ... {time.perf_counter() - t0:.1f} s")
    total = time.perf_counter() - t_all
    info = {
        "spec": spec,
        "build_seconds": round(total, 1),
        "ndcg": asdict(result),
        "signature": signature,
    }
    (tmp / "build.json").write_text(json.dumps(info, indent=1))
    progress(f"demo built in {total:.1f} s: {final}")


def _check_signature(sig: dict, context_dim: int) -> None:
    from rankserve.demo.model import INPUT_CANDIDATES, INPUT_CONTEXT, OUTPUT_SCORES

    want_in = {
        INPUT_CONTEXT: ("float32", [1, context_dim]),
        INPUT_CANDIDATES: ("float32", [None, 300]),
    }
    want_out = {OUTPUT_SCORES: ("float32", [None])}
    got_in = {k: (d, list(s)) for k, (d, s) in sig["inputs"].items()}
    got_out = {k: (d, list(s)) for k, (d, s) in sig["outputs"].items()}
    if got_in != want_in or got_out != want_out:
        raise RuntimeError(f"exported signature {sig} is not {want_in} -> {want_out}")


def export_version(
    paths: DemoPaths, version: int, *, seed: int, epochs: int = TRAIN_EPOCHS,
    progress: Progress = print,
) -> Path:  # fmt: skip
    """Trains another version of the model (another seed) on the build's training lists and
    exports it beside version 1, as a new model version would roll out."""
    from rankserve.demo import model as tfmodel
    from rankserve.demo.trainset import TrainingLists
    from rankserve.ranker.catalog import Catalog

    z = np.load(paths.root / "train_lists.npz")
    lists = TrainingLists(z["contexts"], z["rows"], z["labels"])
    catalog = Catalog.open(paths.catalog_dir)
    target = paths.version_dir(version)
    tmp = paths.model_base_path / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with _step(progress, f"model version {version}: {epochs} epochs, seed {seed}"):
        trained = tfmodel.train(
            catalog.item_features, lists, seed=seed, epochs=epochs, progress=progress
        )
        tfmodel.export(trained, tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(tmp, target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rankserve.demo.build", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="cache root (default: $RANKSERVE_HOME or ~/.cache/rankserve)",
    )
    parser.add_argument("--num-items", type=int, default=50_000, help="catalog size")
    args = parser.parse_args(argv)  # fmt: skip
    paths = ensure_demo(args.home, num_items=args.num_items)
    for name, value in asdict(paths).items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()

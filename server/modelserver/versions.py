"""Versions: what is on disk, what the policy wants, what is loaded, and who is using it.

Every poll re-reads the model config (labels move by editing the file), lists the numeric
version directories under each base path, loads and warms what the policy wants before it takes
traffic, and only then retires what the policy no longer wants. A retired version leaves the
routing table at once but is unloaded only when its last in-flight request has finished, so no
request ever fails because of a version change. A version that fails to load stays out of
traffic, keeps whatever served before, and shows its error in GetModelStatus until its
``saved_model.pb`` changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .batching import Batcher
from .config import ModelConfig
from .errors import LoadFailed, ModelServerError, NotFound, Unavailable
from .runtime import DEFAULT_SIGNATURE, LoadedModel, Runtime, warm_up_inputs
from .warmup import WARMUP_PATH, read_warmup

log = logging.getLogger(__name__)

# TF Serving's ModelVersionStatus.State names.
LOADING, AVAILABLE, UNLOADING, END = "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class VersionStatus:
    """What GetModelStatus reports for one version; ``error_status`` None means OK."""

    version: int
    state: str
    error_status: str | None = None
    error_message: str = ""


@dataclass
class BatchOptions:
    max_rows: int = 1000
    max_wait_s: float = 0.001
    # A batch runs once no call arrived for this long (None: it always waits max_wait_s).
    idle_gap_s: float | None = None
    # Hears of every model call: (model name, version) -> (rows, seconds). Metrics use it.
    on_model_call: Callable[[str, int], Callable[[int, float], None]] | None = None
    # Rows that may wait for a model call per (version, signature); more is refused at once.
    # 0: no bound.
    max_queued_rows: int = 0
    # Hears of every refused call: (model name, version) -> callback. Metrics use it.
    on_shed: Callable[[str, int], Callable[[], None]] | None = None
    # Merged calls of a model faster than this on average run on the event loop (Batcher).
    inline_below_s: float = 0.0


class LoadedVersion:
    """A loaded, warmed version with its batchers and a count of requests using it."""

    def __init__(self, name: str, version: int, model: LoadedModel, make_batcher) -> None:
        self.name = name
        self.version = version
        self.model = model
        self._make_batcher = make_batcher
        self._batchers: dict[str, Batcher] = {}
        self.refs = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def batcher(self, signature: str) -> Batcher:
        if signature not in self._batchers:
            self._batchers[signature] = self._make_batcher(self, signature)
        return self._batchers[signature]

    def __enter__(self) -> LoadedVersion:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> LoadedVersion:
        self.refs += 1
        self._idle.clear()
        return self

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            self._idle.set()

    async def drain(self) -> None:
        """Wait for in-flight requests, then for the batchers' queued and running calls."""
        await self._idle.wait()
        for batcher in self._batchers.values():
            await batcher.close()


@dataclass
class _Model:
    config: ModelConfig
    executor: ThreadPoolExecutor
    runtime: Runtime
    available: dict[int, LoadedVersion] = field(default_factory=dict)
    status: dict[int, VersionStatus] = field(default_factory=dict)
    failed: dict[int, tuple] = field(default_factory=dict)  # version -> stamp that failed


def scan_versions(base_path: Path) -> dict[int, tuple]:
    """Numeric version directories holding a saved_model.pb, with a stamp of that file.

    Other names are ignored, and so is a version directory whose saved_model.pb is not there
    yet (it is still being copied in).
    """
    found: dict[int, tuple] = {}
    try:
        entries = list(Path(base_path).iterdir())
    except OSError:
        return found
    for entry in entries:
        if not (entry.name.isascii() and entry.name.isdigit()):
            continue
        try:
            stat = (entry / "saved_model.pb").stat()
        except OSError:
            continue
        found[int(entry.name)] = (stat.st_mtime_ns, stat.st_size)
    return found


class VersionManager:
    """Owns every model's versions; ``lease`` routes a request to one of them."""

    def __init__(
        self,
        runtime: Runtime,
        read_config: Callable[[], list[ModelConfig]],
        batch: BatchOptions | None = None,
        poll_interval_s: float = 2.0,
        on_change: Callable[[], Awaitable[None]] | None = None,
        runtime_for: Callable[[str], Runtime] | None = None,
    ) -> None:
        # runtime_for(model name) picks a model's runtime (ONNX Runtime for the models named
        # for it); every other model runs on ``runtime``.
        self._runtime_for = runtime_for or (lambda _name: runtime)
        self._read_config = read_config
        self._batch = batch or BatchOptions()
        self._poll_interval = poll_interval_s
        self._on_change = on_change
        self._models: dict[str, _Model] = {}
        self._configs: list[ModelConfig] = read_config()
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="rankserve-loader")
        self._retiring: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._missing_paths: set[Path] = set()
        self._config_error: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start polling in the background; the first poll begins at once."""
        self._task = asyncio.create_task(self._poll_forever(), name="rankserve-versions")

    async def stop(self) -> None:
        """Stop polling, then retire every version (waiting for in-flight requests)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for model in self._models.values():
            for version in list(model.available):
                self._retire(model, version)
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for model in self._models.values():
            model.executor.shutdown(wait=True)
        self._loader.shutdown(wait=True)

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("version poll failed; retrying in %.1f s", self._poll_interval)
            await asyncio.sleep(self._poll_interval)

    async def poll_once(self) -> None:
        """One pass: re-read config, scan base paths, load wanted versions, retire the rest."""
        try:
            self._configs = self._read_config()
            self._config_error = None
        except ModelServerError as exc:
            if exc.message != self._config_error:  # once per distinct problem, not every poll
                log.error("keeping the previous model config: %s", exc.message)
            self._config_error = exc.message
        configured = {c.name: c for c in self._configs}
        for name in [n for n in self._models if n not in configured]:
            log.info("model '%s' left the config; unloading its versions", name)
            self._retire_model(self._models.pop(name))
        for config in self._configs:
            model = self._models.get(config.name)
            if model is None:
                executor = ThreadPoolExecutor(1, thread_name_prefix=f"rankserve-{config.name}")
                model = self._models[config.name] = _Model(
                    config, executor, self._runtime_for(config.name))
            model.config = config
            await self._sync(model)
        if self._on_change is not None:
            await self._on_change()

    async def _sync(self, model: _Model) -> None:
        config = model.config
        on_disk = await asyncio.to_thread(scan_versions, config.base_path)
        if not on_disk and config.base_path not in self._missing_paths:
            log.warning("no version of '%s' under %s yet", config.name, config.base_path)
            self._missing_paths.add(config.base_path)
        elif on_disk:
            self._missing_paths.discard(config.base_path)
        wanted = config.policy.select(on_disk)
        for version in sorted(wanted, reverse=True):
            if version in model.available or model.failed.get(version) == on_disk[version]:
                continue
            await self._load(model, version, on_disk[version])
        replaced = any(v in model.available for v in wanted) or not wanted
        if replaced:
            for version in [v for v in model.available if v not in wanted]:
                self._retire(model, version)

    async def _load(self, model: _Model, version: int, stamp: tuple) -> None:
        name = model.config.name
        path = model.config.base_path / str(version)
        model.status[version] = VersionStatus(version, LOADING)
        log.info("loading %s version %d from %s", name, version, path)
        loop = asyncio.get_running_loop()
        try:
            loaded = await loop.run_in_executor(self._loader, self._load_and_warm,
                                                model.runtime, path)
        except Exception as exc:
            status = exc.status if isinstance(exc, LoadFailed) else "UNKNOWN"
            message = exc.message if isinstance(exc, LoadFailed) else f"{type(exc).__name__}: {exc}"
            log.error("%s version %d failed to load: %s", name, version, message)
            model.status[version] = VersionStatus(version, END, status, message)
            model.failed[version] = stamp
            return
        model.failed.pop(version, None)
        model.available[version] = LoadedVersion(name, version, loaded, self._new_batcher(model))
        model.status[version] = VersionStatus(version, AVAILABLE)
        log.info("%s version %d is available", name, version)

    def _load_and_warm(self, runtime: Runtime, path: Path) -> LoadedModel:
        loaded = runtime.load(path)
        for signature in loaded.signatures.values():
            try:
                runtime.predict(loaded, signature.name, warm_up_inputs(signature))
            except Exception as exc:
                # Serialized tf.Examples cannot be made up: an empty one fails a model whose
                # features have no defaults, which TF Serving (no made-up warm-up) would load.
                # Such a model warms from its warm-up file.
                text_only = all(spec.dtype.kind == "O" for spec in signature.inputs.values())
                if not text_only and (signature.name == DEFAULT_SIGNATURE
                                      or len(loaded.signatures) == 1):
                    runtime.unload(loaded)
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                    raise LoadFailed(
                        f"warm-up call of signature '{signature.name}' failed: {first}",
                        "FAILED_PRECONDITION",
                    ) from exc
                log.warning("warm-up of signature '%s' failed: %s", signature.name, exc)
        self._replay_warmup(runtime, loaded, path)
        if not runtime.ready(loaded):
            raise LoadFailed(f"{path} loaded but the runtime does not report it ready")
        return loaded

    def _replay_warmup(self, runtime: Runtime, loaded: LoadedModel, path: Path) -> None:
        """Replays the version's warm-up file (TF Serving's assets.extra mechanism)."""
        try:
            calls = read_warmup(path)
            for i, call in enumerate(calls):
                if call.signature not in loaded.signatures:
                    raise LoadFailed(f"warm-up record {i} names signature '{call.signature}',"
                                     f" which the model lacks", "INVALID_ARGUMENT")
                try:
                    runtime.predict(loaded, call.signature, call.inputs)
                except Exception as exc:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                    raise LoadFailed(f"warm-up record {i} failed: {first}",
                                     "FAILED_PRECONDITION") from exc
        except LoadFailed:
            runtime.unload(loaded)
            raise
        if calls:
            log.info("replayed %d warm-up requests from %s", len(calls), path / WARMUP_PATH)

    def _new_batcher(self, model: _Model):
        def make(version: LoadedVersion, signature: str) -> Batcher:
            return Batcher(
                version.model.signatures[signature],
                partial(model.runtime.predict, version.model, signature),
                model.executor,
                max_rows=self._batch.max_rows,
                max_wait_s=self._batch.max_wait_s,
                idle_gap_s=self._batch.idle_gap_s,
                on_model_call=(self._batch.on_model_call(version.name, version.version)
                               if self._batch.on_model_call else None),
                max_queued_rows=self._batch.max_queued_rows,
                on_shed=(self._batch.on_shed(version.name, version.version)
                         if self._batch.on_shed else None),
                inline_below_s=self._batch.inline_below_s,
            )

        return make

    def _retire(self, model: _Model, version: int) -> asyncio.Task:
        """Take a version out of routing now; unload it once its requests are done."""
        entry = model.available.pop(version)
        model.status[version] = VersionStatus(version, UNLOADING)
        task = asyncio.create_task(self._unload(model, entry))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return task

    def _retire_model(self, model: _Model) -> None:
        tasks = [self._retire(model, version) for version in list(model.available)]

        async def release() -> None:
            await asyncio.gather(*tasks, return_exceptions=True)
            model.executor.shutdown(wait=False)

        task = asyncio.create_task(release())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _unload(self, model: _Model, entry: LoadedVersion) -> None:
        await entry.drain()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._loader, model.runtime.unload, entry.model)
        model.status[entry.version] = VersionStatus(entry.version, END)
        log.info("%s version %d unloaded", entry.name, entry.version)

    # ---- queries ---------------------------------------------------------------------------

    def all_available(self) -> bool:
        """Whether every configured model has at least one version taking traffic."""
        return bool(self._configs) and all(
            self._models.get(c.name) is not None and self._models[c.name].available
            for c in self._configs
        )

    def version_states(self) -> list[tuple[str, int, str]]:
        """(model, version, state) of every version known, for metrics."""
        out = []
        for name, model in list(self._models.items()):
            for version, status in list(model.status.items()):
                out.append((name, version, status.state))
        return out

    def loaded_sizes(self) -> list[tuple[str, int, int | None, int | None]]:
        """(model, version, parameters, bytes) of every version taking traffic, for metrics."""
        out = []
        for name, model in list(self._models.items()):
            for version, entry in list(model.available.items()):
                out.append((name, version, entry.model.parameters, entry.model.size_bytes))
        return out

    def lease(self, name: str, version: int | None = None, label: str | None = None):
        """The version a request names (latest when none), acquired: use in ``with``."""
        return self._resolve(name, version, label).acquire()

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            served = ", ".join(f"'{n}'" for n in sorted(self._models)) or "none yet"
            raise NotFound(f"model '{name}' is not served here; served models: {served}")
        return model

    def _resolve(self, name: str, version: int | None, label: str | None) -> LoadedVersion:
        model = self._model(name)
        if not model.available:
            raise Unavailable(f"model '{name}' has no version loaded yet; retry shortly")
        if label:
            labels = model.config.labels
            if label not in labels:
                known = ", ".join(f"'{k}' -> {v}" for k, v in sorted(labels.items())) or "none"
                raise NotFound(
                    f"model '{name}' has no version label '{label}'; labels: {known}; "
                    f"available versions: {_versions(model.available)}"
                )
            version = labels[label]
            if version not in model.available:
                raise NotFound(
                    f"label '{label}' of model '{name}' points at version {version}, which is "
                    f"not loaded; available versions: {_versions(model.available)}"
                )
        if version is None:
            return model.available[max(model.available)]
        if version not in model.available:
            raise NotFound(
                f"model '{name}' has no version {version} loaded; available versions: "
                f"{_versions(model.available)}"
            )
        return model.available[version]

    def statuses(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """Status of every known version (newest first), or of the one asked for."""
        model = self._model(name)
        if label:
            if label not in model.config.labels:
                raise NotFound(f"model '{name}' has no version label '{label}'")
            version = model.config.labels[label]
        if version is None:
            if not model.status:
                raise NotFound(f"model '{name}' has no version on disk yet")
            return [model.status[v] for v in sorted(model.status, reverse=True)]
        if version not in model.status:
            known = ", ".join(str(v) for v in sorted(model.status)) or "none"
            raise NotFound(f"model '{name}' has no version {version}; known versions: {known}")
        return [model.status[version]]


def _versions(available: Mapping[int, object]) -> str:
    """The available versions, for a message (only built when one is raised)."""
    return ", ".join(str(v) for v in sorted(available))

"""The demo ranking model: train on graded retrieval candidates, export a TF Serving SavedModel.

The only demo module that imports TensorFlow. The model scores candidates [B, F] of one request
given its context [1, C], broadcasting the context inside (docs/architecture.md, decision 3):

    score = context W candidate^T            (bilinear: query/user/viewed/device/locale x item)
          + MLP(norm(candidate), context P)  (non-linear item quality and interactions)

Raw catalog features go in; the per-column mean and std are constants of the graph, so no
caller has to normalise. It learns with a listwise softmax loss whose target puts each
candidate's share at its gain 2^rel - 1, which is what NDCG rewards.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# TensorFlow's start-up lines (CUDA probing on a machine without a GPU, oneDNN notices) go to
# the process's stderr from C++ before its log level applies, and absl logs notices at export;
# none says anything about the demo. RANKSERVE_TF_LOGS=1 (`rankserve demo --tf-logs`) shows
# them; a failed import shows what it printed.
_QUIET = os.environ.get("RANKSERVE_TF_LOGS", "") != "1"


def _import_tensorflow_quietly() -> None:
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            # Device discovery too: on a machine without a GPU it logs a CUDA error.
            importlib.import_module("tensorflow").config.list_physical_devices("GPU")
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


if _QUIET:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _import_tensorflow_quietly()
    logging.getLogger("absl").setLevel(logging.WARNING)
import tensorflow as tf  # noqa: E402 - imported above, quietly unless asked

from rankserve.demo.trainset import TrainingLists  # noqa: E402

SIGNATURE = "serving_default"
INPUT_CONTEXT = "context"
INPUT_CANDIDATES = "candidates"
OUTPUT_SCORES = "scores"


class RankingModel(tf.Module):
    def __init__(self, contexts: np.ndarray, features: np.ndarray, seed: int) -> None:
        """``contexts`` [R, C] and ``features`` [N, F] fix the normalisation constants."""
        super().__init__(name="ranker")
        c, f = int(contexts.shape[1]), int(features.shape[1])
        self.context_dim, self.num_features = c, f
        self.ctx_mean, self.ctx_scale = _standardiser(contexts)
        self.mean, self.scale = _standardiser(features)
        init = tf.keras.initializers.GlorotUniform(seed=seed)
        h1, h2 = 64, 32
        self.bilinear = tf.Variable(tf.zeros([c, f]), name="bilinear")
        self.w1 = tf.Variable(init([f, h1]), name="w1")
        self.wc = tf.Variable(init([c, h1]), name="wc")
        self.b1 = tf.Variable(tf.zeros([h1]), name="b1")
        self.w2 = tf.Variable(init([h1, h2]), name="w2")
        self.b2 = tf.Variable(tf.zeros([h2]), name="b2")
        self.w3 = tf.Variable(init([h2, 1]), name="w3")

    def score(self, context: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
        """context [..., 1, C] and candidates [..., B, F] -> scores [..., B]."""
        x = (candidates - self.mean) * self.scale
        context = (context - self.ctx_mean) * self.ctx_scale
        # tensordot flattens leading axes into one matmul; einsum with "..." trains far slower.
        cw = tf.tensordot(context, self.bilinear, 1)  # [..., 1, F]
        bil = tf.reduce_sum(cw * x, axis=-1)
        h = tf.nn.relu(tf.tensordot(x, self.w1, 1) + tf.tensordot(context, self.wc, 1) + self.b1)
        h = tf.nn.relu(tf.tensordot(h, self.w2, 1) + self.b2)
        return bil + tf.squeeze(tf.tensordot(h, self.w3, 1), -1)

    def serving_function(self) -> tf.types.experimental.ConcreteFunction:
        @tf.function(
            input_signature=[
                tf.TensorSpec([1, self.context_dim], tf.float32, name=INPUT_CONTEXT),
                tf.TensorSpec([None, self.num_features], tf.float32, name=INPUT_CANDIDATES),
            ]
        )
        def serve(context: tf.Tensor, candidates: tf.Tensor) -> dict[str, tf.Tensor]:
            return {OUTPUT_SCORES: tf.identity(self.score(context, candidates), OUTPUT_SCORES)}

        return serve.get_concrete_function()


def _standardiser(a: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
    """Column mean and 1/std as graph constants; a column constant in training (say a device
    slot never seen) gets scale 0, so an unseen value cannot blow up a score."""
    mean = a.mean(axis=0, dtype=np.float64)
    std = a.std(axis=0, dtype=np.float64)
    scale = np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 0.0)
    return tf.constant(mean, tf.float32), tf.constant(scale, tf.float32)


def _listwise_loss(scores: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    gains = tf.pow(2.0, labels) - 1.0
    total = tf.reduce_sum(gains, axis=-1, keepdims=True)
    target = gains / tf.maximum(total, 1e-9)
    per_list = -tf.reduce_sum(target * tf.nn.log_softmax(scores, axis=-1), axis=-1)
    has_any = tf.cast(tf.squeeze(total, -1) > 0, tf.float32)
    return tf.reduce_sum(per_list * has_any) / tf.maximum(tf.reduce_sum(has_any), 1.0)


def train(
    item_features: np.ndarray,
    lists: TrainingLists,
    *,
    seed: int = 0,
    epochs: int = 15,
    batch_lists: int = 32,
    learning_rate: float = 3e-4,
    progress: Callable[[str], None] = print,
) -> RankingModel:
    tf.random.set_seed(seed)
    feats = np.asarray(item_features, dtype=np.float32)
    model = RankingModel(lists.contexts, feats, seed=seed)
    table = tf.constant(feats)
    opt = tf.keras.optimizers.Adam(learning_rate)
    variables = model.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(ctx: tf.Tensor, rows: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        cands = tf.gather(table, rows)  # [R, L, F]
        with tf.GradientTape() as tape:
            s = model.score(ctx[:, None, :], cands)
            loss = _listwise_loss(s, labels)
            # Keeps the 300 x C bilinear weights from fitting noise columns.
            loss += 1e-4 * tf.reduce_sum(tf.square(model.bilinear))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    rng = np.random.default_rng(seed)
    n = lists.contexts.shape[0]
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        losses = []
        for i in range(0, n - batch_lists + 1, batch_lists):
            b = order[i : i + batch_lists]
            losses.append(float(step(lists.contexts[b], lists.rows[b], lists.labels[b])))
        progress(
            f"  epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}"
            f" ({time.perf_counter() - t0:.1f} s)"
        )
    return model


def export(model: RankingModel, version_dir: Path) -> None:
    """Writes a SavedModel with signature serving_default {context, candidates} -> {scores}."""
    tf.saved_model.save(
        model, os.fspath(version_dir), signatures={SIGNATURE: model.serving_function()}
    )


def export_half_inputs(version_dir: Path, out_dir: Path) -> None:
    """The SavedModel at ``version_dir`` again at ``out_dir``, its serving signature taking
    float16 inputs (cast to float32 inside): what a model declares to be sent features at half
    the bytes. Scores are those of float16-rounded features."""
    module = tf.Module()
    module.loaded = tf.saved_model.load(os.fspath(version_dir))
    _, kwargs = module.loaded.signatures[SIGNATURE].structured_input_signature
    names = list(kwargs)
    specs = [tf.TensorSpec(kwargs[k].shape, tf.float16, name=k) for k in names]

    @tf.function(input_signature=specs)
    def serving(*args):
        fn = module.loaded.signatures[SIGNATURE]
        return fn(**{k: tf.cast(v, tf.float32) for k, v in zip(names, args, strict=True)})

    module.serving = serving
    tf.saved_model.save(module, os.fspath(out_dir), signatures={SIGNATURE: serving})


def load_scorer(version_dir: Path) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The exported signature as a numpy function (context [1, C], candidates [B, F]) -> [B]."""
    fn = tf.saved_model.load(os.fspath(version_dir)).signatures[SIGNATURE]
    # float32, or float16 for a model from export_half_inputs.
    dtypes = {k: v.dtype for k, v in fn.structured_input_signature[1].items()}

    def scorer(context: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        out = fn(
            context=tf.constant(context, dtypes[INPUT_CONTEXT]),
            candidates=tf.constant(candidates, dtypes[INPUT_CANDIDATES]),
        )
        return out[OUTPUT_SCORES].numpy()

    return scorer


def signature_of(version_dir: Path) -> dict[str, dict[str, tuple[str, list[int | None]]]]:
    """Input and output names, dtypes and shapes of the exported serving signature."""
    fn = tf.saved_model.load(os.fspath(version_dir)).signatures[SIGNATURE]
    _, kwargs = fn.structured_input_signature
    inputs = {k: (v.dtype.name, v.shape.as_list()) for k, v in kwargs.items()}
    outputs = {k: (v.dtype.name, v.shape.as_list()) for k, v in fn.structured_outputs.items()}
    return {"inputs": inputs, "outputs": outputs}

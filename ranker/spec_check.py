"""Does a feature spec fit a model's signature? Every reason it does not, before any request.

The ranker sends what the spec says; a model that expects something else would answer
INVALID_ARGUMENT on every batch. ``check_spec`` compares the two and returns one line per
problem, each naming the input and what to change; an empty list means the spec fits.

The shape rules follow from how batches are sent (decision 3): a ``per: candidate`` input goes
as ``[B, *shape]`` with B from 5 to 25, so the model's leading dim must be unknown; a
``per: request`` input with ``broadcast: model`` goes once per batch as ``[1, *shape]`` (leading
dim 1 or unknown); with ``broadcast: client`` it is tiled to ``[B, *shape]`` (unknown). The
output must hold one score per row: ``[?]`` or ``[?, 1]``. With ``encoding: tf_example`` the
model takes one DT_STRING vector of serialized tf.Examples and parses the features itself, so
only that input is checked. An unknown rank on the model's side cannot be checked and passes.
"""

from __future__ import annotations

from collections.abc import Mapping

from rankserve.ranker.model_signature import ModelSignature, Shape, TensorSig, format_shape
from rankserve.ranker.spec import FeatureSpec, InputSpec


def check_spec(spec: FeatureSpec, signature: ModelSignature) -> list[str]:
    """Problems of feeding ``signature`` as ``spec`` says; [] when the spec fits."""
    problems: list[str] = []
    if spec.signature != signature.name:
        problems.append(f"signature: the spec names '{spec.signature}', the model's signature"
                        f" is '{signature.name}': set signature: {signature.name}")
    if spec.encoding == "tf_example":
        problems += _check_examples(spec, signature)
    else:
        problems += _check_tensors(spec, signature)
    problems += _check_output(spec, signature)
    return problems


def _listing(tensors: Mapping[str, TensorSig]) -> str:
    """``a (float32 [?, 3]), b (int64 [?])``: what the model has, for a message."""
    if not tensors:
        return "none"
    return ", ".join(f"{k} ({v.dtype} {format_shape(v.shape)})" for k, v in tensors.items())


def _check_tensors(spec: FeatureSpec, signature: ModelSignature) -> list[str]:
    problems: list[str] = []
    for inp in spec.inputs:
        model = signature.inputs.get(inp.name)
        if model is None:
            problems.append(
                f"input '{inp.name}': the model has no input '{inp.name}'; its inputs are"
                f" {_listing(signature.inputs)}: rename the spec's input"
                " to one of them or remove it")
            continue
        problems += _check_input(inp, model, signature.unsupported.get(inp.name))
    named = {inp.name for inp in spec.inputs}
    for name, model in signature.inputs.items():
        if name not in named:
            hint = ""
            if len(signature.inputs) == 1 and model == TensorSig("string", (None,)):
                hint = (f", or set encoding: tf_example and example_input: {name} if the model"
                        " parses tf.Examples")
            problems.append(
                f"input '{name}': the model takes '{name}' ({model.dtype}"
                f" {format_shape(model.shape)}) and the spec does not fill it: add an input"
                f" named '{name}' to the spec{hint}")
    return problems


def _check_input(inp: InputSpec, model: TensorSig, unsupported: str | None) -> list[str]:
    where = f"input '{inp.name}'"
    if unsupported is not None:
        return [f"{where}: the model takes a {unsupported} tensor; the ranker sends dense"
                " tensors only: export the model with a dense input"]
    problems: list[str] = []
    if model.dtype != inp.dtype:
        fix = (f"set dtype: {model.dtype}" if not model.dtype.startswith("DT_")
               else f"export the model with one of {_SPEC_DTYPES}")
        problems.append(f"{where}: the spec sends {inp.dtype}, the model takes {model.dtype}:"
                        f" {fix}")
    shape_problem = _check_shape(inp, model.shape)
    if shape_problem:
        problems.append(f"{where}: {shape_problem}")
    return problems


_SPEC_DTYPES = "float16, float32, float64, int32, int64, bool, string"


def _check_shape(inp: InputSpec, shape: Shape) -> str:
    if shape is None:
        return ""
    sends = "[" + ", ".join(["1" if _broadcast_by_model(inp) else "B",
                             *(str(d) for d in inp.shape)]) + "]"
    mode = _mode(inp)
    if len(shape) == 0:
        return (f"the model takes a scalar, the spec sends {sends} ({mode}): export the model"
                " with a leading batch dim")
    lead, rest = shape[0], shape[1:]
    problems = []
    if rest != inp.shape:
        if None in rest:
            fix = "export the model with fixed row dims"
        else:
            fix = f"set shape: [{', '.join(str(d) for d in rest)}]"
        problems.append(f"the model takes rows of {format_shape(rest)}, the spec sends rows of"
                        f" {format_shape(inp.shape)}: {fix}")
    if _broadcast_by_model(inp):
        if lead not in (None, 1):
            problems.append(f"its leading dim is {lead}; {mode} sends {sends} once per batch:"
                            " export the model with leading dim 1 or None")
    elif lead is not None:
        fix = "export the model with leading dim None"
        if inp.per == "request" and lead == 1:
            fix += ", or set broadcast: model since the model takes one row"
        problems.append(f"its leading dim is fixed at {lead}; {mode} sends {sends}, B rows"
                        f" per batch: {fix}")
    if not problems:
        return ""
    return f"model shape {format_shape(shape)}: " + "; ".join(problems)


def _broadcast_by_model(inp: InputSpec) -> bool:
    return inp.per == "request" and inp.broadcast == "model"


def _mode(inp: InputSpec) -> str:
    if inp.per == "candidate":
        return "per: candidate"
    return f"per: request with broadcast: {inp.broadcast}"


def _check_examples(spec: FeatureSpec, signature: ModelSignature) -> list[str]:
    name = spec.example_input
    where = f"input '{name}' (encoding: tf_example)"
    problems: list[str] = []
    model = signature.inputs.get(name)
    if model is None:
        problems.append(
            f"{where}: the model has no input '{name}'; its inputs are"
            f" {_listing(signature.inputs)}: set example_input to the"
            " model's string input, or use encoding: tensors")
    else:
        if name in signature.unsupported:
            problems.append(f"{where}: the model takes a {signature.unsupported[name]} tensor;"
                            " it must take a dense DT_STRING vector [?]")
        elif model.dtype != "string" or (model.shape is not None and model.shape != (None,)):
            problems.append(
                f"{where}: the model takes {model.dtype} {format_shape(model.shape)}; serialized"
                " tf.Examples go as DT_STRING [?] (one per row): export the model with a"
                " string vector input that it parses with tf.io.parse_example")
    for other, sig in signature.inputs.items():
        if other != name:
            problems.append(
                f"input '{other}': the model takes '{other}' ({sig.dtype}"
                f" {format_shape(sig.shape)}) besides '{name}'; with encoding: tf_example the"
                f" ranker sends '{name}' alone: export the model with '{name}' as its only"
                " input, or use encoding: tensors")
    return problems


def _check_output(spec: FeatureSpec, signature: ModelSignature) -> list[str]:
    name = spec.output
    model = signature.outputs.get(name)
    if model is None:
        return [f"output '{name}': the model has no output '{name}'; its outputs are"
                f" {_listing(signature.outputs)}: set output to the one"
                " holding one score per candidate"]
    if name in signature.unsupported:
        return [f"output '{name}': the model returns a {signature.unsupported[name]} tensor;"
                " scores must be a dense [?] or [?, 1] tensor"]
    shape = model.shape
    if shape is None or (len(shape) in (1, 2) and shape[0] is None
                         and (len(shape) == 1 or shape[1] == 1)):
        return []
    return [f"output '{name}': the model returns {format_shape(shape)}; the ranker reads one"
            f" score per candidate, [?] or [?, 1]: set output to such an output or export the"
            " model with one"]

"""check_spec against hand-built signatures: a fitting spec gives no problem, and each kind of
mismatch gives one line that names the input and what to change."""

from __future__ import annotations

from typing import Any

import pytest

from rankserve.ranker.model_signature import ModelSignature, TensorSig
from rankserve.ranker.spec import FeatureSpec, parse_spec
from rankserve.ranker.spec_check import check_spec

CANDIDATES = {"name": "candidates", "per": "candidate", "dtype": "float32", "shape": [3],
              "features": ["item.features"]}
CONTEXT = {"name": "context", "per": "request", "dtype": "float32", "shape": [2],
           "features": ["user.embedding"]}


def spec(*inputs: dict[str, Any], **top: Any) -> FeatureSpec:
    return parse_spec({"inputs": [dict(i) for i in inputs], **top}, "spec.yaml")


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def signature(inputs: dict[str, TensorSig] | None = None,
              outputs: dict[str, TensorSig] | None = None, name: str = "serving_default",
              unsupported: dict[str, str] | None = None) -> ModelSignature:
    if inputs is None:
        inputs = {"candidates": TensorSig("float32", (None, 3)),
                  "context": TensorSig("float32", (1, 2))}
    if outputs is None:
        outputs = {"scores": TensorSig("float32", (None,))}
    return ModelSignature(name, inputs, outputs, unsupported or {})


def one(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


def test_a_fitting_spec_has_no_problem() -> None:
    assert check_spec(spec(CANDIDATES, CONTEXT), signature()) == []


@pytest.mark.parametrize("lead", [1, None])
def test_broadcast_by_the_model_takes_leading_dim_one_or_unknown(lead: int | None) -> None:
    sig = signature({"candidates": TensorSig("float32", (None, 3)),
                     "context": TensorSig("float32", (lead, 2))})
    assert check_spec(spec(CANDIDATES, CONTEXT), sig) == []


def test_broadcast_by_the_client_takes_an_unknown_leading_dim() -> None:
    sig = signature({"candidates": TensorSig("float32", (None, 3)),
                     "context": TensorSig("float32", (None, 2))})
    assert check_spec(spec(CANDIDATES, with_(CONTEXT, broadcast="client")), sig) == []


@pytest.mark.parametrize("out_shape", [(None,), (None, 1), None])
def test_scores_as_a_vector_a_column_or_of_unknown_rank(out_shape: tuple[Any, ...] | None
                                                         ) -> None:
    sig = signature(outputs={"scores": TensorSig("float32", out_shape)})
    assert check_spec(spec(CANDIDATES, CONTEXT), sig) == []


def test_scalar_rows_and_an_unknown_rank_fit() -> None:
    ids = {"name": "ids", "per": "candidate", "dtype": "int64", "shape": [],
           "features": ["item.id"]}
    sig = signature({"ids": TensorSig("int64", (None,)), "context": TensorSig("float32", None)})
    assert check_spec(spec(ids, CONTEXT), sig) == []


def test_an_input_the_model_lacks_lists_the_models_inputs() -> None:
    problem = one(check_spec(spec(CANDIDATES, CONTEXT, with_(CONTEXT, name="ctx")),
                             signature()))
    assert problem.startswith("input 'ctx': the model has no input 'ctx'")
    assert "candidates (float32 [?, 3]), context (float32 [1, 2])" in problem
    assert "rename" in problem


def test_a_model_input_the_spec_does_not_fill() -> None:
    problem = one(check_spec(spec(CANDIDATES), signature()))
    assert problem == ("input 'context': the model takes 'context' (float32 [1, 2]) and the spec"
                       " does not fill it: add an input named 'context' to the spec")


def test_dtype_mismatch_says_which_dtype_to_set() -> None:
    problem = one(check_spec(spec(with_(CANDIDATES, dtype="float64"), CONTEXT), signature()))
    assert problem == ("input 'candidates': the spec sends float64, the model takes float32:"
                       " set dtype: float32")


def test_a_dtype_no_spec_can_send() -> None:
    sig = signature({"candidates": TensorSig("DT_BFLOAT16", (None, 3)),
                     "context": TensorSig("float32", (1, 2))})
    problem = one(check_spec(spec(CANDIDATES, CONTEXT), sig))
    assert "the model takes DT_BFLOAT16" in problem and "export the model with one of" in problem


def test_a_float16_model_input_takes_a_float16_spec_input() -> None:
    sig = signature({"candidates": TensorSig("float16", (None, 3)),
                     "context": TensorSig("float32", (1, 2))})
    assert check_spec(spec(with_(CANDIDATES, dtype="float16"), CONTEXT), sig) == []
    assert one(check_spec(spec(CANDIDATES, CONTEXT), sig)).endswith("set dtype: float16")


def test_row_shape_mismatch_says_which_shape_to_set() -> None:
    problem = one(check_spec(spec(with_(CANDIDATES, shape=[4]), CONTEXT), signature()))
    assert problem.startswith("input 'candidates': model shape [?, 3]:")
    assert "the spec sends rows of [4]: set shape: [3]" in problem


def test_per_candidate_needs_an_unknown_leading_dim() -> None:
    sig = signature({"candidates": TensorSig("float32", (25, 3)),
                     "context": TensorSig("float32", (1, 2))})
    problem = one(check_spec(spec(CANDIDATES, CONTEXT), sig))
    assert "input 'candidates'" in problem and "leading dim is fixed at 25" in problem
    assert "per: candidate sends [B, 3]" in problem
    assert "export the model with leading dim None" in problem


def test_broadcast_by_the_model_refuses_another_leading_dim() -> None:
    sig = signature({"candidates": TensorSig("float32", (None, 3)),
                     "context": TensorSig("float32", (25, 2))})
    problem = one(check_spec(spec(CANDIDATES, CONTEXT), sig))
    assert "input 'context'" in problem and "leading dim is 25" in problem
    assert "sends [1, 2] once per batch" in problem and "leading dim 1 or None" in problem


def test_broadcast_by_the_client_refuses_leading_dim_one() -> None:
    problem = one(check_spec(spec(CANDIDATES, with_(CONTEXT, broadcast="client")), signature()))
    assert "input 'context'" in problem and "leading dim is fixed at 1" in problem
    assert "set broadcast: model" in problem


def test_a_scalar_model_input() -> None:
    sig = signature({"candidates": TensorSig("float32", ()),
                     "context": TensorSig("float32", (1, 2))})
    problem = one(check_spec(spec(CANDIDATES, CONTEXT), sig))
    assert "the model takes a scalar" in problem


def test_unknown_row_dims_cannot_be_filled_exactly() -> None:
    sig = signature({"candidates": TensorSig("float32", (None, None)),
                     "context": TensorSig("float32", (1, 2))})
    problem = one(check_spec(spec(CANDIDATES, CONTEXT), sig))
    assert "export the model with fixed row dims" in problem


def test_a_sparse_model_input() -> None:
    sig = signature(unsupported={"candidates": "sparse"})
    problem = one(check_spec(spec(CANDIDATES, CONTEXT), sig))
    assert problem.startswith("input 'candidates': the model takes a sparse tensor")


def test_an_output_the_model_lacks_lists_the_outputs() -> None:
    problem = one(check_spec(spec(CANDIDATES, CONTEXT, output="score"), signature()))
    assert problem.startswith("output 'score': the model has no output 'score'")
    assert "its outputs are scores (float32 [?])" in problem


@pytest.mark.parametrize("out_shape", [(None, 2), (25,), (), (None, 1, 1)])
def test_an_output_that_is_not_one_score_per_row(out_shape: tuple[Any, ...]) -> None:
    sig = signature(outputs={"scores": TensorSig("float32", out_shape)})
    problem = one(check_spec(spec(CANDIDATES, CONTEXT), sig))
    assert problem.startswith("output 'scores': the model returns [")
    assert "[?] or [?, 1]" in problem


def test_a_composite_output() -> None:
    sig = signature(unsupported={"scores": "composite (RaggedTensorSpec)"})
    problem = one(check_spec(spec(CANDIDATES, CONTEXT), sig))
    assert "composite (RaggedTensorSpec)" in problem


def test_another_signature_name() -> None:
    problem = one(check_spec(spec(CANDIDATES, CONTEXT), signature(name="rank")))
    assert problem.startswith("signature: the spec names 'serving_default'")


def test_several_problems_are_all_reported() -> None:
    problems = check_spec(spec(with_(CANDIDATES, dtype="int64", shape=[4]), output="s"),
                          signature())
    assert len(problems) == 4, problems  # dtype, shape, context unfilled, output


# -- encoding: tf_example ---------------------------------------------------------------------

EXAMPLES = {"examples": TensorSig("string", (None,))}


def example_spec(**top: Any) -> FeatureSpec:
    return spec(CANDIDATES, CONTEXT, encoding="tf_example", **top)


def test_tf_example_fits_a_string_vector() -> None:
    assert check_spec(example_spec(), signature(EXAMPLES)) == []


def test_tf_example_input_missing() -> None:
    problems = check_spec(example_spec(example_input="serialized"), signature(EXAMPLES))
    assert problems[0].startswith("input 'serialized' (encoding: tf_example): the model has no"
                                  " input 'serialized'; its inputs are examples (string [?])")
    assert problems[1].startswith("input 'examples': the model takes 'examples'")


@pytest.mark.parametrize("tensor", [TensorSig("float32", (None,)),
                                    TensorSig("string", (None, 1)),
                                    TensorSig("string", (25,))])
def test_tf_example_input_must_be_a_string_vector(tensor: TensorSig) -> None:
    problem = one(check_spec(example_spec(), signature({"examples": tensor})))
    assert "serialized tf.Examples go as DT_STRING [?]" in problem


def test_tf_example_with_more_model_inputs() -> None:
    sig = signature({**EXAMPLES, "context": TensorSig("float32", (1, 2))})
    problem = one(check_spec(example_spec(), sig))
    assert problem.startswith("input 'context': the model takes 'context' (float32 [1, 2])"
                              " besides 'examples'")
    assert "use encoding: tensors" in problem

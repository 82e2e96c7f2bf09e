"""``rankserve spec check``: does a feature spec fit a model's signature?

Run before a model version takes traffic: a spec that does not fit would make every batch fail
with INVALID_ARGUMENT. The signature comes from the SavedModel on disk or from a running model
server (GetModelMetadata), never through TensorFlow.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

DESCRIPTION = """\
Check a model's feature spec against the model's signature, read from a SavedModel directory
(--model-dir: a version directory holding saved_model.pb, or a base path whose highest numbered
version is read) or asked of a running TF-Serving-compatible model server with GetModelMetadata
(--target and --model). Prints the signature's inputs and outputs, then "spec fits" (exit 0) or
one line per problem, each naming the input and what to change (exit 1). A spec, model or
server that cannot be read exits 2 with the reason.
"""

EPILOG = """\
examples:
  rankserve spec check --spec spec.yaml --model-dir /models/ranker/3
  rankserve spec check --spec spec.yaml --target 127.0.0.1:8500 --model ranker@stable
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "spec", help="check a feature spec against a model's signature",
        description="Feature specs: what a model is fed. See 'rankserve spec check --help'.")
    sub = parser.add_subparsers(dest="spec_command", metavar="COMMAND", required=True)
    check = sub.add_parser(
        "check", help="check a feature spec against a model's signature",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--spec", required=True, metavar="FILE",
                       help="The feature spec (YAML or JSON); its 'signature' names the"
                            " signature checked.")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", metavar="DIR",
                        help="SavedModel version directory, or a base path of numbered versions"
                             " (the highest is read).")
    source.add_argument("--target", metavar="HOST:PORT",
                        help="Model server (or Envoy in front of them) to ask with"
                             " GetModelMetadata; needs --model.")
    check.add_argument("--model", metavar="NAME[@VERSION|@LABEL]",
                       help="With --target: the served model, its latest version unless a"
                            " version number or label follows '@'.")
    check.add_argument("--timeout", type=float, default=10.0, metavar="S",
                       help="Deadline of the GetModelMetadata call in seconds (default"
                            " %(default)s).")
    check.set_defaults(func=handle)
    return parser


def handle(args: argparse.Namespace) -> int:
    from rankserve.loadtest.sources import SourceError, parse_model
    from rankserve.ranker.errors import RankerError
    from rankserve.ranker.model_signature import (
        fetch_signature,
        format_shape,
        from_saved_model,
    )
    from rankserve.ranker.spec import SpecError, load_spec
    from rankserve.ranker.spec_check import check_spec

    def fail(message: str) -> int:
        print(f"rankserve spec check: {message}", file=sys.stderr)
        return 2

    if args.target and not args.model:
        return fail("--target needs --model NAME[@VERSION|@LABEL]")
    if args.model and not args.target:
        return fail("--model goes with --target; --model-dir reads the directory given")
    if args.timeout <= 0:
        return fail(f"--timeout must be positive, got {args.timeout:g}")
    try:
        spec = load_spec(args.spec)
        if args.model_dir:
            where = args.model_dir
            signature = from_saved_model(args.model_dir, spec.signature)
        else:
            model = parse_model(args.model)
            where = f"{model} at {args.target}"
            signature = asyncio.run(
                fetch_signature(args.target, model, spec.signature, args.timeout))
    except (SpecError, SourceError) as exc:
        return fail(str(exc))
    except RankerError as exc:
        return fail(exc.message)
    print(f"model {where}, signature '{signature.name}'")
    for side, tensors in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        print(f"{side}:")
        width = max((len(name) for name in tensors), default=0)
        for name, tensor in tensors.items():
            kind = signature.unsupported.get(name)
            extra = f"  ({kind})" if kind else ""
            print(f"  {name:<{width}}  {tensor.dtype} {format_shape(tensor.shape)}{extra}")
    problems = check_spec(spec, signature)
    if not problems:
        print("spec fits")
        return 0
    print(f"spec does not fit ({len(problems)} problem{'s' if len(problems) > 1 else ''}):")
    for problem in problems:
        print(problem)
    return 1

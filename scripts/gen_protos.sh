#!/usr/bin/env bash
# Regenerates the Python code for every .proto under protos/, beside its source.
# Directories mirror proto packages, so `-I protos` gives correct imports with no editing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
find protos -name '*_pb2*.py' -delete -o -name '*_pb2*.pyi' -delete
mapfile -t files < <(find protos -name '*.proto' | sort)
"$PY" -m grpc_tools.protoc -I protos --python_out=protos --pyi_out=protos --grpc_python_out=protos "${files[@]}"
# Every directory holding generated code is a regular package.
find protos/rankserve -type d -exec sh -c 'test -f "$1/__init__.py" || : > "$1/__init__.py"' _ {} \;

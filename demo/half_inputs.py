"""The demo model as a model that declares float16 inputs, with the spec that fills them.

What a team does to send its float features at half the bytes without a codec: export the
model with float16 inputs (cast inside) and say `dtype: float16` in the spec. The benchmark and
the end-to-end test run the stack on this variant beside the float32 demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from rankserve.demo.build import MODEL_NAME, DemoPaths, model_config_text
from rankserve.ranker.model_signature import saved_model_file


@dataclass(frozen=True)
class HalfInputVariant:
    model_base_path: Path  # <base>/1: the float16-input SavedModel
    model_config_file: Path  # serves it as the demo's model name
    spec_file: Path  # the catalog's spec with every input's dtype float16


def write_half_input_variant(paths: DemoPaths, out: Path) -> HalfInputVariant:
    """Writes the variant of the demo's newest model version under ``out``."""
    from rankserve.demo.model import export_half_inputs  # TensorFlow loads here

    base = out / MODEL_NAME
    export_half_inputs(saved_model_file(paths.model_base_path).parent, base / "1")
    config = out / "models.config"
    config.write_text(model_config_text(base))
    spec = yaml.safe_load((paths.catalog_dir / "spec.yaml").read_text())
    for entry in spec["inputs"]:
        entry["dtype"] = "float16"
    spec_file = out / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    return HalfInputVariant(base, config, spec_file)

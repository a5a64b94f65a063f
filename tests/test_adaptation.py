"""Partial freezing, LoRA adapters, separate and layer-wise learning rates, SGD.

Weights are checked bit for bit after a few optimizer steps on tiny random models of the
architectures in test_architectures.py; two whole runs go through the command line.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from test_architectures import ARCHITECTURES, HIDDEN, LABELS, ModelDirs, toy_split
from test_end_to_end import cli
from torch import nn

from bertprobe.adaptation import adapt_encoder, lora_targets
from bertprobe.alignment import encode_split
from bertprobe.batching import WindowCollator, WindowDataset
from bertprobe.config import RunConfig
from bertprobe.encoder import describe, load_config, load_encoder, load_tokenizer
from bertprobe.errors import ConfigError
from bertprobe.heads import build_head
from bertprobe.layer_spec import resolve_strategy
from bertprobe.model import ProbeModel, row_loss
from bertprobe.optim import build_optimizer

#: By hand, per architecture: the module list of its layers, the parameters below the layers
#: (frozen with them), and those after the last layer (they train in partial mode).
LAYER_LISTS = {
    "bert": "encoder.layer", "distilbert": "transformer.layer", "electra": "encoder.layer",
    "roberta": "encoder.layer", "deberta-v2": "encoder.layer", "xlm-roberta": "encoder.layer", "t5": "block",
    "bart": "layers",
}  # fmt: skip
EMBEDDINGS = {
    "electra": ("embeddings.", "embeddings_project."),
    "deberta-v2": ("embeddings.", "encoder.rel_embeddings.", "encoder.LayerNorm."),
    "t5": ("embed_tokens.",),
    "bart": ("embed_tokens.", "embed_positions.", "layernorm_embedding."),
}
AFTER_LAYERS = {
    "bert": ("pooler.",), "roberta": ("pooler.",), "xlm-roberta": ("pooler.",), "t5": ("final_layer_norm.",)
}  # fmt: skip


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> ModelDirs:
    return ModelDirs(tmp_path_factory)


def toy_batch(folder: str) -> dict[str, torch.Tensor]:
    tokenizer = load_tokenizer(folder)
    windows = encode_split(toy_split(), tokenizer, LABELS, max_length=64)
    return WindowCollator(tokenizer.pad_token_id)([WindowDataset(windows)[i] for i in range(len(windows))])


def adapted_probe(folder: str, config: RunConfig):
    """The encoder adapted as ``run`` adapts it, under a linear head on its last layer."""
    config = config.resolved()
    info = describe(folder, load_config(folder))
    encoder = load_encoder(folder)
    adaptation = adapt_encoder(encoder, config, info)
    head = build_head("linear", HIDDEN, len(LABELS), 8, 1, 0.1)
    model = ProbeModel(encoder, resolve_strategy("last", info.num_layers), head, frozen_encoder=False)
    return model, adaptation, info


def train_steps(folder: str, config: RunConfig, steps: int = 3):
    """A few optimizer steps on two toy sentences; the weights before them and the model after."""
    model, adaptation, _ = adapted_probe(folder, config)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer, scheduler = build_optimizer(model, config.resolved(), steps, adaptation.parts)
    batch = toy_batch(folder)
    model.train()
    for _ in range(steps):
        loss = row_loss(model(batch), batch["labels"], batch["word_mask"], regression=False)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, adaptation, before


def _starts(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name.startswith(prefix) for prefix in prefixes)


# ----------------------------------------------------------------------------- partial


PARTIAL_CASES = [(name, 1) for name in LAYER_LISTS] + [("bert", 0), ("distilbert", 4)]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "k"), PARTIAL_CASES)
def test_partial_freezes_the_embeddings_and_lowest_layers_and_trains_the_rest(model_dirs, name, k):
    folder = str(model_dirs[name])
    config = RunConfig(mode="partial", freeze_layers=k, model=folder, lr=1e-3)
    model, adaptation, before = train_steps(folder, config)
    layer_list = LAYER_LISTS[name]
    embeddings, after = EMBEDDINGS.get(name, ("embeddings.",)), AFTER_LAYERS.get(name, ())
    assert adaptation.parts.layers == layer_list and adaptation.summary["freeze_layers"] == k

    frozen_layers = tuple(f"{layer_list}.{i}." for i in range(k))
    num_layers = ARCHITECTURES[name].num_layers
    trained_layers = tuple(f"{layer_list}.{i}." for i in range(k, num_layers))
    frozen = trained = 0
    for full_name, parameter in model.encoder.named_parameters():
        changed = not torch.equal(parameter, before[f"encoder.{full_name}"])
        if _starts(full_name, embeddings + frozen_layers):
            assert not parameter.requires_grad and not changed, full_name
            frozen += parameter.numel()
        elif _starts(full_name, trained_layers):
            assert parameter.requires_grad and changed, full_name
            trained += 1
        else:  # nothing else but the modules after the last layer: T5's final layer norm feeds the
            # last hidden state and trains; a pooler feeds nothing a head reads and is frozen, and named
            assert _starts(full_name, after), full_name
            read = name == "t5"
            assert parameter.requires_grad == read and changed == read, full_name
            assert (full_name in adaptation.summary["not_trained"]["names"]) != read, full_name
    assert adaptation.summary["frozen_parameters"] == frozen
    assert trained > 0 or k == num_layers
    for head_name, parameter in model.head.named_parameters():
        assert not torch.equal(parameter, before[f"head.{head_name}"]), head_name
    if name == "t5":  # its final layer norm follows the last layer and feeds the head
        assert not torch.equal(model.encoder.final_layer_norm.weight, before["encoder.final_layer_norm.weight"])


def test_freeze_layers_out_of_range_names_the_option_and_the_valid_range(model_dirs):
    folder = str(model_dirs["distilbert"])
    with pytest.raises(ConfigError, match=r"--freeze-layers 5 is out of range: .* 4 Transformer layers.* 0\.\.4"):
        adapted_probe(folder, RunConfig(mode="partial", freeze_layers=5, model=folder))
    with pytest.raises(ConfigError, match=r"--freeze-layers -1 is out of range.*0\.\.L"):
        RunConfig(mode="partial", freeze_layers=-1).resolved()


def test_albert_shares_its_layer_weights_so_partial_freezing_and_layer_decay_are_refused(model_dirs):
    folder = str(model_dirs["albert"])
    with pytest.raises(ConfigError, match=r"--mode partial needs each of the 4 Transformer layers.*shares one set"):
        adapted_probe(folder, RunConfig(mode="partial", freeze_layers=1, model=folder))
    with pytest.raises(ConfigError, match=r"--layer-lr-decay needs each of the 4 Transformer layers"):
        adapted_probe(folder, RunConfig(mode="finetune", layer_lr_decay=0.9, model=folder))


# ----------------------------------------------------------------------------- LoRA


def expected_adapter_count(name: str, config, rank: int) -> int:
    """r * (in + out) for the query and value projection of every layer, from the config."""
    if name == "t5":  # projections d_model -> heads * d_kv
        return config.num_layers * 2 * rank * (config.d_model + config.num_heads * config.d_kv)
    if name == "bart":
        return config.encoder_layers * 2 * rank * (2 * config.d_model)
    if name == "distilbert":
        return config.n_layers * 2 * rank * (2 * config.dim)
    if name == "albert":  # one group of one layer, shared by every depth: one pair of adapters
        return config.num_hidden_groups * config.inner_group_num * 2 * rank * (2 * config.hidden_size)
    return config.num_hidden_layers * 2 * rank * (2 * config.hidden_size)


#: The default LoRA targets of each architecture, written out (not read from the code under test).
LORA_DEFAULT_TARGETS = {
    "bert": ("query", "value"),
    "distilbert": ("q_lin", "v_lin"),
    "deberta-v2": ("query_proj", "value_proj"),
    "t5": ("q", "v"),
    "bart": ("q_proj", "v_proj"),
    "albert": ("query", "value"),
}


@pytest.mark.parametrize("name", ["bert", "distilbert", "deberta-v2", "t5", "bart", "albert"])
def test_lora_trains_only_adapters_and_head_and_counts_r_times_in_plus_out(model_dirs, name):
    folder = str(model_dirs[name])
    rank = 4
    config = RunConfig(mode="lora", lora_rank=rank, lora_alpha=12.0, lora_dropout=0.2, model=folder, lr=1e-2)
    model, adaptation, before = train_steps(folder, config)
    # the attention query and value projections, as each architecture names them
    assert sorted(adaptation.summary["target_modules"]) == sorted(LORA_DEFAULT_TARGETS[name])
    adapted = {
        module_name: module
        for module_name, module in model.encoder.named_modules()
        if isinstance(getattr(module, "lora_A", None), nn.Module)
    }
    assert adapted and {module_name.rsplit(".", 1)[-1] for module_name in adapted} == set(LORA_DEFAULT_TARGETS[name])
    for module in adapted.values():
        assert module.scaling["default"] == pytest.approx(12.0 / rank)  # alpha / r
        assert module.lora_dropout["default"].p == pytest.approx(0.2)
    expected = expected_adapter_count(name, load_config(folder), rank)
    head = HIDDEN * len(LABELS) + len(LABELS)
    assert adaptation.adapter_trainable == expected == adaptation.summary["adapter_trainable"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected + head

    pretrained = dict(load_encoder(folder).named_parameters())
    base = adapters = 0
    for full_name, parameter in model.encoder.named_parameters():
        if ".lora_" in full_name:
            assert parameter.requires_grad and not torch.equal(parameter, before[f"encoder.{full_name}"]), full_name
            adapters += parameter.numel()
        else:
            original = pretrained[full_name.replace(".base_layer", "")]
            assert not parameter.requires_grad and torch.equal(parameter, original), full_name
            base += 1
    assert base == len(pretrained) and adapters == expected
    for head_name, parameter in model.head.named_parameters():
        assert not torch.equal(parameter, before[f"head.{head_name}"]), head_name


def test_lora_default_targets_are_found_by_name_and_unknown_targets_are_refused(model_dirs):
    distilbert = load_encoder(str(model_dirs["distilbert"]))
    assert lora_targets(distilbert, None) == ["q_lin", "v_lin"]
    assert lora_targets(distilbert, ["q_lin", "out_lin"]) == ["q_lin", "out_lin"]
    with pytest.raises(ConfigError, match=r"no module named 'query'.*Linear modules are: .*k_lin.*q_lin.*v_lin"):
        lora_targets(distilbert, ["query"])
    with pytest.raises(ConfigError, match=r"'attention' names .*Attention.* not Linear"):
        lora_targets(distilbert, ["attention"])

    class NoAttentionNames(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mixer = torch.nn.Linear(4, 4)

    with pytest.raises(ConfigError, match=r"no attention query/value projections .*--lora-target-modules.*mixer"):
        lora_targets(NoAttentionNames(), None)

    folder = str(model_dirs["bert"])
    with pytest.raises(ConfigError, match=r"--lora-target-modules: .* no module named 'nonexistent'"):
        adapted_probe(folder, RunConfig(mode="lora", lora_target_modules="query,nonexistent", model=folder))


def test_lora_without_peft_says_pip_install_peft(model_dirs, monkeypatch):
    from bertprobe.adaptation import add_lora

    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` fail
    with pytest.raises(ConfigError, match="pip install peft"):
        RunConfig(mode="lora").resolved()
    with pytest.raises(ConfigError, match="pip install peft"):
        add_lora(load_encoder(str(model_dirs["bert"])), RunConfig(mode="lora"))


# ----------------------------------------------------------------------------- learning rates, optimizers


def group_of(optimizer: torch.optim.Optimizer, parameter: torch.nn.Parameter) -> dict:
    [group] = [g for g in optimizer.param_groups if any(p is parameter for p in g["params"])]
    return group


def test_layer_wise_decay_gives_each_layer_its_rate_and_the_head_its_own(tiny_model_dir):
    folder = str(tiny_model_dir)  # BERT, 4 layers
    encoder_lr, head_lr, decay, layers = 1e-3, 1e-2, 0.5, 4
    config = RunConfig(mode="finetune", model=folder, lr=5e-5, encoder_lr=encoder_lr, head_lr=head_lr,
                       layer_lr_decay=decay)  # fmt: skip
    model, adaptation, _ = adapted_probe(folder, config)
    optimizer, _ = build_optimizer(model, config.resolved(), 10, adaptation.parts)
    assert isinstance(optimizer, torch.optim.AdamW)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)
    assert not model.encoder.pooler.dense.weight.requires_grad  # no head reads it (see adapt_encoder)
    for name, parameter in trainable:
        group = group_of(optimizer, parameter)
        if name.startswith("head."):
            expected = head_lr
        elif name.startswith("encoder.embeddings."):
            expected = encoder_lr * decay**layers
        elif name.startswith("encoder.encoder.layer."):
            i = int(name.split(".")[3]) + 1  # 1 = lowest layer
            expected = encoder_lr * decay ** (layers - i)
        else:
            raise AssertionError(f"{name} trains but has no depth")
        assert group["initial_lr"] == expected, name
        no_decay = name.endswith("bias") or "LayerNorm" in name
        assert group["weight_decay"] == (0.0 if no_decay else config.weight_decay), name
    assert group_of(optimizer, model.encoder.encoder.layer[0].output.dense.weight)["initial_lr"] == 1e-3 / 8


def test_encoder_and_head_rates_default_to_lr_and_separate_when_given(tiny_model_dir):
    folder = str(tiny_model_dir)
    for encoder_lr, head_lr in ((None, None), (2e-5, 1e-3)):
        config = RunConfig(mode="finetune", model=folder, lr=5e-5, encoder_lr=encoder_lr, head_lr=head_lr)
        model, adaptation, _ = adapted_probe(folder, config)
        optimizer, _ = build_optimizer(model, config.resolved(), 10, adaptation.parts)
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                assert name.startswith("encoder.pooler."), name
                continue
            expected = (head_lr if name.startswith("head.") else encoder_lr) or 5e-5
            assert group_of(optimizer, parameter)["initial_lr"] == expected, name


def test_partial_mode_leaves_frozen_layers_out_of_the_optimizer(tiny_model_dir):
    folder = str(tiny_model_dir)
    config = RunConfig(mode="partial", freeze_layers=2, model=folder, lr=1e-3, layer_lr_decay=0.5)
    model, adaptation, _ = adapted_probe(folder, config)
    optimizer, _ = build_optimizer(model, config.resolved(), 10, adaptation.parts)
    names = {g["name"].split(" (")[0] for g in optimizer.param_groups}
    assert names == {"layer 3", "layer 4", "head"}  # BERT's pooler, after the layers, feeds no head
    assert group_of(optimizer, model.encoder.encoder.layer[2].output.dense.weight)["initial_lr"] == 1e-3 * 0.5


def test_sgd_with_momentum_and_adamw_kernels(tiny_model_dir):
    folder = str(tiny_model_dir)
    sgd = RunConfig(mode="finetune", model=folder, optimizer="sgd", momentum=0.8, lr=0.1)
    model, adaptation, _ = adapted_probe(folder, sgd)
    optimizer, _ = build_optimizer(model, sgd.resolved(), 10, adaptation.parts)
    assert type(optimizer) is torch.optim.SGD
    assert all(g["momentum"] == 0.8 and g["initial_lr"] == 0.1 for g in optimizer.param_groups)

    adamw = RunConfig(mode="finetune", model=folder).resolved()
    on_cpu, _ = build_optimizer(model, adamw, 10, device="cpu")
    assert type(on_cpu) is torch.optim.AdamW and on_cpu.defaults["fused"] is True  # torch >= 2.4 fuses on CPU
    on_other, _ = build_optimizer(model, adamw, 10, device="meta")  # no fused kernel: multi-tensor
    assert on_other.defaults["foreach"] is True and not on_other.defaults["fused"]
    on_cuda, _ = build_optimizer(model, adamw, 10, device="cuda")  # the kernel is checked at the first step
    assert on_cuda.defaults["fused"] is True and not on_cuda.defaults["foreach"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "partial"}, "--mode partial needs --freeze-layers K"),
        ({"mode": "finetune", "freeze_layers": 2}, "--freeze-layers applies to --mode partial only"),
        ({"mode": "finetune", "lora_target_modules": "query"}, "--lora-target-modules applies to --mode lora only"),
        ({"mode": "lora", "lora_target_modules": " , "}, "--lora-target-modules needs at least one module name"),
        ({"mode": "lora", "lora_rank": 0}, "--lora-rank must be at least 1"),
        ({"mode": "lora", "lora_dropout": 1.0}, r"--lora-dropout must be in \[0, 1\)"),
        ({"mode": "feature", "encoder_lr": 1e-4}, "--encoder-lr has no effect in --mode feature"),
        ({"mode": "feature", "layer_lr_decay": 0.9}, "--layer-lr-decay has no effect in --mode feature"),
        ({"layer_lr_decay": 0.0}, r"--layer-lr-decay must be in \(0, 1\]"),
        ({"layer_lr_decay": 1.5}, r"--layer-lr-decay must be in \(0, 1\]"),
        ({"head_lr": -1.0}, "--head-lr must be positive"),
        ({"optimizer": "rmsprop"}, "--optimizer 'rmsprop' is not one of adamw, sgd"),
        ({"optimizer": "sgd", "momentum": 1.0}, r"--momentum must be in \[0, 1\)"),
    ],
)
def test_bad_adaptation_and_optimizer_options_are_refused_before_loading(options, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**options).resolved()


def test_run_names_carry_the_new_modes_and_old_names_stay():
    assert RunConfig().run_name() == "conll2003_bert-base-cased_finetune_all_sentence_seed42_95c97474"
    partial = RunConfig(mode="partial", freeze_layers=2).run_name()
    assert "_partial-freeze2_" in partial and partial != RunConfig(mode="partial", freeze_layers=3).run_name()
    assert "_lora-r8_" in RunConfig(mode="lora").run_name()
    assert RunConfig(layer_lr_decay=0.9).run_name() != RunConfig().run_name()


# ----------------------------------------------------------------------------- whole runs


def run_cli(tiny_model_dir, toy_data_dir, tmp_path, *options: str) -> dict:
    out = tmp_path / "runs"
    result = cli(
        *options, "--model", str(tiny_model_dir), "--data-dir", str(toy_data_dir), "--output-dir", str(out),
        "--epochs", "1", "--max-train-examples", "16", "--batch-size", "8", "--eval-batch-size", "32",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = out.glob("*.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_partial_run_from_the_command_line_writes_its_mode_and_counts(tiny_model_dir, toy_data_dir, tmp_path):
    from transformers import AutoModel

    record = run_cli(
        tiny_model_dir, toy_data_dir, tmp_path, "--mode", "partial", "--freeze-layers", "2", "--layer-lr-decay", "0.8"
    )
    assert record["config"]["mode"] == "partial" and record["config"]["freeze_layers"] == 2
    assert "_partial-freeze2_" in record["name"]
    encoder = AutoModel.from_pretrained(tiny_model_dir)
    frozen = sum(
        p.numel() for name, p in encoder.named_parameters()
        if name.startswith(("embeddings.", "encoder.layer.0.", "encoder.layer.1."))
    )  # fmt: skip
    head = 32 * len(record["labels"]) + len(record["labels"])
    assert record["adaptation"]["frozen_parameters"] == frozen
    assert record["parameters"]["total"] == sum(p.numel() for p in encoder.parameters()) + head
    pooler = 32 * 32 + 32  # read by no head, so frozen and named in the record
    unread = {"names": ["pooler.dense.weight", "pooler.dense.bias"], "count": pooler}
    assert record["adaptation"]["not_trained"] == unread
    assert record["parameters"]["trainable"] == record["parameters"]["total"] - frozen - pooler
    rates = {group["name"]: group["lr"] for group in record["optimizer"]["groups"]}
    assert rates["layer 4"] == 5e-5 and rates["layer 3"] == 5e-5 * 0.8 and rates["head"] == 5e-5
    assert not any(name.startswith(("embeddings", "layer 1", "layer 2")) for name in rates)


@pytest.mark.slow
def test_lora_run_from_the_command_line_records_the_adapter_count(tiny_model_dir, toy_data_dir, tmp_path):
    record = run_cli(tiny_model_dir, toy_data_dir, tmp_path, "--mode", "lora", "--lora-rank", "4", "--head-lr", "1e-3")
    assert record["config"]["mode"] == "lora" and record["config"]["lr"] == 5e-4
    assert "_lora-r4_" in record["name"]
    adapters = 4 * 2 * 4 * (32 + 32)  # 4 layers x (query, value) x r * (in + out)
    head = 32 * len(record["labels"]) + len(record["labels"])
    assert record["parameters"]["adapter_trainable"] == adapters
    assert record["parameters"]["trainable"] == adapters + head
    assert record["adaptation"]["target_modules"] == ["query", "value"]
    assert record["adaptation"]["adapted_modules"] == 8
    rates = {group["name"].split(" (")[0]: group["lr"] for group in record["optimizer"]["groups"]}
    assert rates == {"encoder": 5e-4, "head": 1e-3}

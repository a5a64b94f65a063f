"""Every supported encoder family, as a tiny random model with a tokenizer trained in the test.

Each architecture gets a 3- or 4-layer model (the named strategies reach back 4 hidden
states), hidden size 32 and 2 heads, and a tokenizer of its own kind trained on the toy
words with the ``tokenizers`` library (WordPiece, byte-level BPE or a SentencePiece-like
Unigram), wrapped in the model's ``transformers`` tokenizer class and saved to a folder, so
everything loads by local path through :mod:`bertprobe.encoder`. Encoder-decoder models
(T5, BART) are probed through their encoder; decoder-only models and tokenizers that cannot
tokenize words passed one by one are refused.

Whole runs: every architecture trains for one epoch in ``feature`` mode (the probe head on
its frozen layers) and in ``finetune`` mode (the encoder itself), each on 16 sentences, so
two optimizer steps per run.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import toy_sentence

from bertprobe.alignment import encode_split
from bertprobe.batching import WindowCollator, WindowDataset
from bertprobe.config import RunConfig
from bertprobe.encoder import describe, load_config, load_encoder, load_tokenizer
from bertprobe.errors import ModelLoadError
from bertprobe.layer_spec import NAMED_STRATEGIES, resolve_strategy
from bertprobe.model import ProbeModel, gather_words
from bertprobe.tasks.conll import Sentence, TaggedSplit

HIDDEN = 32
WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def training_corpus() -> list[str]:
    rng = random.Random(0)
    return [" ".join(word for word, _ in toy_sentence(rng)) for _ in range(200)]


def train_wordpiece() -> dict[str, int]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=WORDPIECE_SPECIALS, show_progress=False)
    tokenizer.train_from_iterator(training_corpus(), trainer)
    return tokenizer.get_vocab()


def train_byte_level_bpe(specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    trainer = trainers.BpeTrainer(
        vocab_size=340, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tokenizer.train_from_iterator(training_corpus(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def train_unigram(specials: list[str], unk_token: str) -> list[tuple[str, float]]:
    """A SentencePiece-like vocabulary: pieces with log-probabilities, "▁" marking word starts."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=100, special_tokens=specials, unk_token=unk_token, show_progress=False)
    tokenizer.train_from_iterator(training_corpus(), trainer)
    return [(piece, score) for piece, score in json.loads(tokenizer.to_str())["model"]["vocab"]]


def wordpiece_tokenizer():
    from transformers import BertTokenizer

    # DistilBERT and ELECTRA checkpoints use BERT's tokenizer class too (that is what
    # AutoTokenizer maps them to), so it returns token_type_ids unless told otherwise.
    return BertTokenizer(vocab=train_wordpiece(), do_lower_case=True)


def roberta_tokenizer():
    from transformers import RobertaTokenizer

    vocab, merges = train_byte_level_bpe(ROBERTA_SPECIALS)
    return RobertaTokenizer(vocab=vocab, merges=merges)  # add_prefix_space left at its default, False


def deberta_tokenizer():
    from transformers import DebertaV2Tokenizer

    return DebertaV2Tokenizer(vocab=train_unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[UNK]"))


def albert_tokenizer():
    from transformers import AlbertTokenizer

    return AlbertTokenizer(vocab=train_unigram(["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], "<unk>"))


def xlm_roberta_tokenizer():
    from transformers import XLMRobertaTokenizer

    return XLMRobertaTokenizer(vocab=train_unigram(ROBERTA_SPECIALS, "<unk>"))


def t5_tokenizer():
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=train_unigram(["<pad>", "</s>", "<unk>"], "<unk>"), extra_ids=0)


def bert_config(vocab: int, pad: int):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=pad,
    )  # fmt: skip


def distilbert_config(vocab: int, pad: int):
    from transformers import DistilBertConfig

    return DistilBertConfig(
        vocab_size=vocab, dim=HIDDEN, n_layers=4, n_heads=2, hidden_dim=64, max_position_embeddings=96,
        pad_token_id=pad,
    )  # fmt: skip


def electra_config(vocab: int, pad: int):
    from transformers import ElectraConfig

    return ElectraConfig(
        vocab_size=vocab, embedding_size=16, hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=pad,
    )  # fmt: skip


def roberta_config(vocab: int, pad: int):
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=66, pad_token_id=pad, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip


def deberta_config(vocab: int, pad: int):
    from transformers import DebertaV2Config

    return DebertaV2Config(  # v3-style: relative attention, no absolute positions in the input
        vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, relative_attention=True, position_buckets=16, pos_att_type=["p2c", "c2p"],
        position_biased_input=False, norm_rel_ebd="layer_norm", share_att_key=True, pad_token_id=pad,
    )  # fmt: skip


def albert_config(vocab: int, pad: int):
    from transformers import AlbertConfig

    return AlbertConfig(
        vocab_size=vocab, embedding_size=16, hidden_size=HIDDEN, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=pad, bos_token_id=2, eos_token_id=3,
    )  # fmt: skip


def xlm_roberta_config(vocab: int, pad: int):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=130, pad_token_id=pad, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip


def t5_config(vocab: int, pad: int):
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab, d_model=HIDDEN, d_kv=16, d_ff=64, num_layers=3, num_decoder_layers=1, num_heads=2,
        pad_token_id=pad, eos_token_id=1, decoder_start_token_id=pad,
    )  # fmt: skip


def bart_config(vocab: int, pad: int):
    from transformers import BartConfig

    return BartConfig(
        vocab_size=vocab, d_model=HIDDEN, encoder_layers=4, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=pad, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
    )  # fmt: skip


@dataclass(frozen=True)
class Architecture:
    name: str
    build_tokenizer: Callable
    build_config: Callable[[int, int], object]
    pieces: str  # "wordpiece" (## continues a word), "bpe" (Ġ starts one) or "unigram" (▁ starts one)
    num_layers: int
    max_positions: int


ARCHITECTURES = {
    arch.name: arch
    for arch in [
        Architecture("bert", wordpiece_tokenizer, bert_config, "wordpiece", 3, 64),
        Architecture("distilbert", wordpiece_tokenizer, distilbert_config, "wordpiece", 4, 96),
        Architecture("electra", wordpiece_tokenizer, electra_config, "wordpiece", 3, 64),
        Architecture("roberta", roberta_tokenizer, roberta_config, "bpe", 3, 64),  # 66 minus the padding offset
        Architecture("deberta-v2", deberta_tokenizer, deberta_config, "unigram", 3, 64),
        Architecture("albert", albert_tokenizer, albert_config, "unigram", 4, 64),
        Architecture("xlm-roberta", xlm_roberta_tokenizer, xlm_roberta_config, "unigram", 3, 128),
        Architecture("t5", t5_tokenizer, t5_config, "unigram", 3, 512),  # encoder only; relative positions
        Architecture("bart", roberta_tokenizer, bart_config, "bpe", 4, 64),  # encoder only
    ]
}
NAMES = list(ARCHITECTURES)


def save_tiny_model(folder: Path, arch: Architecture) -> Path:
    from transformers import AutoModel

    tokenizer = arch.build_tokenizer()
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    AutoModel.from_config(arch.build_config(len(tokenizer), tokenizer.pad_token_id)).save_pretrained(folder)
    return folder


class ModelDirs(dict):
    """Architecture name to saved model folder, each built on first use (so that running one
    parametrised case builds one model)."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self.factory = factory

    def __missing__(self, name: str) -> Path:
        self[name] = save_tiny_model(self.factory.mktemp(name), ARCHITECTURES[name])
        return self[name]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> ModelDirs:
    return ModelDirs(tmp_path_factory)


LABELS = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "B-ORG": 4}
# unseen words ("springvilles", "globexville", "riverlima") split into several pieces
WORDS = ["the", "springvilles", "tom", "smith", "visited", "globexville", "riverlima", "."]
TAGS = ["O", "B-LOC", "B-PER", "I-PER", "O", "B-ORG", "B-LOC", "O"]


def toy_split() -> TaggedSplit:
    sentences = [
        Sentence(WORDS, TAGS, 0, "t.txt:1"),
        Sentence(["mary", "went", "to", "oslo"], ["B-PER", "O", "O", "B-LOC"], 0, "t.txt:11"),
    ]
    return TaggedSplit("t", sentences)


def word_from_pieces(pieces: list[str], kind: str) -> str:
    """Rebuild a word from its pieces, checking that the first marks a word start and no
    other does (so the word was tokenized on its own, as a word in running text)."""
    if kind == "wordpiece":
        assert not pieces[0].startswith("##") and all(p.startswith("##") for p in pieces[1:]), pieces
        return pieces[0] + "".join(p[2:] for p in pieces[1:])
    marker = "Ġ" if kind == "bpe" else "▁"
    assert pieces[0].startswith(marker) and not any(marker in p for p in pieces[1:]), pieces
    return "".join(pieces)[len(marker) :]


@pytest.mark.parametrize("name", NAMES)
def test_describe_reads_depth_width_and_length_from_the_config(model_dirs, name):
    arch = ARCHITECTURES[name]
    info = describe(str(model_dirs[name]), load_config(str(model_dirs[name])))
    assert (info.num_layers, info.hidden_size, info.max_positions) == (arch.num_layers, HIDDEN, arch.max_positions)
    assert info.model_type == name


@pytest.mark.parametrize("name", NAMES)
def test_each_label_sits_on_the_first_piece_of_its_own_word(model_dirs, name):
    arch = ARCHITECTURES[name]
    tokenizer = load_tokenizer(str(model_dirs[name]))
    assert tokenizer.is_fast
    split = toy_split()
    windows = encode_split(split, tokenizer, LABELS, max_length=64)
    assert [w.sentence_index for w in windows] == [0, 1]
    several_pieces = 0
    for window, sentence in zip(windows, split.sentences, strict=True):
        tokens = tokenizer.convert_ids_to_tokens(window.input_ids)
        assert window.labels == [LABELS[tag] for tag in sentence.tags]
        ends = [*window.word_positions[1:], len(tokens) - 1]  # every tokenizer here ends with one special token
        assert window.input_ids[-1] in tokenizer.all_special_ids
        for word, start, end in zip(sentence.words, window.word_positions, ends, strict=True):
            assert window.input_ids[start] not in tokenizer.all_special_ids
            assert word_from_pieces(tokens[start:end], arch.pieces) == word
            several_pieces += end - start > 1
    assert several_pieces >= 2  # words split into several pieces are covered

    # a tight limit splits the long sentence; windows fit (whatever the number of special
    # tokens: T5 adds only "</s>") and every word is labelled exactly once
    short = encode_split(split, tokenizer, LABELS, max_length=16)
    assert len(short) > 2 and all(len(w.input_ids) <= 16 for w in short)
    covered = [(w.sentence_index, w.word_offset + i) for w in short for i in range(len(w.labels))]
    assert covered == [(s, i) for s, sentence in enumerate(split.sentences) for i in range(len(sentence.words))]


@pytest.mark.parametrize("name", NAMES)
def test_every_named_strategy_gives_features_of_the_right_shape(model_dirs, name):
    arch = ARCHITECTURES[name]
    folder = str(model_dirs[name])
    info = describe(folder, load_config(folder))
    tokenizer = load_tokenizer(folder)
    windows = encode_split(toy_split(), tokenizer, LABELS, max_length=info.max_positions)
    batch = WindowCollator(tokenizer.pad_token_id)([WindowDataset(windows)[i] for i in range(len(windows))])
    encoder = load_encoder(folder).eval()
    assert not any(n.startswith("decoder") for n, _ in encoder.named_parameters())  # T5, BART: encoder only

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    with torch.inference_mode():
        hidden_states = encoder(**inputs, output_hidden_states=True, return_dict=True).hidden_states
    assert len(hidden_states) == arch.num_layers + 1
    assert all(h.shape[-1] == HIDDEN for h in hidden_states)  # ALBERT, ELECTRA: projected embeddings too

    for strategy in NAMED_STRATEGIES:
        layers = resolve_strategy(strategy, info.num_layers)
        probe = ProbeModel(encoder, layers, torch.nn.Identity(), frozen_encoder=True)
        with torch.inference_mode():
            features = probe.encode(batch)
            combined = probe.combiner(features)
        assert features.shape == (2, len(WORDS), len(layers.indices), HIDDEN), strategy
        assert combined.shape == (2, len(WORDS), layers.output_dim(HIDDEN)), strategy
        expected = gather_words(hidden_states, layers.indices, batch["word_positions"])
        torch.testing.assert_close(features, expected)
    assert resolve_strategy("allweighted", info.num_layers).indices == tuple(range(1, arch.num_layers + 1))


def test_distilbert_inputs_never_carry_token_type_ids(model_dirs):
    """DistilBERT's forward has no token_type_ids (it would swallow them); its checkpoints
    use BERT's tokenizer class, which makes them."""
    for name, has_types in (("distilbert", False), ("bert", True)):
        tokenizer = load_tokenizer(str(model_dirs[name]))
        windows = encode_split(toy_split(), tokenizer, LABELS, max_length=64)
        batch = WindowCollator(tokenizer.pad_token_id)([WindowDataset(windows)[i] for i in range(len(windows))])
        assert all((w.token_type_ids is not None) == has_types for w in windows), name
        assert ("token_type_ids" in batch) == has_types, name


@pytest.mark.slow
# The runs: every architecture in both modes, one epoch on 16 training sentences.
@pytest.mark.parametrize("mode", ["feature", "finetune"])
@pytest.mark.parametrize("name", NAMES)
def test_a_short_run_completes_and_writes_a_record(model_dirs, toy_data_dir, tmp_path, name, mode):
    from bertprobe.train import run

    config = RunConfig(
        mode=mode, model=str(model_dirs[name]), data_dir=str(toy_data_dir), epochs=1, max_train_examples=16,
        batch_size=8, lstm_hidden=8, layers="allweighted" if mode == "feature" else "last",
        output_dir=str(tmp_path / "runs"),
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    record = run(config)
    [path] = (tmp_path / "runs").glob("*.json")
    on_disk = json.loads(path.read_text())
    assert on_disk["metrics"]["test"] == record["metrics"]["test"]
    assert 0.0 <= record["metrics"]["test"]["f1"] <= 1.0
    assert math.isfinite(record["history"][0]["train_loss"])  # two training steps of 8 sentences
    assert record["parameters"]["trainable"] > 0
    if mode == "feature":
        assert record["encoder_unchanged"] is True
        arch = ARCHITECTURES[name]
        assert record["learned_layer_weights"]["layers"] == list(range(1, arch.num_layers + 1))


# Refusals: models that would give a wrong answer, with a message saying why.
def save_config(folder: Path, config) -> str:
    config.save_pretrained(folder)
    return str(folder)


def test_decoder_only_models_are_refused_clearly(tmp_path, toy_data_dir):
    from transformers import BertConfig, GPT2Config

    from bertprobe.train import run

    gpt2 = save_config(tmp_path / "gpt2", GPT2Config(n_layer=2, n_embd=HIDDEN, n_head=2, n_positions=64))
    with pytest.raises(ModelLoadError, match=r"decoder-only .*gpt2.*sees only the words before it"):
        describe(gpt2, load_config(gpt2))
    for load in (load_tokenizer, load_encoder):
        with pytest.raises(ModelLoadError, match="decoder-only"):
            load(gpt2)
    with pytest.raises(ModelLoadError, match="decoder-only"):
        run(RunConfig(model=gpt2, data_dir=str(toy_data_dir), output_dir=str(tmp_path / "runs")))
    assert not (tmp_path / "runs").exists()

    causal_bert = save_config(tmp_path / "causal_bert", bert_config(50, 0))
    BertConfig.from_pretrained(causal_bert, is_decoder=True).save_pretrained(causal_bert)
    with pytest.raises(ModelLoadError, match=r"decoder-only .*bert"):
        describe(causal_bert, load_config(causal_bert))


def save_generic_tokenizer(folder: Path, backend) -> str:
    """A tokenizer saved as a plain tokenizer.json (TokenizersBackend), beside a BERT config,
    so no model-specific tokenizer class sets it up."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
    tokenizer.save_pretrained(folder)
    return save_config(folder, bert_config(backend.get_vocab_size(), 0))


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_a_tokenizer_of_any_model_type_gets_word_start_marks_on_pre_split_words(tmp_path, kind):
    """Running text marks "the word" as ``the Ġword`` (``the ▁word``); words passed one by one
    would lose the mark. bertprobe sets the pre-tokenizer to mark every word."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    if kind == "bpe":
        vocab, merges = train_byte_level_bpe(["<pad>", "<unk>"])
        backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        backend = Tokenizer(models.Unigram(train_unigram(["<pad>", "<unk>"], "<unk>"), unk_id=1))
        backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    folder = save_generic_tokenizer(tmp_path / kind, backend)
    tokenizer = load_tokenizer(folder)
    encoded = tokenizer(["tom", "went", "to", "oslo"], is_split_into_words=True, add_special_tokens=False)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    starts = [tokens[encoded.word_ids().index(i)] for i in range(4)]
    assert all(token.startswith("Ġ" if kind == "bpe" else "▁") for token in starts), tokens


def test_tokenizer_that_cannot_split_words_as_in_running_text_is_refused(tmp_path):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    # one piece per character, the space included: words passed one by one lose their space
    characters = sorted(set("".join(training_corpus())))
    backend = Tokenizer(models.WordLevel({c: i for i, c in enumerate(["<pad>", "<unk>", *characters])}, "<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    folder = save_generic_tokenizer(tmp_path / "chars", backend)
    with pytest.raises(ModelLoadError, match=r"splits words passed one by one differently .*'word' becomes"):
        load_tokenizer(folder)


def test_a_model_path_that_does_not_exist_is_not_sent_to_the_hub(tmp_path):
    from bertprobe.encoder import looks_like_path

    assert [looks_like_path(name) for name in ("bert-base-cased", "org/model", "/abs/m", "./m", "../m", "~/m")] == [
        False, False, True, True, True, True,
    ]  # fmt: skip
    assert looks_like_path("a/b/c")  # a Hub id has at most one slash
    with pytest.raises(ModelLoadError, match=r"'\./no/such/model' does not exist"):
        load_config("./no/such/model")
    file = tmp_path / "model.bin"
    file.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file, not a folder"):
        load_config(str(file))


def test_a_config_of_an_unknown_model_type_says_so(tmp_path):
    folder = tmp_path / "unknown"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bertx", "hidden_size": 8}), encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"config\.json cannot be read by transformers .*bertx"):
        load_config(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        load_config(str(tmp_path / "empty"))


def test_a_model_folder_without_weights_is_refused_before_the_data_are_read(tmp_path, tiny_model_dir):
    import shutil

    from bertprobe.encoder import check_local_weights
    from bertprobe.train import run

    folder = tmp_path / "no_weights"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    with pytest.raises(ModelLoadError, match="has a config but no weights"):
        check_local_weights(str(folder))
    with pytest.raises(ModelLoadError, match="has a config but no weights"):
        load_encoder(str(folder))
    # the data folder does not exist: the weights are checked first, not after the data work
    with pytest.raises(ModelLoadError, match="has a config but no weights"):
        run(RunConfig(model=str(folder), data_dir=str(tmp_path / "missing"), output_dir=str(tmp_path / "runs")))
    check_local_weights(str(tiny_model_dir))  # the whole folder passes


def test_a_model_folder_without_tokenizer_files_is_refused(tmp_path, tiny_model_dir):
    """transformers builds a tokenizer of special tokens alone from such a folder: every
    word would reach the encoder as [UNK]."""
    import shutil

    folder = tmp_path / "no_tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, folder / name)
    with pytest.raises(ModelLoadError, match=r"turns every one of the, word, is, Paris into \[UNK\].*tokenizer files"):
        load_tokenizer(str(folder))
    assert load_tokenizer(str(tiny_model_dir)).unk_token == "[UNK]"  # its vocabulary knows "the"

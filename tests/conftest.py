"""Shared fixtures: a tiny random BERT saved as a local model folder, and toy CoNLL data.

Nothing here touches the network: the model is a 4-layer ``BertConfig`` built in-process
with a hand-written WordPiece vocabulary, and the data are generated from fixed lists.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models gain nothing from threads; one thread avoids oversubscribing small machines."""
    import torch

    torch.set_num_threads(1)


# The real GLUE copies beside the repository (../shared/data/glue); tests that read them skip
# where a checkout has no such folder.
GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not (GLUE_DIR / "RTE").is_dir(), reason=f"GLUE copies not found in {GLUE_DIR}")

PEOPLE = ["john", "mary", "peter", "anna", "li", "omar", "sara", "tom"]
SURNAMES = ["smith", "jones", "brown", "wang", "khan", "lopez"]
PLACES = ["paris", "berlin", "tokyo", "lima", "cairo", "oslo", "springville", "riverton"]
ORGS = ["acme", "globex", "initech", "umbrella"]
FILLER = ["the", "a", "said", "went", "to", "from", "in", "on", "met", "visited", "works", "for", "today", "and", "."]
PIECES = ["spring", "river", "##ville", "##ton", "##s"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocabulary() -> list[str]:
    words = [w for w in PEOPLE + SURNAMES + PLACES + ORGS + FILLER if w not in ("springville", "riverton")]
    return SPECIALS + sorted(set(words)) + PIECES


def toy_sentence(rng: random.Random) -> list[tuple[str, str]]:
    """A sentence with a person (one or two words), a place and sometimes an organisation."""
    tokens: list[tuple[str, str]] = [("the", "O")]
    tokens.append((rng.choice(PEOPLE), "B-PER"))
    if rng.random() < 0.5:
        tokens.append((rng.choice(SURNAMES), "I-PER"))
    tokens += [(rng.choice(["went", "visited", "met"]), "O"), (rng.choice(["to", "in"]), "O")]
    tokens.append((rng.choice(PLACES), "B-LOC"))
    if rng.random() < 0.5:
        tokens += [("and", "O"), ("works", "O"), ("for", "O"), (rng.choice(ORGS), "B-ORG")]
    tokens.append((".", "O"))
    return tokens


def write_toy_conll(path: Path, sentences: int, seed: int, sentences_per_document: int = 5) -> None:
    rng = random.Random(seed)
    lines: list[str] = []
    for index in range(sentences):
        if index % sentences_per_document == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        lines += [f"{word} NN O {tag}" for word, tag in toy_sentence(rng)]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def toy_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("toy_conll")
    write_toy_conll(folder / "train.txt", 240, seed=1)
    write_toy_conll(folder / "validation.txt", 40, seed=2)
    write_toy_conll(folder / "test.txt", 40, seed=3)
    return folder


def build_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={token: index for index, token in enumerate(vocabulary())}, do_lower_case=True)


def build_tiny_bert(folder: Path, seed: int = 0, num_layers: int = 4):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = BertModel(config)
    model.save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_bert")
    build_tiny_bert(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def accelerate_launch(
    launch_args: list[str], run_args: list[str], script: Path = ROOT / "run.py"
) -> subprocess.CompletedProcess:
    """``accelerate launch LAUNCH_ARGS run.py RUN_ARGS`` on one machine, in full precision;
    ``--multi_gpu --num_processes N`` on a machine without GPUs gives N gloo CPU processes."""
    return subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", *launch_args, "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(script), *run_args],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    """The tiny BERT, loaded, in eval mode."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def windows(toy_data_dir, tiny_tokenizer):
    """The toy dev split encoded in document context (windows repeat across a document)."""
    from bertprobe.alignment import encode_split
    from bertprobe.tasks.conll import load_conll_dir

    corpus = load_conll_dir(toy_data_dir)
    labels = {label: i for i, label in enumerate(corpus.label_list())}
    return encode_split(corpus.splits["validation"], tiny_tokenizer, labels, max_length=64, context="document")


def find_jemalloc() -> str | None:
    """A libjemalloc on this machine (Debian and Ubuntu: libjemalloc2; Fedora: jemalloc), if any."""
    candidates = [
        "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
        "/usr/lib64/libjemalloc.so.2",
    ]
    return next((path for path in candidates if Path(path).is_file()), None)

"""Sequence tasks end to end on the tiny BERT: classification, pairs, regression."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import FILLER, GLUE_DIR, PEOPLE, PLACES, needs_glue
from test_long_runs import Interrupted, interrupt_at_epoch

from bertprobe.checkpoint import checkpoint_root
from bertprobe.config import RunConfig
from bertprobe.errors import ConfigError
from bertprobe.train import run


def write_tsv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def person_or_place(rng: random.Random) -> tuple[str, str]:
    """A sentence about a person or about a place: the label is which."""
    label = rng.choice(["person", "place"])
    subject = rng.choice(PEOPLE if label == "person" else PLACES)
    words = [rng.choice(FILLER) for _ in range(rng.randint(1, 2))]
    words.insert(rng.randint(0, len(words)), subject)
    return " ".join(words), label


@pytest.fixture(scope="module")
def classification_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("seq")
    files = {}
    for split, size, seed in (("train", 200, 1), ("dev", 60, 2)):
        rng = random.Random(seed)
        files[split] = str(
            write_tsv(folder / f"{split}.tsv", ["sentence", "label"], [person_or_place(rng) for _ in range(size)])
        )
    return files


def sequence_config(model_dir, files, tmp_path, **overrides) -> RunConfig:
    values = dict(
        task="custom", model=str(model_dir), train_file=files["train"], validation_file=files["dev"],
        text_columns="sentence", label_column="label", output_dir=str(tmp_path / "runs"),
        cache_dir=str(tmp_path / "cache"), batch_size=16, seed=2,
    )  # fmt: skip
    values.update(overrides)
    return RunConfig(**values)


@pytest.mark.slow
def test_finetune_learns_a_toy_sentence_classification(tiny_model_dir, classification_files, tmp_path):
    record = run(sequence_config(tiny_model_dir, classification_files, tmp_path, mode="finetune", lr=1e-3, epochs=8))
    assert record["task"]["primary_metric"] == "accuracy"
    assert record["metrics"]["dev"]["accuracy"] > 0.8
    assert record["metrics"]["test"] is None  # no test file given
    assert record["labels"] == ["person", "place"]


@pytest.mark.slow
@pytest.mark.parametrize("layers", ["last4concat", "allweighted"])
def test_feature_mode_with_mean_pooling_learns_and_caches_one_row_per_input(
    tiny_model_dir, classification_files, tmp_path, layers
):
    config = sequence_config(
        tiny_model_dir, classification_files, tmp_path, mode="feature", layers=layers, pooling="mean",
        lr=3e-2, epochs=20, save_predictions=True,
    )  # fmt: skip
    record = run(config)
    # chance is 0.5; a linear probe on mean-pooled features of a random 32-wide encoder
    # cannot separate every word (one two-piece place name stays wrong), so the bar is 0.75
    assert record["metrics"]["dev"]["accuracy"] >= 0.75
    assert record["encoder_unchanged"] is True
    assert record["config"]["head"] == "linear"
    manifest = json.loads((Path(record["feature_cache"]["paths"]["train"]) / "manifest.json").read_text())
    assert manifest["rows"] == "mean" and manifest["words"] == manifest["windows"] == 200
    lines = (tmp_path / "runs" / f"{config.run_name()}.dev.jsonl").read_text().splitlines()
    assert len(lines) == 60 and set(json.loads(lines[0])) == {"text_a", "text_b", "gold", "predicted"}


def test_sentence_pairs_reach_the_model_as_pairs(tiny_model_dir, tiny_tokenizer, tmp_path):
    from bertprobe.tasks.classification import SequenceTask
    from bertprobe.tasks.sequence import load_custom

    rows = [["john went to paris", "tom met mary", "yes"], ["the oslo", "a lima", "no"]]
    train = write_tsv(tmp_path / "train.tsv", ["first", "second", "label"], rows)
    corpus = load_custom(train, train, text_columns=["first", "second"], label_column="label")
    task = SequenceTask("custom", corpus, tiny_tokenizer, 64, "first", "accuracy", None, None, 0)
    window = task.windows["train"][0]
    tokens = tiny_tokenizer.convert_ids_to_tokens(window.input_ids)
    assert tokens == ["[CLS]", "john", "went", "to", "paris", "[SEP]", "tom", "met", "mary", "[SEP]"]
    assert window.token_type_ids == [0] * 6 + [1] * 4
    record = run(
        RunConfig(
            task="custom", mode="finetune", model=str(tiny_model_dir), train_file=str(train),
            validation_file=str(train), text_columns="first,second", label_column="label", epochs=1,
            output_dir=str(tmp_path / "runs"),
        )
    )  # fmt: skip
    assert record["data"]["pair"] is True


@pytest.mark.slow
def test_regression_trains_with_mean_squared_error_to_a_falling_loss(tiny_model_dir, tmp_path):
    rng = random.Random(4)
    rows = []
    for _ in range(160):
        people = rng.randint(0, 3)
        words = [rng.choice(PEOPLE) for _ in range(people)] + [rng.choice(FILLER) for _ in range(4 - people)]
        rng.shuffle(words)
        rows.append([" ".join(words), f"{people + rng.random() * 0.1:.3f}"])
    train = write_tsv(tmp_path / "train.tsv", ["sentence", "score"], rows)
    config = RunConfig(
        task="custom", mode="finetune", model=str(tiny_model_dir), train_file=str(train),
        validation_file=str(train), text_columns="sentence", label_column="score", lr=1e-3, epochs=5,
        batch_size=16, output_dir=str(tmp_path / "runs"),
    )  # fmt: skip
    record = run(config)
    assert record["task"]["regression"] is True and record["task"]["primary_metric"] == "pearson"
    losses = [epoch["train_loss"] for epoch in record["history"]]
    assert losses[-1] < 0.5 * losses[0]
    assert record["metrics"]["dev"]["pearson"] > 0.8


def test_bilstm_head_is_refused_for_pooled_inputs(tiny_model_dir, classification_files, tmp_path):
    from bertprobe.errors import ConfigError

    config = sequence_config(tiny_model_dir, classification_files, tmp_path, mode="feature", head="bilstm")
    with pytest.raises(ConfigError, match="one pooled vector per input"):
        run(config)


@needs_glue
def test_glue_task_from_local_files_encodes_mrpc_pairs(tiny_tokenizer):
    from bertprobe.tasks.classification import SequenceTask
    from bertprobe.tasks.glue import load_glue_dir

    corpus = load_glue_dir("mrpc", GLUE_DIR)
    task = SequenceTask("mrpc", corpus, tiny_tokenizer, 64, "first", "f1", "equivalent", 50, 0)
    assert len(task.windows["train"]) == 50 and len(task.windows["validation"]) == 408
    assert all(1 in w.token_type_ids for w in task.windows["validation"])
    assert all(len(w.input_ids) <= 64 for w in task.windows["validation"])
    assert task.data_summary()["truncated"]["validation"] > 0


@needs_glue
def test_mrpc_is_scored_by_the_f1_of_its_equivalent_class(tiny_tokenizer):
    """GLUE reports MRPC's F1 for the class "equivalent"; scoring another class, or none,
    gives other numbers."""
    import torch

    from bertprobe.tasks import load_task

    config = RunConfig(task="mrpc", data_dir=str(GLUE_DIR), max_train_examples=20, pooling="first").resolved()
    task = load_task(config, tiny_tokenizer, 64)
    assert task.primary_metric == "f1"
    gold = [example.label for example in task.corpus.splits["validation"].examples]
    everything_equivalent = torch.full((len(gold), 1), task.labels.index("equivalent"))
    scores, _ = task.score("validation", torch.arange(len(gold)), everything_equivalent)
    share = gold.count("equivalent") / len(gold)  # precision of "equivalent"; its recall is 1
    assert scores["accuracy"] == pytest.approx(share)
    assert scores["f1"] == pytest.approx(2 * share / (share + 1))  # "not_equivalent" would score 0


# ----------------------------------------------------------------------------- pairs encoded apart


@pytest.fixture(scope="module")
def same_person_files(tmp_path_factory) -> dict[str, str]:
    """Sentence pairs: do both name the same person? Comparing u and v answers it."""
    folder = tmp_path_factory.mktemp("pairs")
    files = {}
    for split, size, seed in (("train", 240, 1), ("dev", 80, 2)):
        rng = random.Random(seed)
        rows = []
        for _ in range(size):
            first = rng.choice(PEOPLE)
            same = rng.random() < 0.5
            second = first if same else rng.choice([p for p in PEOPLE if p != first])
            rows.append([f"{first} went to {rng.choice(PLACES)}", f"{second} said", "same" if same else "different"])
        files[split] = str(write_tsv(folder / f"{split}.tsv", ["a", "b", "label"], rows))
    return files


@pytest.mark.slow
def test_pairs_encoded_apart_feed_u_v_difference_and_product_and_learn(tiny_model_dir, same_person_files, tmp_path):
    import torch

    from bertprobe.model import pair_features

    rows = torch.tensor([[[1.0, -2.0], [3.0, 0.5]]])
    assert pair_features(rows).tolist() == [[[1.0, -2.0, 3.0, 0.5, 2.0, 2.5, 3.0, -1.0]]]

    config = sequence_config(
        tiny_model_dir, same_person_files, tmp_path, text_columns="a,b", mode="feature", layers="allweighted",
        pooling="mean", pair_encoding="separate", epochs=30, lr=1e-2,
    )  # fmt: skip
    record = run(config)
    assert record["config"]["pair_encoding"] == "separate"
    assert record["metrics"]["dev"]["accuracy"] > 0.8
    assert record["parameters"]["trainable"] == 2 * (4 * 32) + 2 + 5  # linear on [u; v; |u-v|; u*v]; 5 mix weights
    cache = Path(record["feature_cache"]["paths"]["validation"])
    assert json.loads((cache / "manifest.json").read_text())["windows"] == 2 * 80  # each sentence its own input


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "finetune"}, "--pair-encoding separate .* needs --mode feature and the feature cache"),
        ({"mode": "feature", "feature_cache": False}, "needs --mode feature and the feature cache"),
        ({"mode": "feature", "pair_encoding": "apart"}, "--pair-encoding 'apart' is not one of joint, separate"),
    ],
)
def test_pair_encoding_options_are_checked(options, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(task="mrpc", **{"pair_encoding": "separate", **options}).resolved()


def test_separate_encoding_of_a_single_sentence_task_is_refused(tiny_model_dir, classification_files, tmp_path):
    config = sequence_config(tiny_model_dir, classification_files, tmp_path, mode="feature", pair_encoding="separate")
    with pytest.raises(ConfigError, match="--pair-encoding separate applies to sentence-pair tasks; custom has one"):
        run(config)


def small_corpus(train: int = 10, dev: int = 4, test: int = 0):
    from bertprobe.tasks.sequence import SequenceCorpus, SequenceExample, SequenceSplit

    def split(name: str, size: int) -> SequenceSplit:
        return SequenceSplit(
            name, [SequenceExample(f"{name} {i}", None, "a", f"{name}.tsv:{i + 2}") for i in range(size)]
        )

    splits = {"train": split("train", train), "validation": split("validation", dev)}
    if test:
        splits["test"] = split("test", test)
    return SequenceCorpus(splits, "toy/", is_regression=False, label_list=["a"])


def test_dev_held_out_of_train_is_fixed_and_the_tasks_dev_becomes_test():
    from bertprobe.tasks.sequence import hold_out_dev

    corpus = small_corpus()
    held = hold_out_dev(corpus, 3)
    texts = {name: [example.text_a for example in split.examples] for name, split in held.splits.items()}
    assert len(texts["validation"]) == 3 and len(texts["train"]) == 7
    assert set(texts["validation"]) | set(texts["train"]) == {f"train {i}" for i in range(10)}  # a partition
    assert texts["test"] == [f"validation {i}" for i in range(4)]  # the task's own dev, scored once as test
    assert hold_out_dev(corpus, 3).splits["validation"].examples == held.splits["validation"].examples  # fixed
    assert held.dev_from_train == 3 and corpus.dev_from_train is None  # the corpus given is left alone


@pytest.mark.parametrize(
    ("corpus_sizes", "size", "message"),
    [
        ({}, 10, r"--dev-from-train 10 must leave training examples: toy/ has 10 \(give 1..9\)"),
        ({"test": 2}, 3, "--dev-from-train is for tasks without a labelled test set; toy/ has one"),
    ],
)
def test_dev_held_out_of_train_refuses_what_cannot_work(corpus_sizes, size, message):
    from bertprobe.tasks.sequence import hold_out_dev

    with pytest.raises(ConfigError, match=message):
        hold_out_dev(small_corpus(**corpus_sizes), size)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task": "conll2003", "dev_from_train": 100}, "--dev-from-train applies to sentence tasks whose test labels"),
        ({"task": "sst2", "dev_from_train": 0}, "--dev-from-train must be at least 1, got 0"),
    ],
)
def test_dev_from_train_options_are_checked(options, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**options).resolved()


@pytest.mark.slow
def test_a_run_with_dev_from_train_chooses_on_held_out_examples_and_reports_the_tasks_dev_as_test(
    tiny_model_dir, classification_files, tmp_path
):
    record = run(
        sequence_config(
            tiny_model_dir, classification_files, tmp_path, mode="finetune", lr=1e-3, epochs=8, dev_from_train=40,
            train_fraction=0.8,
        )
    )  # fmt: skip
    assert record["data"]["examples"] == {"train": 160, "validation": 40, "test": 60}
    assert record["data"]["examples_trained"] == 128 and record["data"]["dev_from_train"] == 40
    assert record["metrics"]["test"]["accuracy"] > 0.8 and record["metrics"]["dev"]["accuracy"] > 0.8


@pytest.fixture(scope="module")
def similarity_files(tmp_path_factory) -> dict[str, str]:
    """Sentence pairs scored 0-5 for similarity: a sentence beside itself scores 5, beside
    another sentence 0."""
    folder = tmp_path_factory.mktemp("similarity")
    files = {}
    for split, size, seed in (("train", 30, 1), ("dev", 40, 2), ("test", 40, 3)):
        rng = random.Random(seed)
        rows = []
        for index in range(size):
            first = f"{rng.choice(PEOPLE)} went to {rng.choice(PLACES)}"
            second = first if index % 2 else f"{rng.choice(FILLER)} {rng.choice(FILLER)} {rng.choice(FILLER)}"
            rows.append([first, second, 5.0 if index % 2 else 0.0])
        files[split] = str(write_tsv(folder / f"{split}.tsv", ["a", "b", "score"], rows))
    return files


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task": "conll2003"}, "--mode cosine scores sentence pairs; conll2003 tags words"),
        ({"task": "stsb", "feature_cache": False}, "--mode cosine reads each sentence's vector from the feature cache"),
        ({"task": "stsb", "layers": "allweighted"}, "learns its mix of layers, and --mode cosine trains nothing"),
        ({"task": "stsb", "head": "linear"}, "--head cosine belongs to --mode cosine"),
    ],
)
def test_cosine_options_are_checked(options, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(mode="cosine", **options).resolved()
    with pytest.raises(ConfigError, match="--head cosine belongs to --mode cosine"):
        RunConfig(task="stsb", mode="feature", head="cosine").resolved()
    resolved = RunConfig(task="stsb", mode="cosine").resolved()
    assert (resolved.pair_encoding, resolved.head, resolved.lr, resolved.pooling) == (
        "separate",
        "cosine",
        None,
        "mean",
    )


@pytest.mark.slow
def test_cosine_scores_pairs_with_nothing_trained(tiny_model_dir, similarity_files, same_person_files, tmp_path):
    """The zero-training row: each pair's prediction is the cosine of its two sentences'
    pooled vectors (exactly 1 for a sentence beside itself), scored by the task's metrics on
    dev and test; nothing trains and the encoder is unchanged."""
    files = {"train": similarity_files["train"], "dev": similarity_files["dev"]}
    config = sequence_config(
        tiny_model_dir, files, tmp_path, test_file=similarity_files["test"], text_columns="a,b", label_column="score",
        regression=True, mode="cosine", layers="last", save_predictions=True,
    )  # fmt: skip
    record = run(config)
    assert record["task"]["regression"] and record["parameters"]["trainable"] == 0 and record["encoder_unchanged"]
    assert record["history"] == [{"epoch": 0, "dev_pearson": record["metrics"]["dev"]["pearson"]}]
    assert record["final_lr"] is None and record["optimizer"] is None and record["best_epoch"] == 0
    assert record["metrics"]["dev"]["pearson"] > 0.8 and record["metrics"]["test"]["pearson"] > 0.8
    lines = (tmp_path / "runs" / f"{record['name']}.dev.jsonl").read_text().splitlines()
    for line in map(json.loads, lines):
        if line["text_a"] == line["text_b"]:
            assert line["predicted"] == pytest.approx(1.0, abs=1e-5)
        else:
            assert line["predicted"] < 0.999

    classes = sequence_config(
        tiny_model_dir, same_person_files, tmp_path / "classes", text_columns="a,b", mode="cosine"
    )
    with pytest.raises(
        ConfigError, match=r"--mode cosine scores sentence pairs against real-valued labels.*class labels"
    ):
        run(classes)


@pytest.mark.slow
def test_a_run_checkpointed_under_its_older_name_resumes_there(
    tiny_model_dir, classification_files, tmp_path, monkeypatch
):
    """A custom-file run's name lost its context part in a later release: a run interrupted
    before then resumes from the checkpoints under the older name."""
    config = sequence_config(tiny_model_dir, classification_files, tmp_path, mode="finetune", lr=1e-3, epochs=3,
                             resume=True)  # fmt: skip
    newest, older = config.record_names()
    assert older == newest.replace("_seed2_", "_sentence_seed2_")
    interrupt_at_epoch(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run(config)
    monkeypatch.undo()
    checkpoint_root(config.output_dir, newest).rename(checkpoint_root(config.output_dir, older))
    record = run(config)
    assert record["resumed_from"] == str(checkpoint_root(config.output_dir, older) / "epoch-2")
    assert [entry["epoch"] for entry in record["history"]] == [1, 2, 3]
    assert (tmp_path / "runs" / f"{newest}.json").is_file()  # written under the newest name
    assert not checkpoint_root(config.output_dir, older).exists()  # and the old checkpoints cleaned up

"""The BERT paper's numbers that our tables print beside our own: Devlin et al. (2019),
"BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding", Table 7
(CoNLL-2003 NER, BERT-base, fine-tuning against frozen features). Keyed by our system keys
(:func:`bertprobe.rows.system_key`)."""

from __future__ import annotations

from bertprobe.modes import Mode

#: Dev F1 (%) of BERT-base in Table 7 of Devlin et al. (2019), CoNLL-2003 NER.
#: ``last4sum``: the published Table 7's "Sum last four hidden" row (95.9, as is the
#: weighted sum of the last four).
PAPER_DEV_F1: dict[str, float] = {
    Mode.FINETUNE.value: 96.4,
    "embeddings": 91.0,
    "second_last": 95.6,
    "last": 94.9,
    "last4weighted": 95.9,
    "last4concat": 96.1,
    "allweighted": 95.5,
    "last4sum": 95.9,
}

#: The paper reports test F1 for fine-tuning only.
PAPER_TEST_F1: dict[str, float] = {Mode.FINETUNE.value: 92.4}

#: The paper's numbers are compared only with runs of this task.
PAPER_TASK = "conll2003"

#: The head of each of the paper's rows: a linear layer on the fine-tuned model, a two-layer
#: BiLSTM on frozen features. A row with another head (a linear probe of frozen features,
#: say) is not the paper's experiment and gets no paper value beside it.
PAPER_HEAD = {Mode.FINETUNE.value: "linear", Mode.FEATURE.value: "bilstm"}

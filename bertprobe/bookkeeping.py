"""Run options that keep books rather than change what a run measures.

Kept apart from :mod:`bertprobe.config` (which needs torch through the heads and layer
strategies) so that :mod:`bertprobe.rows` reads records without importing torch.
"""

from __future__ import annotations

#: Options that name folders or caches or keep books (checkpoints, resuming, tracking,
#: compiling, trimming the heap): they do not change what a run measures, so they stay out
#: of its name's hash. Nor do they split a row of ``bertprobe table``.
BOOKKEEPING_OPTIONS = frozenset(
    (
        "output_dir", "save_predictions", "cache_dir", "feature_cache", "cache_layers", "check_loss_every", "tags",
        "checkpoint", "checkpoint_every", "resume", "report_to", "compile", "trim_heap_every", "cpu_threads",
    )
)  # fmt: skip

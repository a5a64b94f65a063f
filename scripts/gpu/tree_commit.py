"""Name the commit that a copied checkout (no ``.git``) holds, as ``git_commit`` would.

``pack.sh`` writes ``TREE``: the commit on its first line, then ``git ls-tree -r HEAD``
(mode, type, blob hash, path). Each file of the copy is hashed the way git hashes a blob,
``sha1(b"blob <size>\\0" + content)``; the answer is the commit when every tracked file
matches and ``<commit>-dirty`` otherwise (the differing paths go to stderr). The device
script exports it as ``BERTPROBE_GIT_COMMIT``, which records use where git cannot run.

    python3 scripts/gpu/tree_commit.py .gpu/call2/TREE
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


def blob_hash(path: Path) -> str:
    """Git's object id of the file (a symbolic link hashes its target, as git stores it)."""
    content = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def tree_commit(tree_file: Path, root: Path) -> tuple[str, list[str]]:
    """The commit named in ``tree_file`` (``-dirty`` if any file differs) and the differing paths."""
    lines = tree_file.read_text(encoding="utf-8").splitlines()
    commit, entries = lines[0].strip(), lines[1:]
    differing = []
    for entry in entries:
        meta, _, name = entry.partition("\t")
        _mode, kind, expected = meta.split()
        if kind != "blob":
            continue  # submodules: not part of this project
        path = root / name
        if not (path.exists() or path.is_symlink()) or blob_hash(path) != expected:
            differing.append(name)
    return (commit + "-dirty" if differing else commit), differing


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    commit, differing = tree_commit(Path(argv[1]), Path.cwd())
    for name in differing:
        print(f"tree_commit: {name} differs from the packed commit", file=sys.stderr)
    print(commit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

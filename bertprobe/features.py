"""The frozen-feature cache: run a frozen encoder over a split once, keep word vectors.

Only each labelled word's first-sub-token vector is kept, for the requested layers, in
half precision, in one memory-mapped ``.npy`` per split. Windows with identical inputs
(document context gives every sentence of a short document the same window) are encoded
once and each keeps its own words' rows. A cache lives in

    CACHE_DIR / <content key> / layers-<i>-<j>-... /

where the *content key* hashes the encoder's weights and the exact model inputs (token
ids, token types and word positions of every window: this covers the tokenizer, the data
files, the context mode and the length limit). Any change there gives a new key, so a
stale cache is never read. Strategies whose layers are a subset of a stored set reuse it.

A build writes into a temporary folder that is renamed into place only when complete,
so an interrupted build is never mistaken for a finished one; the next build of the same
cache on that machine deletes the folder a killed build left behind. Builders of one cache
take turns under a file lock (``filelock``): the first builds, the others find its cache.

Every file's checksum (XXH3-128, :func:`file_checksum`) is recorded in the manifest when
the build completes and checked whenever the cache is opened, so a truncated, overwritten or bit-flipped cache is never
read: it is moved aside (``.damaged-...``), named in a warning, and built again. The file
that holds the features is allocated in full before it is written, so a full disk fails
at once with a clear message instead of killing the process (SIGBUS) halfway.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xxhash
from filelock import FileLock
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from bertprobe.alignment import EncodedWindow
from bertprobe.batching import WindowCollator, WindowDataset
from bertprobe.errors import CacheError
from bertprobe.model import extract_rows

MANIFEST = "manifest.json"
#: The cache's layout version, part of every content key: caches of an older layout (before
#: digests were recorded) are never found, so never read unverified.
CACHE_FORMAT = 2
DATA_FILES = ("features.npy", "offsets.npy")

logger = logging.getLogger(__name__)


def file_checksum(path: Path, chunk_bytes: int = 1 << 23) -> str:
    """XXH3-128 of a file's bytes, read in chunks (8 MiB) so memory stays flat.

    A checksum against damage (truncation, flipped bits), not against tampering: XXH3 runs
    several times faster than SHA-256, so checking a cache costs less than one read of it
    (``benchmarks/cache_verify.py``).
    """
    digest = xxhash.xxh3_128()
    with path.open("rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def damage(folder: Path) -> str | None:
    """Why the complete cache ``folder`` must not be read, or ``None`` if every file has the
    size and checksum its manifest recorded (the manifest itself must parse)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        recorded = manifest["checksums"]
        for name in DATA_FILES:
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != recorded[name]["size"]:
                return f"{name} has {path.stat().st_size} bytes, its manifest says {recorded[name]['size']}"
            if file_checksum(path) != recorded[name]["xxh3_128"]:
                return f"{name} does not match the checksum its manifest recorded"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its manifest cannot be read ({type(error).__name__}: {error})"
    return None


def set_aside(folder: Path, reason: str) -> Path:
    """Move a damaged cache out of the way (``.damaged-<name>-<time>`` beside it), so it is
    kept for a look but never found again; return where it went."""
    target = folder.parent / f".damaged-{folder.name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    try:
        os.replace(folder, target)
    except OSError:  # another process moved it first
        return target
    logger.warning(f"the feature cache at {folder} is damaged ({reason}); moved aside to {target} and rebuilt")
    return target


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over every parameter and buffer, in name order: the encoder's identity."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def windows_digest(windows: Sequence[EncodedWindow]) -> str:
    """SHA-256 over the model inputs and word positions of every window."""
    digest = hashlib.sha256()
    for window in windows:
        digest.update(np.asarray(window.input_ids, dtype=np.int64).tobytes())
        digest.update(b"|")
        if window.token_type_ids is not None:
            digest.update(np.asarray(window.token_type_ids, dtype=np.int64).tobytes())
        digest.update(b"|")
        digest.update(np.asarray(window.word_positions, dtype=np.int64).tobytes())
        digest.update(b";")
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedSplit:
    """A complete cache of one split, memory-mapped."""

    path: Path
    layers: tuple[int, ...]
    features: np.ndarray  # [total_words, K, H], float16, memory-mapped
    offsets: np.ndarray  # [windows + 1], int64

    def window(self, index: int, layer_slots: Sequence[int]) -> torch.Tensor:
        rows = self.features[self.offsets[index] : self.offsets[index + 1]]
        return torch.from_numpy(np.ascontiguousarray(rows[:, list(layer_slots)]))


class FeatureCache:
    """Finds or builds the cache of one split for one encoder and one set of layers."""

    def __init__(self, cache_dir: str | Path, model_name: str, encoder_digest: str, pooling: str | None = None) -> None:
        self.root = Path(cache_dir)
        self.model_name = model_name
        self.encoder_digest = encoder_digest
        self.pooling = pooling  # None: one row per labelled word; "first"/"mean": one pooled row

    def key(self, windows: Sequence[EncodedWindow]) -> str:
        text = json.dumps(
            {
                "encoder": self.encoder_digest,
                "inputs": windows_digest(windows),
                "rows": self.pooling,
                "format": CACHE_FORMAT,
            }
        )
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def find(self, windows: Sequence[EncodedWindow], layers: Sequence[int]) -> CachedSplit | None:
        """A complete, verified cache holding every one of ``layers``, or None. A damaged
        cache on the way is moved aside (:func:`set_aside`) and not returned."""
        folder = self.root / self.key(windows)
        if not folder.is_dir():
            return None
        for candidate in sorted(folder.iterdir()):
            manifest = candidate / MANIFEST
            if candidate.name.startswith(".") or not manifest.is_file():
                continue
            try:
                stored = tuple(json.loads(manifest.read_text())["layers"])
            except (OSError, ValueError, KeyError, TypeError) as error:
                set_aside(candidate, f"its manifest cannot be read ({type(error).__name__}: {error})")
                continue
            if not set(layers) <= set(stored):
                continue
            reason = damage(candidate)
            if reason is None:
                try:
                    return self._open(candidate, stored, len(windows))
                except (OSError, ValueError) as error:
                    reason = f"its files cannot be opened ({type(error).__name__}: {error})"
            set_aside(candidate, reason)
        return None

    @staticmethod
    def _open(path: Path, layers: tuple[int, ...], windows: int | None = None) -> CachedSplit:
        offsets = np.load(path / "offsets.npy")
        features = np.load(path / "features.npy", mmap_mode="r")
        if windows is not None and len(offsets) != windows + 1:
            raise ValueError(f"offsets for {len(offsets) - 1} windows, expected {windows}")
        if len(offsets) and (offsets[0] != 0 or offsets[-1] != len(features) or np.any(np.diff(offsets) < 0)):
            raise ValueError("offsets do not cut the features into windows")
        return CachedSplit(path=path, layers=layers, features=features, offsets=offsets)

    @staticmethod
    def expected_bytes(windows: Sequence[EncodedWindow], layers: Sequence[int], hidden_size: int, pooled: bool) -> int:
        """The disk space a cache of ``windows`` needs: one float16 row per labelled word (or
        per window when ``pooled``) and layer, plus the offsets."""
        rows = len(windows) if pooled else sum(len(window.word_positions) for window in windows)
        return rows * len(set(layers)) * hidden_size * 2 + (len(windows) + 1) * 8

    def build_or_find(
        self,
        windows: Sequence[EncodedWindow],
        needed: Sequence[int],
        stored: Sequence[int],
        encoder: nn.Module,
        pad_token_id: int,
        split_name: str,
        device: torch.device,
        progress: bool = False,
    ) -> tuple[CachedSplit, bool]:
        """A verified cache of ``windows`` holding the ``needed`` layers, built with the
        ``stored`` ones if there is none, and whether this call built it. Builders take turns
        under a lock on the cache's folder: one that waited finds the first one's cache."""
        folder = self.root / self.key(windows)
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".build.lock")):
            cached = self.find(windows, needed)
            if cached is not None:
                return cached, False
            return self.build(windows, stored, encoder, pad_token_id, split_name, device, progress=progress), True

    def build(
        self,
        windows: Sequence[EncodedWindow],
        layers: Sequence[int],
        encoder: nn.Module,
        pad_token_id: int,
        split_name: str,
        device: torch.device,
        batch_tokens: int = 16384,
        progress: bool = False,
        share_inputs: bool = True,
    ) -> CachedSplit:
        """Run the frozen encoder once over ``windows`` and store the words' vectors.

        ``share_inputs=False`` encodes every window, repeated inputs included (the
        reference arm of ``benchmarks/cache_build.py``); the stored features are the same.
        """
        plan = _BuildPlan(self, windows, layers, _hidden_size(encoder), share_inputs, batch_tokens)
        with self._writing(plan, split_name):
            plan.start()
            plan.fill(encoder, pad_token_id, device, split_name if progress else None)
            return plan.finish(split_name)

    def build_sharded(
        self,
        windows: Sequence[EncodedWindow],
        needed: Sequence[int],
        stored: Sequence[int],
        encoder: nn.Module,
        pad_token_id: int,
        split_name: str,
        accelerator,
        batch_tokens: int = 16384,
    ) -> tuple[CachedSplit, bool]:
        """The build of :meth:`build`, shared by every process of a data-parallel run that
        sees the cache folder: the main process makes the (allocated) file, each process
        encodes every N-th batch into it, and the main process, holding the cache's lock,
        records the checksums and renames it into place. The processes wait for each other
        only for their own share of the encoding. Where some process cannot see the main
        process's folder (no shared file system), each process builds or finds its own."""
        from accelerate.utils import broadcast_object_list, gather_object

        plan = _BuildPlan(self, windows, stored, _hidden_size(encoder), True, batch_tokens)
        lock = FileLock(str(plan.final.parent / ".build.lock"))
        folder = None
        if accelerator.is_main_process:
            plan.final.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            found = self.find(windows, needed)
            folder = None if found is not None else str(self._start_or_release(plan, lock, split_name))
        folder = broadcast_object_list([folder])[0]
        if folder is None:  # the main process found it: every process reads it, or finds or builds its own
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                lock.release()
            return self.build_or_find(windows, needed, stored, encoder, pad_token_id, split_name, accelerator.device)
        plan.temporary = Path(folder)
        if not all(gather_object([plan.temporary.is_dir()])):
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                with self._writing(plan, split_name):
                    plan.fill(encoder, pad_token_id, accelerator.device, split_name)
                    cached = plan.finish(split_name)
                lock.release()
                return cached, True
            return self.build_or_find(windows, needed, stored, encoder, pad_token_id, split_name, accelerator.device)
        plan.processes = accelerator.num_processes
        with self._writing(plan, split_name):
            plan.fill(
                encoder, pad_token_id, accelerator.device, split_name if accelerator.is_main_process else None,
                shard=(accelerator.process_index, accelerator.num_processes),
            )  # fmt: skip
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with self._writing(plan, split_name):
                plan.finish(split_name)
            lock.release()
        accelerator.wait_for_everyone()
        return self._open(plan.final, plan.layers), True

    def _start_or_release(self, plan: _BuildPlan, lock: FileLock, split_name: str) -> Path:
        try:
            with self._writing(plan, split_name):
                plan.start()
        except BaseException:
            lock.release()
            raise
        return plan.temporary

    @contextmanager
    def _writing(self, plan: _BuildPlan, split_name: str) -> Iterator[None]:
        """A failed write (no space, no permission) removes the half-built folder and says so."""
        try:
            yield
        except OSError as error:
            shutil.rmtree(plan.temporary, ignore_errors=True)  # never leave a half-built folder behind
            raise CacheError(
                f"cannot write the {split_name} feature cache under {self.root}: {error.strerror or error}"
                + (" (free some space or point --cache-dir elsewhere)" if error.errno == errno.ENOSPC else "")
            ) from error


class _BuildPlan:
    """One cache build: which inputs are encoded in which batches, where each window's rows
    go, and the folder it is written in until it is complete."""

    def __init__(
        self,
        cache: FeatureCache,
        windows: Sequence[EncodedWindow],
        layers: Sequence[int],
        hidden: int,
        share_inputs: bool,
        batch_tokens: int,
    ) -> None:
        self.cache, self.windows, self.hidden = cache, windows, hidden
        self.layers = tuple(sorted(set(layers)))
        self.final = cache.root / cache.key(windows) / ("layers-" + "-".join(map(str, self.layers)))
        self.temporary = self.final.parent / f".building-{self.final.name}-{socket.gethostname()}-{os.getpid()}"
        self.counts = np.array([1 if cache.pooling else len(w.word_positions) for w in windows], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.groups = same_input_groups(windows) if share_inputs else [[index] for index in range(len(windows))]
        lengths = [len(windows[group[0]].input_ids) for group in self.groups]
        self.batches = _length_sorted_batches(lengths, batch_tokens)
        self.started = time.perf_counter()
        self.processes = 1

    def start(self) -> None:
        """The temporary folder and its feature file, allocated in full."""
        remove_abandoned_builds(self.final)
        shutil.rmtree(self.temporary, ignore_errors=True)
        self.temporary.mkdir(parents=True)
        shape = (int(self.offsets[-1]), len(self.layers), self.hidden)
        features = np.lib.format.open_memmap(self.temporary / "features.npy", mode="w+", dtype=np.float16, shape=shape)
        del features
        _allocate(self.temporary / "features.npy")

    def fill(
        self,
        encoder: nn.Module,
        pad_token_id: int,
        device: torch.device,
        progress_name: str | None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        """Encode batches ``shard[0]``, ``shard[0] + shard[1]``, ... into the feature file."""
        features = np.load(self.temporary / "features.npy", mmap_mode="r+")
        encoder.eval()
        batches = self.batches[shard[0] :: shard[1]]
        if progress_name is not None:
            from bertprobe.progress import progress_bar

            batches = progress_bar(batches, f"caching {progress_name} features")
        collate, dataset = WindowCollator(pad_token_id), WindowDataset(self.windows)
        with torch.inference_mode():
            for batch_groups in batches:
                self._encode(batch_groups, encoder, collate, dataset, device, features)
        features.flush()  # the map closes when fill returns

    def _encode(self, batch_groups: list[int], encoder, collate, dataset, device, features: np.ndarray) -> None:
        """Encode one input per group of the batch and write the rows of every window in
        those groups; a batch the device has no memory for is split in halves (again and
        again if need be), so the token budget is an upper bound that adapts to the memory
        at hand."""
        groups, windows = self.groups, self.windows
        members = [index for group in batch_groups for index in groups[group]]
        try:
            batch = collate([dataset[groups[group][0]] for group in batch_groups])
            inputs = {
                key: batch[key].to(device) for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch
            }
            output = encoder(**inputs, output_hidden_states=True, return_dict=True)
            positions = [torch.tensor(windows[index].word_positions) for index in members]
            to_extract = {
                "attention_mask": inputs["attention_mask"],
                "word_positions": pad_sequence(positions, batch_first=True).to(device),
            }
            sources = torch.tensor(
                [row for row, group in enumerate(batch_groups) for _ in groups[group]], device=device
            )
            words = extract_rows(output.hidden_states, self.layers, to_extract, self.cache.pooling, sources)
            words = words.to(torch.float16).cpu().numpy()
        except torch.cuda.OutOfMemoryError:
            if len(batch_groups) == 1:
                raise
            words = None  # retried below, after the handler: its traceback holds the failed pass's tensors
        if words is None:
            batch = inputs = to_extract = output = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            middle = len(batch_groups) // 2
            self._encode(batch_groups[:middle], encoder, collate, dataset, device, features)
            self._encode(batch_groups[middle:], encoder, collate, dataset, device, features)
            return
        for row, index in enumerate(members):
            features[self.offsets[index] : self.offsets[index + 1]] = words[row, : self.counts[index]]

    def finish(self, split_name: str) -> CachedSplit:
        """The offsets, the manifest with every file's checksum, and the rename into place."""
        temporary, offsets = self.temporary, self.offsets
        np.save(temporary / "offsets.npy", offsets)
        manifest = {
            "model": self.cache.model_name,
            "encoder_sha256": self.cache.encoder_digest,
            "inputs_sha256": windows_digest(self.windows),
            "split": split_name,
            "rows": self.cache.pooling or "first sub-token of each labelled word",
            "layers": list(self.layers),
            "windows": len(self.windows),
            "encoded_inputs": len(self.groups),
            "words": int(offsets[-1]),
            "hidden_size": self.hidden,
            "dtype": "float16",
            "bytes": int(offsets[-1]) * len(self.layers) * self.hidden * 2,
            "build_seconds": time.perf_counter() - self.started,
            "processes": self.processes,  # how many processes shared the encoding
        }
        manifest["checksums"] = {
            name: {"xxh3_128": file_checksum(temporary / name), "size": (temporary / name).stat().st_size}
            for name in DATA_FILES
        }
        with (temporary / MANIFEST).open("w") as stream:
            stream.write(json.dumps(manifest, indent=2))
            stream.flush()
            os.fsync(stream.fileno())
        if self.final.exists():  # a damaged cache the lock holder did not find (find() moves those aside)
            set_aside(self.final, "it was in the way of a new build")
        os.replace(temporary, self.final)
        return FeatureCache._open(self.final, self.layers)


def _allocate(path: Path) -> None:
    """Reserve the whole of ``path`` on disk now: writes into a memory map of a sparse file on
    a full disk kill the process with SIGBUS, while a failed allocation is an ``OSError``
    (ENOSPC). File systems that cannot allocate ahead are left as they are."""
    size = path.stat().st_size
    with path.open("r+b") as stream:
        try:
            os.posix_fallocate(stream.fileno(), 0, size)
        except OSError as error:
            if error.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
                return
            raise
        except AttributeError:  # no posix_fallocate on this platform
            return


def remove_abandoned_builds(final: Path) -> None:
    """Delete unfinished builds of ``final`` whose process, on this machine, has ended.

    A build that was killed leaves its temporary folder (gigabytes for a large model);
    the folder names the host and process that wrote it, so a build still running here
    or on another machine sharing the cache folder is left alone.
    """
    prefix = f".building-{final.name}-{socket.gethostname()}-"
    for folder in final.parent.glob(f"{prefix}*"):
        pid = folder.name.removeprefix(prefix)
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill would end the process there; never delete a build we cannot check
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def same_input_groups(windows: Sequence[EncodedWindow]) -> list[list[int]]:
    """Window indices grouped by identical model inputs (sub-tokens and token types), in
    order of first appearance.

    With document context every sentence of a document that fits the length limit gets
    the same window (the whole document) and differs only in which words it labels; on
    CoNLL-2003 the 14,041 training windows hold 2,088 distinct inputs. A frozen encoder
    in eval mode gives the same hidden states for the same input, so each group is
    encoded once.
    """
    groups: dict[tuple[tuple[int, ...], tuple[int, ...] | None], list[int]] = {}
    for index, window in enumerate(windows):
        token_types = None if window.token_type_ids is None else tuple(window.token_type_ids)
        groups.setdefault((tuple(window.input_ids), token_types), []).append(index)
    return list(groups.values())


def _hidden_size(encoder: nn.Module) -> int:
    config = encoder.config
    return int(getattr(config, "hidden_size", None) or config.dim)


def _length_sorted_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped by similar length, each batch within ``batch_tokens`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]
        if current and (len(current) + 1) * width > batch_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class FeatureDataset(Dataset):
    """Cached word features of the layers a strategy needs, in the strategy's order."""

    def __init__(
        self, cached: CachedSplit, windows: Sequence[EncodedWindow], layers: Sequence[int], inputs_per_window: int = 1
    ) -> None:
        missing = set(layers) - set(cached.layers)
        if missing:
            raise ValueError(f"cache at {cached.path} lacks layers {sorted(missing)}")
        expected = len(windows) * inputs_per_window
        if len(cached.offsets) != expected + 1:
            raise ValueError(f"cache at {cached.path} has {len(cached.offsets) - 1} inputs, expected {expected}")
        self.cached = cached
        self.windows = list(windows)
        self.slots = [cached.layers.index(layer) for layer in layers]
        self.inputs_per_window = inputs_per_window  # 2: a pair's sentences, cached apart, rows stacked

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, object]:
        first = index * self.inputs_per_window
        rows = [self.cached.window(first + part, self.slots) for part in range(self.inputs_per_window)]
        return {
            "features": rows[0] if len(rows) == 1 else torch.cat(rows),
            "labels": self.windows[index].labels,
            "window_index": index,
        }

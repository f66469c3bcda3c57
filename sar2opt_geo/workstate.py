"""Resumable work state of one translate run, kept beside the output in ``.OUTPUT.work/``.

- ``blocks/BI-BJ.npy``: each finished output block, uint8 RGB then its validity mask (two ``.npy`` arrays
  in one file, written under a temporary name and renamed), then the same two arrays of each overview
  level the block computed for the COG (:mod:`sar2opt_geo.pyramid`), half resolution first. Plain array
  files, not a Zarr store: with zarr 3's default codec and its per-write overhead, storing and reading
  back the blocks of a 3072² output took 0.37-0.43 CPU-seconds, as ``.npy`` files 0.04 (issue #15). They
  are uncompressed (4 bytes a pixel, like the staging GeoTIFF) and removed with the rest of the state when
  the run ends;
- ``done/BI-BJ.json``: a record per finished block (written after its block file, so a record always means
  the block is on disk), with its evaluation count;
- ``spill/BI-BJ.npy``: the weighted partial sums a block's tiles spill into its right/lower neighbours
  (two strips of ``overlap`` pixels), so a finished block's tiles are never evaluated again on resume;
- ``state.json``: the fingerprint of the inputs and options; ``--resume`` refuses state made with others.

A successful run removes the directory; a crash, a lost client or Ctrl-C leaves it for ``--resume``.
Hand-written: plain files and atomic renames (numpy's ``.npy`` format for the arrays).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import uuid
from pathlib import Path

import numpy as np

from sar2opt_geo.errors import OutputError, UsageError

log = logging.getLogger(__name__)


class WorkState:
    def __init__(self, output: str | os.PathLike):
        out = Path(output)
        self.root = out.with_name(f".{out.name}.work")

    @classmethod
    def at(cls, root: str | os.PathLike) -> WorkState:
        """The state whose directory is ``root`` (how tasks, given only that path, reach it)."""
        ws = cls.__new__(cls)
        ws.root = Path(root)
        return ws

    @property
    def store(self) -> Path:
        """The folder of finished blocks."""
        return self.root / "blocks"

    def _block(self, key: str) -> Path:
        return self.store / f"{key}.npy"

    def _done(self, key: str) -> Path:
        return self.root / "done" / f"{key}.json"

    def _spill(self, key: str) -> Path:
        return self.root / "spill" / f"{key}.npy"

    # ---------------------------------------------------------------------------------------- lifecycle

    def begin(self, fingerprint: dict, resume: bool) -> bool:
        """Create (or, with ``resume``, reopen) the state. Returns True when resuming existing state."""
        fp = json.dumps(fingerprint, sort_keys=True, default=str)
        state = self.root / "state.json"
        if resume and state.exists():
            if state.read_text() != fp:
                raise UsageError(
                    f"{self.root}: the saved work state was made with other inputs or options; "
                    "rerun without --resume to start again"
                )
            if self.store.exists():
                log.info("resuming: %d blocks already done", len(self.done_records()))
                return True
        if resume:
            log.warning("nothing to resume at %s; starting from the beginning", self.root)
        self.discard()
        (self.root / "done").mkdir(parents=True)
        (self.root / "spill").mkdir()
        self.store.mkdir()
        tmp = state.with_suffix(".tmp")
        tmp.write_text(fp)
        os.replace(tmp, state)
        return False

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # ----------------------------------------------------------------------------------- block records

    def done_records(self) -> dict[str, dict]:
        d = self.root / "done"
        if not d.is_dir():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in d.glob("*.json")}

    def done_record(self, key: str) -> dict:
        """The record :meth:`mark_done` saved for a finished block."""
        return json.loads(self._done(key).read_text())

    def is_done(self, key: str) -> bool:
        return self._done(key).exists()

    def mark_done(self, key: str, record: dict) -> None:
        path = self._done(key)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    def save_block(self, key: str, rgb: np.ndarray, valid: np.ndarray, overviews: list | tuple = ()) -> None:
        """Store finished block ``key``: ``rgb`` ``(bands, h, w)`` and ``valid`` ``(h, w)``, and its overview
        levels ``[(rgb, valid), ...]`` if any (atomically: a reader finds the whole block or none)."""
        _save_arrays(self._block(key), [a for pair in [(rgb, valid), *overviews] for a in pair])

    def load_block(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb, valid)`` of a block :meth:`save_block` stored."""
        with open(self._block(key), "rb") as f:
            return np.load(f, allow_pickle=False), np.load(f, allow_pickle=False)

    def load_block_levels(self, key: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(rgb, valid), ...]``: the block, then each overview level it stored (none: ``[block]``)."""
        arrays = _load_arrays(self._block(key))
        return list(zip(arrays[0::2], arrays[1::2], strict=True))

    def save_spill(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Store the named arrays of block ``key``'s spill (atomically)."""
        names = list(arrays)
        _save_arrays(self._spill(key), [np.array(names), *(arrays[n] for n in names)])

    def load_spill(self, key: str) -> dict[str, np.ndarray] | None:
        path = self._spill(key)
        if not path.exists():
            return None
        names, *arrays = _load_arrays(path)
        return dict(zip(names.tolist(), arrays, strict=True))


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    """``arrays`` as consecutive ``.npy`` records in one file, written under a temporary name and renamed
    (a reader finds all of them or the file is absent). No zip container: ``np.savez`` computes a CRC-32 of
    every byte (the spills of the 3072² bench scene 34-38 vs 18-22 ms, ``bench_speed.py --tasks``, #15)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            for a in arrays:
                np.save(f, np.ascontiguousarray(a), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _load_arrays(path: Path) -> list[np.ndarray]:
    """Every ``.npy`` record of a file :func:`_save_arrays` wrote."""
    out = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while f.tell() < size:
            out.append(np.load(f, allow_pickle=False))
    return out


class RunLock:
    """A lock on an output's work state (``.OUTPUT.work.lock`` beside it, outside the folder a fresh run
    deletes): a second run on the same output is refused, naming the first (pid, host, start time). A lock
    left by a dead process on this host is taken over; one from another host must be removed by hand.
    Created with ``O_CREAT | O_EXCL``: of two runs starting at once, exactly one gets it."""

    def __init__(self, output: str | os.PathLike):
        root = WorkState(output).root
        self.output = str(output)
        self.path = root.with_name(root.name + ".lock")
        self.held = False

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self._read()
                if other is not None and not self._stale(other):
                    raise OutputError(
                        f"{self.output}: another run is writing this output (pid {other.get('pid')} on "
                        f"{other.get('host')}, started {other.get('started')}); wait for it to end or stop "
                        f"it (if it is gone, remove {self.path})"
                    ) from None
                log.warning("taking over the stale lock %s (%s)", self.path, other)
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise OutputError(f"{self.output}: cannot lock its work state ({self.path})")

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None  # half-written by a run that died while creating it: stale

    @staticmethod
    def _stale(other: dict) -> bool:
        if other.get("host") != socket.gethostname():
            return False  # cannot tell whether a process on another machine is alive
        try:
            os.kill(int(other["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, TypeError, ValueError):
            return False
        return False

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class InputCopies:
    """The folder beside an output where a run copies inputs that cannot be read window by window at any speed
    (:func:`sar2opt_geo.source.open_source`'s ``copy_dir``): ``.OUTPUT.inputs-ID/``, made on entry with an
    ``owner.json`` (pid, host, start time) and removed on exit, however the run ends. A run killed outright
    cannot remove its copies (gigabytes for a Sentinel-1 product), so entering also removes the folders of
    earlier runs on the same output whose process on this host is gone (those of a live process, or of
    another host, or without a readable owner, are left alone)."""

    def __init__(self, output: str | os.PathLike):
        out = Path(output)
        self.output = out
        self.root = out.with_name(f".{out.name}.inputs-{uuid.uuid4().hex[:8]}")

    def stale(self) -> list[Path]:
        """Copy folders of earlier runs on this output whose process on this host is gone."""
        found = []
        for folder in self.output.parent.glob(glob.escape(f".{self.output.name}.inputs-") + "*"):
            if folder == self.root or not folder.is_dir():
                continue
            try:
                owner = json.loads((folder / "owner.json").read_text())
            except (OSError, ValueError):
                continue
            if isinstance(owner, dict) and RunLock._stale(owner):
                found.append(folder)
        return found

    def __enter__(self) -> Path:
        for folder in self.stale():
            log.info("removing %s, the input copies of a run that is gone", folder)
            shutil.rmtree(folder, ignore_errors=True)
        self.root.mkdir()
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "output": str(self.output)}
        (self.root / "owner.json").write_text(json.dumps(me))
        return self.root

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def kept_summary(ws: WorkState) -> tuple[int, int]:
    """``(finished blocks, bytes on disk)`` of a work state (what an interruption keeps)."""
    total = 0
    for dirpath, _, files in os.walk(ws.root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(dirpath, f))
    return len(ws.done_records()), total


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def fingerprint_file(path: str) -> dict:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]

"""Resumable work state of one translate run, kept beside the output in ``.OUTPUT.work/``.

- ``blocks.zarr``: the finished output blocks (uint8 RGB + validity), chunked exactly by block;
- ``done/BI-BJ.json``: a record per finished block (written after its Zarr chunk, so a record always means
  the block is on disk), with its evaluation count;
- ``spill/BI-BJ.npz``: the weighted partial sums a block's tiles spill into its right/lower neighbours
  (two strips of ``overlap`` pixels), so a finished block's tiles are never evaluated again on resume;
- ``state.json``: the fingerprint of the inputs and options; ``--resume`` refuses state made with others.

A successful run removes the directory; a crash, a lost client or Ctrl-C leaves it for ``--resume``.
Hand-written: plain files and atomic renames; the block data itself is Zarr.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from sar2opt_geo.errors import UsageError

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
        return self.root / "blocks.zarr"

    def _done(self, key: str) -> Path:
        return self.root / "done" / f"{key}.json"

    def _spill(self, key: str) -> Path:
        return self.root / "spill" / f"{key}.npz"

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

    def save_spill(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        path = self._spill(key)
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    def load_spill(self, key: str) -> dict[str, np.ndarray] | None:
        path = self._spill(key)
        if not path.exists():
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}


def fingerprint_file(path: str) -> dict:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]

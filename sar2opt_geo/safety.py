"""The input is sacred: one check, used by every command that writes a file, that the output cannot destroy
an input (issue #12 item 1).

An output would destroy an input when it *is* the input (same path, through a symbolic link, or a hard link
to the same inode: ``os.path.samefile`` compares ``st_dev`` and ``st_ino``), when it is a folder holding the
input (a Zarr output or a run folder replacing it), when it lies inside an input folder (a SAFE product, a
dataset folder, a Zarr store), or when it is, or lies inside, the work-state folder of a translate run
(``.NAME.work``), which that run deletes when it ends. :func:`refuse_collisions` raises
:class:`~sar2opt_geo.errors.OutputError` before anything is written, whatever ``--overwrite`` says.

Written by hand: plain path arithmetic on ``os.path.realpath`` (no library decides "would writing A destroy
B").
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from sar2opt_geo.errors import OutputError

#: Folders that are one product or store as a whole: an output inside one corrupts it.
PRODUCT_SUFFIXES = (".safe", ".zarr", ".sen3")
_WORK_STATE = re.compile(r"^\..+\.work$")


def _is_url(path: str) -> bool:
    return "://" in path


def _within(child: str, parent: str) -> bool:
    return child.startswith(parent.rstrip(os.sep) + os.sep)


def collision(output: str | os.PathLike, protected: str | os.PathLike) -> str | None:
    """How writing ``output`` would destroy ``protected`` (a file or a folder), as a phrase that reads
    "OUTPUT <phrase> PROTECTED", or ``None`` when it would not."""
    output, protected = os.fspath(output), os.fspath(protected)
    if _is_url(output) or _is_url(protected):
        return None if output != protected else "is"
    out_abs, p_abs = os.path.abspath(output), os.path.abspath(protected)
    out_real, p_real = os.path.realpath(output), os.path.realpath(protected)
    if out_abs == p_abs:
        return "is"
    if out_real == p_real:
        return "is (through a symbolic link)"
    try:
        if os.path.exists(output) and os.path.exists(protected) and os.path.samefile(output, protected):
            return "is a hard link to"
    except OSError:
        pass
    if _within(p_real, out_real):
        return "is a folder holding"
    if os.path.isdir(p_real) and _within(out_real, p_real):
        return "is inside the folder"
    for folder in Path(p_real).parents:
        if folder.name.lower().endswith(PRODUCT_SUFFIXES) and _within(out_real, str(folder)):
            return f"is inside the product folder {folder} of"
    return None


def work_state_folder(path: str | os.PathLike) -> Path | None:
    """The translate work-state folder (``.NAME.work``) that ``path`` is or lies in, else ``None``."""
    p = Path(os.path.realpath(os.fspath(path)))
    for part in (p, *p.parents):
        if _WORK_STATE.match(part.name) and (part / "state.json").exists():
            return part
    return None


def refuse_collisions(
    output: str | os.PathLike, protected: Iterable[tuple[str, str | os.PathLike | None]]
) -> None:
    """Raise :class:`OutputError` when writing ``output`` would destroy one of ``protected`` — pairs
    ``(what, path)`` such as ``("input", "scene.tif")``; ``None`` paths are skipped — or the work state of
    a translate run. Call it before anything is written; ``--overwrite`` does not lift it."""
    output = os.fspath(output)
    for what, path in protected:
        if path is None or path == "":
            continue
        why = collision(output, path)
        if why:
            raise OutputError(
                f"{output}: the output {why} the {what} {os.fspath(path)}; writing it would destroy the "
                f"{what.split()[0]}: choose another output path"
            )
    ws = work_state_folder(output)
    if ws is not None:
        raise OutputError(
            f"{output}: the output is inside the work-state folder {ws} of a translate run (it is deleted "
            "when that run ends): choose another output path"
        )


def absolute(path: str | os.PathLike | None) -> str | None:
    """``path`` made absolute (URLs and ``None`` unchanged): what is sent to workers whose working directory
    is not the client's."""
    if path is None:
        return None
    path = os.fspath(path)
    return path if _is_url(path) else os.path.abspath(path)

"""Crash-safe file writes: build beside the target, fsync, rename, fsync the folder.

After a crash a reader sees the old version or the new one, never a mix. A leftover
`.tmp-*` sibling is harmless garbage that the next write of the same target removes.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex}")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_file_synced(path: Path, data: bytes) -> None:
    """Write a new file and fsync it (inside a folder that create_dir_atomic renames)."""
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def save_array(folder: Path, name: str, array: npt.NDArray[Any]) -> None:
    """name.npy in folder, fsynced (the caller makes the folder appear atomically)."""
    with (folder / f"{name}.npy").open("wb") as fh:
        np.save(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def create_dir_atomic(target: Path, fill: Callable[[Path], None]) -> bool:
    """Create `target` filled by `fill(tmp_folder)` in one rename; False if it already exists.

    `fill` must fsync what it writes (see save_array). The rename of a folder onto an existing
    non-empty folder fails, which is what makes "publish once" hold even between processes.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return False
    tmp = target.with_name(f".tmp-{target.name}-{uuid.uuid4().hex}")
    tmp.mkdir()
    try:
        fill(tmp)
        fsync_dir(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if target.exists():
                return False
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(target.parent)
    return True


def remove_tree(target: Path) -> None:
    """Remove a folder so that it disappears at once: rename it aside first, then delete."""
    if not target.exists():
        return
    doomed = target.with_name(f".del-{target.name}-{uuid.uuid4().hex}")
    target.rename(doomed)
    fsync_dir(target.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def clean_leftovers(folder: Path) -> None:
    """Remove `.tmp-*` and `.del-*` entries a crash may have left in `folder`."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.name.startswith((".tmp-", ".del-")):
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

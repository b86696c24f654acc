"""Index snapshots on disk: a folder written beside the target, fsynced, then swapped in."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

META_FILE = "meta.json"


def write_snapshot(path: Path, meta: dict[str, Any], write_files: Callable[[Path], None]) -> None:
    """Readers see the old snapshot or the new one, never a half-written folder."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write_files(tmp)
    (tmp / META_FILE).write_text(json.dumps(meta, sort_keys=True))
    for child in tmp.iterdir():
        with child.open("rb") as fh:
            os.fsync(fh.fileno())
    old = path.with_name(path.name + ".old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        path.replace(old)
    tmp.replace(path)
    if old.exists():
        shutil.rmtree(old)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_snapshot_meta(path: Path, kind: str) -> tuple[dict[str, Any], Path]:
    """The snapshot's meta and the folder holding it, checked to be of the expected kind."""
    meta_path = path / META_FILE
    if not meta_path.exists():
        old = path.with_name(path.name + ".old")
        if (old / META_FILE).exists():  # a crash between the two renames: the old one is whole
            meta_path = old / META_FILE
            path = old
        else:
            raise FileNotFoundError(f"no index snapshot in {path}")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if meta.get("kind") != kind:
        raise ValueError(f"snapshot in {path} is a {meta.get('kind')!r} index, not {kind!r}")
    return meta, path

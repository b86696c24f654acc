"""The tables of docs/results/round.md from the JSON that benchmarks/round.py writes.

The prose around the tables (what was measured, the drift model, the verdicts) lives beside
the page as `<name>_notes.md` (`round_notes.md` for `round.md`) and is copied under the
tables, so a re-run keeps it (`write_page`, which the side-by-side pages of join_order.py and
pass_join.py use too).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

_PARTS = ("graph", "estimation", "selection", "planning", "publish")


def write_markdown(document: dict[str, Any], path: Path) -> None:
    lines = [
        "# A round at scale: graph upkeep, the round's parts, memory",
        "",
        f"Made on this machine ({document['machine']}, shared with other work) by:",
        "",
        *(f"    {command}" for command in _commands(document)),
        "",
        "`seconds`: the whole round for the product's keepers (`product*`) and `before` (graph",
        "upkeep, estimation, selection, planning, publishing), the graph upkeep alone for a",
        "peer.",
        "`later`: medians over the later rounds; recall@10 is the lowest of them. `CPU s`: the",
        "CPU seconds of those (all threads; not stored before the 100k runs). Resident: RSS",
        "before the round (the job at rest, with the rows that wait for it) and after it, once",
        "the allocator is trimmed as the service does after publishing.",
        "",
        "| keeper | n | drift | round | seconds (median) | CPU s | recall@10 (by round) | "
        + " | ".join(_PARTS)
        + " | peak RSS MB (x raw f32) | resident MB before, after (x raw) |",
        "|---|---|---|---|---|---|---|" + "---|" * len(_PARTS) + "---|---|",
    ]
    for row in document["rows"]:
        parts = row["parts"]
        cells = [f"{parts[p]:.2f}" if p in parts else "-" for p in _PARTS]
        by_round = ", ".join(f"{r:.3f}" for r in row["recall_by_round"])
        ratio = row["peak_rss_mb"] / row["raw_vectors_mb"]
        cpu = f"{parts['cpu']:.2f}" if "cpu" in parts else "-"
        lines.append(
            f"| {row['keeper']} | {row['n']} | {row.get('drift', 'modelled')} | {row['round']} | "
            f"{row['seconds_median']:.2f} | "
            f"{cpu} | "
            f"{row['recall_at_10']:.3f} ({by_round}) | "
            + " | ".join(cells)
            + f" | {row['peak_rss_mb']:.0f} ({ratio:.2f}x) | {_resident(row)} |"
        )
    write_page(lines, path)


def write_page(lines: list[str], path: Path) -> None:
    """The page: `lines`, then the prose kept by hand beside it in `<name>_notes.md`."""
    notes = path.with_name(f"{path.stem}_notes.md")
    if notes.exists():
        lines = [*lines, "", notes.read_text().rstrip()]
    path.write_text("\n".join(lines) + "\n")


def save_results(
    document: dict[str, Any],
    json_path: Path,
    markdown_path: Path,
    write_markdown: Callable[[dict[str, Any], Path], None],
) -> None:
    """A benchmark's JSON document, and its page made from it."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    write_markdown(document, markdown_path)


def _resident(row: dict[str, Any]) -> str:
    """RSS before the round and after it (trimmed, as the service does); rows made before
    this was measured have none."""
    parts, raw = row["parts"], row["raw_vectors_mb"]
    if "rss_after_mb" not in parts:
        return "-"
    before, after = parts["rss_before_mb"], parts["rss_after_mb"]
    return f"{before:.0f} ({before / raw:.2f}x), {after:.0f} ({after / raw:.2f}x)"


def _commands(document: dict[str, Any]) -> list[str]:
    command = document["command"]
    return [command] if isinstance(command, str) else list(command)

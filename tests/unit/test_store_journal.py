"""The local store's journal: a torn tail from a crash is dropped, damage elsewhere is loud."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_selection.adapters.local_store import LocalScoreStore
from grace_selection.adapters.segment_log import SegmentLog
from grace_selection.adapters.store_records import StoreError


def write_records(folder: Path, payloads: list[bytes]) -> tuple[Path, list[int]]:
    """The segment written and the file size after each record."""
    log = SegmentLog.open(folder)
    sizes = []
    for i, payload in enumerate(payloads, start=1):
        log.append(i, "scores", f"b{i}", payload)
        sizes.append(sorted(folder.glob("*.log"))[0].stat().st_size)
    log.close()
    (segment,) = sorted(folder.glob("*.log"))
    return segment, sizes


@settings(max_examples=40, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=0, max_size=64), min_size=1, max_size=6),
    cut=st.integers(min_value=1, max_value=10_000),
)
def test_a_torn_last_record_is_dropped_and_the_rest_kept(
    tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes], cut: int
) -> None:
    folder = tmp_path_factory.mktemp("log")
    segment, sizes = write_records(folder, payloads)
    whole = segment.read_bytes()
    good = sizes[-2] if len(sizes) > 1 else 0
    # Cut somewhere inside the last record, as a kill -9 in the middle of a write would.
    segment.write_bytes(whole[: good + cut % (len(whole) - good)])
    log = SegmentLog.open(folder)
    entries = list(log.read())
    assert [e.payload for e in entries] == payloads[:-1]
    assert segment.stat().st_size == good
    # The log goes on where the good records end.
    log.append(len(payloads), "scores", "again", b"after the crash")
    assert [e.batch_id for e in log.read()][-1] == "again"


def test_garbage_appended_after_the_last_record_is_dropped(tmp_path: Path) -> None:
    segment, _ = write_records(tmp_path, [b"one", b"two"])
    size = segment.stat().st_size
    with segment.open("ab") as fh:
        fh.write(b"\x00" * 37)  # a file extended by a crash but never written
    assert [e.payload for e in SegmentLog.open(tmp_path).read()] == [b"one", b"two"]
    assert segment.stat().st_size == size


def test_a_flipped_payload_byte_in_the_last_record_is_a_torn_write(tmp_path: Path) -> None:
    segment, _ = write_records(tmp_path, [b"one", b"two"])
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert [e.payload for e in SegmentLog.open(tmp_path).read()] == [b"one"]


def test_damage_in_a_sealed_segment_raises(tmp_path: Path) -> None:
    log = SegmentLog.open(tmp_path)
    log.append(1, "scores", "a", b"first segment")
    log.roll()
    log.append(2, "scores", "b", b"second segment")
    log.close()
    first = sorted(tmp_path.glob("*.log"))[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        list(SegmentLog.open(tmp_path).read())


def test_local_store_recovers_batches_after_a_torn_tail(tmp_path: Path) -> None:
    store = LocalScoreStore(tmp_path)
    store.create_job("job", b"{}")
    store.append_batch("job", "scores", "kept", b"x" * 50)
    store.append_batch("job", "scores", "torn", b"y" * 50)
    store.close()
    (segment,) = sorted((tmp_path / "jobs/job/log").glob("*.log"))
    segment.write_bytes(segment.read_bytes()[:-10])
    reopened = LocalScoreStore(tmp_path)
    assert reopened.append_batch("job", "scores", "kept", b"x" * 50).duplicate
    # The torn batch was never acknowledged, so sending it again applies it.
    again = reopened.append_batch("job", "scores", "torn", b"y" * 50)
    assert (again.duplicate, again.seq) == (False, 2)
    assert [e.batch_id for e in reopened.read_log("job")] == ["kept", "torn"]

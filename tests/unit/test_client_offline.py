"""The client's parts that need no server: backoff, Retry-After, the disk cache, payloads."""

from __future__ import annotations

import email.utils
import hashlib
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_client import CoresetClient, IndexSlice, RoundCache
from grace_client.backoff import RetryPolicy, parse_retry_after
from grace_client.payloads import decode_index_slice, encode_index_slice, sha256_of_sorted
from grace_proto.frames import FrameError, decode_frame, encode_frame
from grace_proto.models import RoundManifest, RoundStatus, SelectionConfigModel


def _slice(round_: int = 3, rank: int = 1, world: int = 2, n: int = 5) -> IndexSlice:
    ids = np.arange(10, 10 + n, dtype=np.int64)
    return IndexSlice(
        job_id="job-a",
        round=round_,
        rank=rank,
        world=world,
        indices=ids,
        weights=np.linspace(1, 2, n, dtype=np.float32),
        total=2 * n,
        indices_sha256="ab" * 32,
    )


def _manifest(round_: int, status: RoundStatus = RoundStatus.PUBLISHED) -> RoundManifest:
    return RoundManifest(
        job_id="job-a",
        round=round_,
        status=status,
        count=4,
        indices_sha256="cd" * 32,
        config=SelectionConfigModel(),
        seed=7,
        created_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
    )


@given(attempt=st.integers(1, 30), base=st.floats(0.01, 1.0), cap_factor=st.floats(1.0, 100.0))
def test_backoff_is_jittered_below_a_capped_exponential(
    attempt: int, base: float, cap_factor: float
) -> None:
    policy = RetryPolicy(retries=5, base=base, cap=base * cap_factor, rng=random.Random(attempt))
    delay = policy.delay(attempt)
    assert 0.0 <= delay <= min(policy.cap, base * 2.0 ** (attempt - 1)) + 1e-12


def test_backoff_honours_retry_after_clamped() -> None:
    policy = RetryPolicy(retries=3, base=0.1, cap=1.0, max_retry_after=5.0)
    assert policy.delay(1, retry_after=2.5) == 2.5
    assert policy.delay(4, retry_after=0.0) == 0.0
    assert policy.delay(1, retry_after=3600.0) == 5.0


def test_retry_policy_rejects_bad_settings_by_name() -> None:
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(retries=-1)
    with pytest.raises(ValueError, match="base"):
        RetryPolicy(base=2.0, cap=1.0)


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    parsed = parse_retry_after(date, now=now)
    assert parsed is not None
    assert math.isclose(parsed, 30.0, abs_tol=1.0)


def test_index_slice_survives_its_frame_round_trip() -> None:
    piece = _slice()
    meta, arrays = encode_index_slice(piece)
    back = decode_index_slice(decode_frame(encode_frame(meta, arrays)))
    assert (back.job_id, back.round, back.rank, back.world, back.total) == ("job-a", 3, 1, 2, 10)
    np.testing.assert_array_equal(back.indices, piece.indices)
    assert back.weights is not None
    assert piece.weights is not None
    np.testing.assert_array_equal(back.weights, piece.weights)


def test_index_frame_without_required_meta_names_the_field() -> None:
    body = encode_frame({"job_id": "j", "round": 0}, {"indices": np.arange(3, dtype=np.int64)})
    with pytest.raises(FrameError, match=r"meta\.rank"):
        decode_index_slice(decode_frame(body))
    wrong = encode_frame({}, {"indices": np.arange(3, dtype=np.int32)})
    with pytest.raises(FrameError, match=r"arrays\.indices\.dtype"):
        decode_index_slice(decode_frame(wrong))


def test_sha256_of_sorted_ignores_order() -> None:
    ids = np.array([5, 1, 9, 3], dtype=np.int64)
    expected = hashlib.sha256(np.sort(ids).astype("<i8").tobytes()).hexdigest()
    assert sha256_of_sorted(ids) == expected == sha256_of_sorted(ids[::-1].copy())


INC = "inc-a"


def test_cache_round_trips_slices_and_published_manifests(tmp_path: Path) -> None:
    cache = RoundCache(tmp_path)
    cache.put_slice(_slice(round_=3), INC)
    cache.put_slice(_slice(round_=5), INC)
    cache.put_slice(_slice(round_=9, rank=0), INC)  # another rank: not in rank 1's listing
    got = cache.get_slice("job-a", INC, 3, 1, 2)
    assert got is not None
    np.testing.assert_array_equal(got.indices, _slice().indices)
    assert cache.get_slice("job-a", INC, 4, 1, 2) is None
    assert cache.slice_rounds("job-a", INC, 1, 2) == [5, 3]
    latest = cache.latest_slice("job-a", INC, 1, 2)
    assert latest is not None
    assert latest.round == 5

    cache.put_manifest(_manifest(2), INC)
    cache.put_manifest(_manifest(3, RoundStatus.COMPUTING), INC)  # may still change: not kept
    assert cache.get_manifest("job-a", INC, 2) == _manifest(2)
    assert cache.get_manifest("job-a", INC, 3) is None


def test_cache_keeps_each_incarnation_of_a_job_apart(tmp_path: Path) -> None:
    """A job deleted and created again under its id has a round 0 of its own."""
    cache = RoundCache(tmp_path)
    cache.put_slice(_slice(round_=0), "old")
    cache.put_manifest(_manifest(0), "old")
    cache.remember_incarnation("job-a", "old")
    assert cache.get_slice("job-a", "new", 0, 1, 2) is None
    assert cache.get_manifest("job-a", "new", 0) is None
    assert cache.latest_slice("job-a", "new", 1, 2) is None
    assert cache.known_incarnation("job-a") == "old"
    cache.remember_incarnation("job-a", "new")
    assert cache.known_incarnation("job-a") == "new"
    assert cache.get_slice("job-a", "old", 0, 1, 2) is not None  # still there, never mixed


def test_cache_refuses_an_entry_of_another_incarnation(tmp_path: Path) -> None:
    cache = RoundCache(tmp_path)
    piece = _slice(round_=1)
    marked = IndexSlice(
        **{**{f: getattr(piece, f) for f in piece.__slots__}, "job_incarnation": "x"}
    )
    with pytest.raises(ValueError, match="incarnation"):
        cache.put_slice(marked, "y")
    with pytest.raises(ValueError, match="incarnation"):
        cache.get_slice("job-a", "../y", 1, 1, 2)


def test_cache_ignores_the_layout_before_incarnations(tmp_path: Path) -> None:
    """A slice cached by an older client (jobs/<job>/slices/...) is never served: nothing
    vouches for which job it came from."""
    cache = RoundCache(tmp_path)
    cache.put_slice(_slice(round_=0), INC)
    folder = tmp_path / "jobs" / "job-a"
    (folder / INC / "slices").rename(folder / "slices")
    assert cache.latest_slice("job-a", INC, 1, 2) is None
    assert cache.get_slice("job-a", INC, 0, 1, 2) is None


def test_cache_drops_a_corrupt_blob_instead_of_returning_it(tmp_path: Path) -> None:
    cache = RoundCache(tmp_path)
    cache.put_slice(_slice(round_=5), INC)
    cache.put_slice(_slice(round_=3), INC)
    pointer = tmp_path / "jobs" / "job-a" / INC / "slices" / "r5.k1.w2"
    blob = cache._blob_path(pointer.read_text().strip())
    blob.write_bytes(blob.read_bytes()[:-8] + b"\x01" * 8)  # a flipped tail
    assert cache.get_slice("job-a", INC, 5, 1, 2) is None
    assert not pointer.exists()
    assert not blob.exists()
    latest = cache.latest_slice("job-a", INC, 1, 2)
    assert latest is not None
    assert latest.round == 3


def test_cache_rejects_a_job_id_that_would_escape_its_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="job id"):
        RoundCache(tmp_path).get_slice("../x", INC, 0, 0, 1)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 50), round_=st.integers(0, 1000))
def test_cache_blob_names_are_their_sha256(n: int, round_: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        cache = RoundCache(root)
        cache.put_slice(_slice(round_=round_, n=n), INC)
        for blob in (Path(root) / "blobs").rglob("*"):
            if blob.is_file():
                assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_client_checks_arguments_before_any_request(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="base_url"):
        CoresetClient("127.0.0.1:8765", cache_dir=tmp_path)
    # Port 9 (discard) is never contacted: each call fails validation first.
    with CoresetClient("http://127.0.0.1:9", retries=0, cache_dir=tmp_path) as client:
        with pytest.raises(ValueError, match="rank"):
            client.get_indices("j", 0, rank=2, world=2)
        with pytest.raises(ValueError, match="loss, importance"):
            client.post_scores("j", [1, 2], round=0, batch_id="b")
        with pytest.raises(ValueError, match="loss: has 1 values"):
            client.post_scores("j", [1, 2], loss=[0.5], round=0, batch_id="b")
        with pytest.raises(ValueError, match="source"):
            client.post_scores("j", [1], loss=[1.0], source="x", round=0, batch_id="b")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="embeddings"):
            client.post_embeddings("j", [1, 2], np.zeros((3, 4)), batch_id="b", round=0)
        with pytest.raises(ValueError, match="round"):
            client.get_round("j", -1)
        with pytest.raises(ValueError, match="shard"):
            client.get_rescore_plan("j", 0, shard=3, of=2)

"""ScoreStore on Redis: packed little-endian arrays in fixed-size chunks, never a hash per sample.

- The batch log is a STREAM whose entry ids are `0-<seq>`; a Lua script checks the batch id,
  takes the next seq and appends in one atomic step, so a batch is applied once or not at all.
- Snapshots and round arrays are STRING chunks of `chunk_bytes` each (a 1M x 384 float32 matrix
  is 1.5 GB as 375 chunks of 4 MiB, where a hash per sample would cost ~120 B per float).
- A round is published inside WATCH + MULTI/EXEC: manifest, layout, chunks and the round set
  appear together, and an existing manifest makes the publish fail instead of overwriting it.

All keys come from `keys.RedisKeys`. Durability is that of the Redis server: run it with
`appendonly yes` (docker-compose does) so that an acknowledged batch survives a Redis restart.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.keys import DEFAULT_PREFIX, RedisKeys
from grace_selection.adapters.store_records import (
    AppendResult,
    LogEntry,
    RoundExistsError,
    StateSnapshot,
    StoredRound,
    StoreError,
    compute_checksum,
    format_batch_field,
    pack_array,
)

if TYPE_CHECKING:
    import redis

_KeyOf = Callable[[str, int], str]  # (array name, chunk number) -> Redis key
CHUNK_BYTES = 4 * 1024 * 1024
_READ_GROUP = 16  # chunks per MGET: bounds the size of one reply
_WRITE_GROUP_BYTES = 64 * 1024 * 1024  # bytes per pipeline flush when writing a snapshot
_LOG_PAGE = 8  # log entries per XRANGE call; entries can be tens of MB each

# KEYS: batches hash, seq counter, log stream, job spec. ARGV: field, kind, batch id, crc, payload.
_APPEND_LUA = """
if redis.call('EXISTS', KEYS[4]) == 0 then
  return redis.error_reply('GRACE_NO_JOB')
end
local known = redis.call('HGET', KEYS[1], ARGV[1])
if known then return {0, known} end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], '0-' .. seq, 'k', ARGV[2], 'b', ARGV[3], 'p', ARGV[5])
local value = ARGV[4] .. ':' .. seq
redis.call('HSET', KEYS[1], ARGV[1], value)
return {1, value}
"""

# KEYS: job spec, jobs set. ARGV: spec, job id.
_CREATE_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('SADD', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


_SNAPSHOT_READ_ATTEMPTS = 5


class RedisScoreStore:
    """Implements ScoreStore on one Redis database."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        chunk_bytes: int = CHUNK_BYTES,
        client: redis.Redis | None = None,
    ) -> None:
        import redis  # imported here: nothing heavy happens when the module is imported

        if chunk_bytes <= 0 or chunk_bytes % 8:
            raise ValueError(f"chunk_bytes must be a positive multiple of 8, got {chunk_bytes}")
        # Typed loosely on purpose: with decode_responses=False every reply is bytes, but
        # redis-py's annotations say `bytes | str` everywhere.
        self._redis: Any = client or redis.Redis.from_url(
            url, decode_responses=False, socket_connect_timeout=5.0, health_check_interval=30
        )
        self._errors: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)
        self._watch_error = redis.WatchError
        self._response_error = redis.ResponseError
        self._keys = RedisKeys(prefix)
        self._chunk = chunk_bytes
        self._append_script = self._redis.register_script(_APPEND_LUA)
        self._create_script = self._redis.register_script(_CREATE_LUA)
        self._url = url

    # -- lifecycle -------------------------------------------------------------------------

    def ping(self) -> None:
        with self._translated():
            self._redis.ping()

    def close(self) -> None:
        self._redis.close()

    # -- jobs ------------------------------------------------------------------------------

    def create_job(self, job_id: str, spec: bytes) -> bool:
        keys = [self._keys.spec(job_id), self._keys.jobs()]
        with self._translated():
            return int(self._create_script(keys=keys, args=[spec, job_id])) == 1

    def read_jobs(self) -> dict[str, bytes]:
        with self._translated():
            ids = sorted(m.decode() for m in self._redis.smembers(self._keys.jobs()))
            specs = self._redis.mget([self._keys.spec(j) for j in ids]) if ids else []
        return {j: bytes(s) for j, s in zip(ids, specs, strict=True) if s is not None}

    def delete_job(self, job_id: str) -> None:
        with self._translated():
            self._redis.srem(self._keys.jobs(), job_id)
            doomed: list[bytes] = []
            for key in self._redis.scan_iter(match=self._keys.job_pattern(job_id), count=1000):
                doomed.append(key)
                if len(doomed) >= 1000:
                    self._redis.unlink(*doomed)
                    doomed = []
            if doomed:
                self._redis.unlink(*doomed)

    def put_document(self, job_id: str, name: str, data: bytes) -> None:
        with self._translated():
            self._require_job(job_id)
            self._redis.set(self._keys.document(job_id, name), data)

    def get_document(self, job_id: str, name: str) -> bytes | None:
        with self._translated():
            value = self._redis.get(self._keys.document(job_id, name))
        return None if value is None else bytes(value)

    # -- the batch log ---------------------------------------------------------------------

    def append_batch(self, job_id: str, kind: str, batch_id: str, payload: bytes) -> AppendResult:
        k = self._keys
        keys = [k.batches(job_id), k.seq(job_id), k.log(job_id), k.spec(job_id)]
        field = format_batch_field(kind, batch_id)
        args: list[Any] = [field, kind, batch_id, str(compute_checksum(payload)), payload]
        with self._translated():
            try:
                applied, value = self._append_script(keys=keys, args=args)
            except self._response_error as exc:
                if "GRACE_NO_JOB" in str(exc):
                    raise StoreError(f"job {job_id!r} does not exist in Redis") from exc
                raise
        crc, seq = bytes(value).decode().split(":")
        return AppendResult(seq=int(seq), duplicate=int(applied) == 0, checksum=int(crc))

    def read_log(self, job_id: str, after_seq: int = 0) -> Iterator[LogEntry]:
        key = self._keys.log(job_id)
        last = after_seq
        while True:
            with self._translated():
                page = self._redis.xrange(key, min=f"(0-{last}", max="+", count=_LOG_PAGE)
            if not page:
                return
            for entry_id, fields in page:
                last = int(bytes(entry_id).split(b"-")[1])
                yield LogEntry(
                    seq=last,
                    kind=bytes(fields[b"k"]).decode(),
                    batch_id=bytes(fields[b"b"]).decode(),
                    payload=bytes(fields[b"p"]),
                )

    # -- snapshots -------------------------------------------------------------------------

    def write_snapshot(self, job_id: str, snapshot: StateSnapshot) -> None:
        k = self._keys
        with self._translated():
            old = self._redis.hgetall(k.snapshot(job_id))
            old_gen = int(old[b"gen"]) if old else 0
            gen = old_gen + 1
            layout = self._write_chunks(
                snapshot.arrays, lambda name, i: k.snapshot_chunk(job_id, gen, name, i)
            )
            with self._redis.pipeline(transaction=True) as pipe:
                mapping = {"gen": gen, "seq": snapshot.seq, "layout": json.dumps(layout)}
                pipe.hset(k.snapshot(job_id), mapping=mapping)  # type: ignore[arg-type]
                # Entries the snapshot covers are dropped in the same transaction.
                pipe.xtrim(k.log(job_id), minid=f"0-{snapshot.seq + 1}", approximate=False)
                pipe.execute()
            if old:
                stale = [
                    k.snapshot_chunk(job_id, old_gen, spec["name"], i)
                    for spec in json.loads(old[b"layout"])
                    for i in range(spec["chunks"])
                ]
                for start in range(0, len(stale), 1000):
                    self._redis.unlink(*stale[start : start + 1000])

    def read_snapshot(self, job_id: str) -> StateSnapshot | None:
        k = self._keys
        with self._translated():
            # A compaction may swap in a newer generation (and unlink this one's chunks)
            # between reading the meta and the chunks: then read the newer one.
            for _ in range(_SNAPSHOT_READ_ATTEMPTS):
                meta = self._redis.hgetall(k.snapshot(job_id))
                if not meta:
                    return None
                gen = int(meta[b"gen"])
                key_of = functools.partial(k.snapshot_chunk, job_id, gen)
                try:
                    arrays = self._read_arrays(json.loads(meta[b"layout"]), key_of)
                except StoreError:
                    now = self._redis.hget(k.snapshot(job_id), "gen")
                    if now is not None and int(now) != gen:
                        continue
                    raise
                return StateSnapshot(seq=int(meta[b"seq"]), arrays=arrays)
        raise StoreError(f"the snapshot of job {job_id!r} kept changing while being read")

    # -- rounds ----------------------------------------------------------------------------

    def publish_round(self, job_id: str, stored: StoredRound) -> None:
        k, r = self._keys, stored.round
        manifest_key = k.round_manifest(job_id, r)
        arrays = {name: pack_array(name, value) for name, value in stored.arrays.items()}
        with self._translated(), self._redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(manifest_key, k.spec(job_id))
                if pipe.exists(manifest_key):
                    raise RoundExistsError(f"round {r} of job {job_id!r} is already published")
                if not pipe.exists(k.spec(job_id)):
                    raise StoreError(f"job {job_id!r} does not exist in Redis")
                pipe.multi()
                layout = []
                for name, value in arrays.items():
                    spec = _layout_of(name, value, self._chunk)
                    layout.append(spec)
                    for i, chunk in enumerate(_chunks_of(value, self._chunk)):
                        pipe.set(k.round_chunk(job_id, r, name, i), chunk)
                pipe.set(k.round_layout(job_id, r), json.dumps(layout))
                pipe.set(manifest_key, stored.manifest)
                pipe.zadd(k.rounds(job_id), {str(r): r})
                pipe.execute()
            except self._watch_error as exc:
                raise RoundExistsError(
                    f"round {r} of job {job_id!r} was published concurrently"
                ) from exc

    def read_round(self, job_id: str, round_: int) -> StoredRound | None:
        k = self._keys
        with self._translated():
            manifest, layout = self._redis.mget(
                [k.round_manifest(job_id, round_), k.round_layout(job_id, round_)]
            )
            if manifest is None or layout is None:
                return None
            arrays = self._read_arrays(
                json.loads(layout), lambda name, i: k.round_chunk(job_id, round_, name, i)
            )
        return StoredRound(round=round_, manifest=bytes(manifest), arrays=arrays)

    def read_round_values(
        self, job_id: str, round_: int, name: str, ids: npt.NDArray[np.int64]
    ) -> npt.NDArray[Any] | None:
        k = self._keys
        with self._translated():
            layout = self._redis.get(k.round_layout(job_id, round_))
            spec = next((s for s in json.loads(layout or b"[]") if s["name"] == name), None)
            if spec is None or len(spec["shape"]) != 1:
                return None
            dtype = np.dtype(spec["dtype"])
            idx = np.asarray(ids, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= spec["shape"][0]):
                raise IndexError(f"{name}: ids must be in [0, {spec['shape'][0] - 1}]")
            # GETRANGE reads a few bytes of a chunk instead of the whole array.
            with self._redis.pipeline(transaction=False) as pipe:
                for offset in (idx * dtype.itemsize).tolist():
                    chunk, within = divmod(offset, spec["chunk_bytes"])
                    key = k.round_chunk(job_id, round_, name, chunk)
                    pipe.getrange(key, within, within + dtype.itemsize - 1)
                parts = pipe.execute()
        return np.frombuffer(b"".join(parts), dtype=dtype).copy()

    def read_manifests(self, job_id: str) -> dict[int, bytes]:
        k = self._keys
        with self._translated():
            rounds = [int(r) for r in self._redis.zrange(k.rounds(job_id), 0, -1)]
            values = (
                self._redis.mget([k.round_manifest(job_id, r) for r in rounds]) if rounds else []
            )
        return {r: bytes(v) for r, v in zip(rounds, values, strict=True) if v is not None}

    # -- internals -------------------------------------------------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise StoreError(f"Redis at {_redacted(self._url)} is unreachable: {exc}") from exc

    def _require_job(self, job_id: str) -> None:
        if not self._redis.exists(self._keys.spec(job_id)):
            raise StoreError(f"job {job_id!r} does not exist in Redis")

    def _write_chunks(
        self, arrays: Mapping[str, npt.NDArray[Any]], key_of: _KeyOf
    ) -> list[dict[str, Any]]:
        layout: list[dict[str, Any]] = []
        pending = 0
        with self._redis.pipeline(transaction=False) as pipe:
            for name, raw in arrays.items():
                value = pack_array(name, raw)
                layout.append(_layout_of(name, value, self._chunk))
                for i, chunk in enumerate(_chunks_of(value, self._chunk)):
                    pipe.set(key_of(name, i), chunk)
                    pending += len(chunk)
                    if pending >= _WRITE_GROUP_BYTES:
                        pipe.execute()
                        pending = 0
            pipe.execute()
        return layout

    def _read_arrays(
        self, layout: list[dict[str, Any]], key_of: _KeyOf
    ) -> dict[str, npt.NDArray[Any]]:
        arrays: dict[str, npt.NDArray[Any]] = {}
        for spec in layout:
            dtype = np.dtype(spec["dtype"])
            shape = tuple(spec["shape"])
            buf = bytearray(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
            offset = 0
            for start in range(0, spec["chunks"], _READ_GROUP):
                stop = min(start + _READ_GROUP, spec["chunks"])
                parts = self._redis.mget([key_of(spec["name"], i) for i in range(start, stop)])
                for i, part in zip(range(start, stop), parts, strict=True):
                    if part is None:
                        raise StoreError(f"chunk {i} of array {spec['name']!r} is missing")
                    buf[offset : offset + len(part)] = part
                    offset += len(part)
            if offset != len(buf):
                raise StoreError(f"array {spec['name']!r} has {offset} of {len(buf)} bytes")
            arrays[spec["name"]] = np.frombuffer(buf, dtype=dtype).reshape(shape)
        return arrays


def _layout_of(name: str, value: npt.NDArray[Any], chunk_bytes: int) -> dict[str, Any]:
    chunks = max(1, -(-value.nbytes // chunk_bytes))
    return {
        "name": name,
        "dtype": value.dtype.str,
        "shape": list(value.shape),
        "chunks": chunks,
        "chunk_bytes": chunk_bytes,
    }


def _chunks_of(value: npt.NDArray[Any], chunk_bytes: int) -> Iterator[memoryview]:
    """Zero-copy views of the array's bytes; an empty array is one empty chunk."""
    flat = np.ascontiguousarray(value).reshape(-1).view(np.uint8).data
    if not len(flat):
        yield flat
        return
    for start in range(0, len(flat), chunk_bytes):
        yield flat[start : start + chunk_bytes]


def _redacted(url: str) -> str:
    """The URL without a password, fit for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"

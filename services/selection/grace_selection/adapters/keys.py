"""Every Redis key the service uses, built in this one module.

A job's keys share the hash tag `{job}` so that they live in one slot: the MULTI/EXEC blocks
and Lua scripts that touch several of them stay valid on a Redis Cluster too.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "grace:v1"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Key names under one prefix; the prefix lets several deployments share a database."""

    prefix: str = DEFAULT_PREFIX

    def jobs(self) -> str:
        """SET of job ids."""
        return f"{self.prefix}:jobs"

    def job_pattern(self, job_id: str) -> str:
        """SCAN pattern matching every key of one job (job ids hold no glob characters)."""
        return f"{self._job(job_id)}:*"

    def spec(self, job_id: str) -> str:
        """STRING: the job's spec JSON."""
        return f"{self._job(job_id)}:spec"

    def document(self, job_id: str, name: str) -> str:
        """STRING: a small named document (the checkpoint)."""
        return f"{self._job(job_id)}:doc:{name}"

    def batches(self, job_id: str) -> str:
        """HASH: "kind:batch_id" -> "crc32:seq" of every applied batch."""
        return f"{self._job(job_id)}:batches"

    def seq(self, job_id: str) -> str:
        """STRING counter: the last log seq handed out."""
        return f"{self._job(job_id)}:seq"

    def log(self, job_id: str) -> str:
        """STREAM: the batch log, entry ids 0-<seq>, fields k (kind), b (batch id), p (payload)."""
        return f"{self._job(job_id)}:log"

    def snapshot(self, job_id: str) -> str:
        """HASH: the current snapshot's generation, covered seq and array layout."""
        return f"{self._job(job_id)}:snap"

    def snapshot_chunk(self, job_id: str, generation: int, name: str, chunk: int) -> str:
        """STRING: one fixed-size chunk of a snapshot array's packed bytes."""
        return f"{self._job(job_id)}:snap:{generation}:{name}:{chunk}"

    def rounds(self, job_id: str) -> str:
        """ZSET: published round numbers (score = round)."""
        return f"{self._job(job_id)}:rounds"

    def round_manifest(self, job_id: str, round_: int) -> str:
        """STRING: a published round's manifest JSON, exactly as served."""
        return f"{self._job(job_id)}:round:{round_}:manifest"

    def round_layout(self, job_id: str, round_: int) -> str:
        """STRING: JSON list of the round's arrays (name, dtype, shape, chunks)."""
        return f"{self._job(job_id)}:round:{round_}:layout"

    def round_chunk(self, job_id: str, round_: int, name: str, chunk: int) -> str:
        """STRING: one fixed-size chunk of a round array's packed bytes."""
        return f"{self._job(job_id)}:round:{round_}:{name}:{chunk}"

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{{{job_id}}}"

"""A job's spec: what it was created with, stored as JSON and compared on re-create.

`incarnation` names one life of a job id: it is drawn when the job is created and stored with
the spec, so that a client can tell a job deleted and created again under the same id (or a
fresh service reusing an id) from the one whose rounds it cached. Specs stored before it
existed get one derived from their stored bytes: stable across restarts, distinct per creation
(the bytes hold the creation time).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from grace_proto.models import CreateJobRequest, SelectionConfigModel
from grace_selection.core.config import SelectionConfig, SelectionConfigError
from grace_selection.service.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class JobSpec:
    request: CreateJobRequest
    created_at: datetime
    config: SelectionConfig
    incarnation: str

    @property
    def job_id(self) -> str:
        return self.request.job_id

    @property
    def n(self) -> int:
        return self.request.n_samples

    @property
    def dim(self) -> int:
        return self.request.dim

    def to_bytes(self) -> bytes:
        body = {
            "request": self.request.model_dump(mode="json"),
            "created_at": self.created_at.isoformat(),
            "incarnation": self.incarnation,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> JobSpec:
        body = json.loads(raw)
        request = CreateJobRequest.model_validate(body["request"])
        incarnation = body.get("incarnation") or hashlib.sha256(raw).hexdigest()[:32]
        return cls(
            request,
            datetime.fromisoformat(body["created_at"]),
            build_core_config(request.config),
            str(incarnation),
        )

    @classmethod
    def new(cls, request: CreateJobRequest) -> JobSpec:
        """Validate what pydantic cannot see (config rules of the core, strata length)."""
        config = build_core_config(request.config)
        if request.strata is not None:
            read_initial_strata(request)  # raises on a bad length or a negative tag
        if request.text_source is not None and not request.text_source.lower().endswith(".jsonl"):
            raise InvalidInputError(
                'must be the path of a .jsonl file whose line i holds sample i as {"text": ...}',
                field="text_source",
            )
        return cls(request, datetime.now(UTC), config, uuid.uuid4().hex)

    def same_request(self, other: CreateJobRequest) -> bool:
        return self.request.model_dump(mode="json") == other.model_dump(mode="json")


def build_core_config(model: SelectionConfigModel) -> SelectionConfig:
    """The core's frozen config, with its validation errors named under `config.`."""
    try:
        return SelectionConfig.from_dict(model.model_dump())
    except SelectionConfigError as exc:
        raise InvalidInputError(exc.message, field=f"config.{exc.field}") from exc


def read_initial_strata(request: CreateJobRequest) -> npt.NDArray[np.int32] | None:
    """The stratum tags given at creation, checked; None if none were given."""
    if request.strata is None:
        return None
    if len(request.strata) != request.n_samples:
        raise InvalidInputError(
            f"has {len(request.strata)} tags but n_samples is {request.n_samples}; send one "
            "tag per sample, or none",
            field="strata",
        )
    strata = np.asarray(request.strata, dtype=np.int64)
    if strata.size and (strata.min() < 0 or strata.max() > np.iinfo(np.int32).max):
        raise InvalidInputError("tags must be integers in [0, 2^31 - 1]", field="strata")
    return strata.astype(np.int32)

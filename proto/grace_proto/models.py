"""JSON models of the v1 API, shared by the service, the client and the workers.

Names end in their role: `...Request` is what a caller sends, `...Response`/`...Manifest`
what the service answers. Bulk arrays never travel here; they travel as frames (frames.py).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from grace_proto.names import EstimationRule, ScoreSourceName, SelectorName

JOB_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
INT64_MAX = 2**63 - 1
# A sample id as JSON carries it: any integer an int64 holds (the job's range is checked later).
SampleId = Annotated[int, Field(ge=0, le=INT64_MAX)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SelectionConfigModel(_Model):
    """Mirrors grace_selection.core.SelectionConfig; the service validates it there."""

    budget_fraction: float = Field(0.1, gt=0, le=1)
    selector: SelectorName = "graph_message_passing"
    k: int = Field(10, ge=1, le=256)
    gamma: float = Field(1.0, ge=0)
    diversity_weight: float = Field(1.0, ge=0)
    noise_guard_fraction: float = Field(0.0, ge=0, le=0.5)
    stochastic_epsilon: float = Field(0.01, gt=0, le=1)
    rescore_fraction: float = Field(0.3, ge=0, le=1)
    rescore_priority_fraction: float = Field(0.5, ge=0, le=1)
    estimation_rule: EstimationRule = "delta"
    smooth_strength: float = Field(1.0, ge=0)
    drift_threshold: float = Field(0.1, ge=0, le=2)
    importance_weight: float = Field(1.0, ge=0, le=1)
    stratum_budgets: dict[int, float] | None = None
    weighted: bool = True
    sampling_power: float = Field(1.0, ge=0)
    unscored_rank: float = Field(0.5, gt=0, le=1)


class CreateJobRequest(_Model):
    job_id: str = Field(pattern=JOB_ID_PATTERN, description="lowercase letters, digits, . _ -")
    n_samples: int = Field(gt=0, le=200_000_000)
    dim: int = Field(gt=0, le=8192, description="embedding dimension")
    config: SelectionConfigModel = SelectionConfigModel()
    seed: int = Field(0, ge=0, le=2**63 - 1)
    strata: list[int] | None = Field(
        None,
        description="optional stratum tag per sample (length n_samples); large jobs "
        "send them as a frame to PUT /v1/jobs/{job}/strata instead",
    )
    stratum_names: dict[int, str] | None = None
    text_source: str | None = Field(None, description="optional path of a JSONL text source")
    auto_round_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="publish the next round by itself once this share of the rescore plan "
        "has fresh worker scores; null means rounds are triggered explicitly",
    )


class JobStatus(StrEnum):
    WAITING_FOR_DATA = "waiting_for_data"
    READY = "ready"
    SELECTING = "selecting"
    FAILED = "failed"


class JobResponse(_Model):
    job_id: str
    incarnation: str = Field(
        description="names this job's life: a job deleted and created again under the same "
        "id, or created on a fresh service, has another (clients key their caches by it)"
    )
    n_samples: int
    dim: int
    config: SelectionConfigModel
    seed: int
    status: JobStatus
    created_at: datetime
    current_round: int | None = Field(None, description="latest published round, null if none")
    embedded_count: int = 0
    scored_count: int = 0
    checkpoint: CheckpointInfo | None = None
    last_round_seconds: float | None = None
    stratum_names: dict[int, str] | None = None
    text_source: str | None = None


class FailedJobResponse(_Model):
    """A stored job that could not be loaded at start-up: it serves nothing until deleted."""

    job_id: str
    error: str = Field(description="why it failed to load")


class JobListResponse(_Model):
    jobs: list[JobResponse]
    failed: list[FailedJobResponse] = Field(
        default_factory=list, description="stored jobs that failed to load; DELETE removes them"
    )


class ScoreBatchRequest(_Model):
    """The JSON form of a small score batch (the frame form is for bulk)."""

    batch_id: str = Field(min_length=1, max_length=128)
    source: ScoreSourceName
    round: int = Field(ge=0)
    step: int = Field(0, ge=0)
    ids: list[SampleId] = Field(min_length=1, max_length=100_000)
    loss: list[float] | None = None
    importance: list[float] | None = None


class IngestResponse(_Model):
    batch_id: str
    accepted: int = Field(description="samples applied by this request")
    duplicate: bool = Field(description="true if this batch id was already applied")


class RoundStatus(StrEnum):
    COMPUTING = "computing"
    PUBLISHED = "published"
    FAILED = "failed"


class TriggerRoundRequest(_Model):
    seed: int | None = Field(None, ge=0, description="override the job seed for this round")


class RoundTimings(_Model):
    graph_seconds: float = 0.0
    estimate_seconds: float = 0.0
    select_seconds: float = 0.0
    plan_seconds: float = 0.0
    total_seconds: float = 0.0


class RoundManifest(_Model):
    job_id: str
    job_incarnation: str | None = Field(
        None,
        description="the job's incarnation (JobResponse); null in rounds published "
        "before the service recorded it",
    )
    round: int
    status: RoundStatus
    count: int = 0
    indices_sha256: str | None = None
    digest: str | None = None
    config: SelectionConfigModel
    seed: int
    created_at: datetime
    published_at: datetime | None = None
    weighted: bool = False
    rescore_count: int = 0
    rescored_fraction: float = Field(0.0, description="share of samples scored fresh for it")
    estimated_fraction: float | None = Field(
        None, description="share of samples whose importance was estimated from neighbours"
    )
    churn: float | None = Field(None, description="share of this coreset not in the previous one")
    graph_recall: float | None = Field(
        None,
        description="recall@k of the incrementally refreshed k-NN graph on a sample of rows "
        "against exact search (none when the graph was built, or unchanged)",
    )
    timings: RoundTimings = RoundTimings()
    error: str | None = None


class IndicesResponse(_Model):
    """JSON form of a rank's slice; the binary form is a frame with `indices` (and `weights`)."""

    job_id: str
    round: int
    rank: int
    world: int
    indices: list[int]
    weights: list[float] | None = None
    total: int = Field(description="coreset size before slicing")
    indices_sha256: str
    job_incarnation: str | None = Field(None, description="the job's incarnation")


class RescorePlanResponse(_Model):
    job_id: str
    round: int
    shard: int
    of: int
    ids: list[int]
    checkpoint: CheckpointInfo | None = None


class CheckpointRequest(_Model):
    path: str = Field(min_length=1, max_length=4096)
    step: int = Field(ge=0)
    round: int | None = Field(None, ge=0, description="round this checkpoint should score for")


class CheckpointInfo(_Model):
    path: str
    step: int
    round: int | None = None
    published_at: datetime


class SampleResponse(_Model):
    job_id: str
    sample_id: int
    stratum: int | None
    text: str | None
    loss: float | None
    importance: float | None
    scored_round: int | None
    history: list[SampleRoundEntry]
    neighbors: list[NeighborEntry]


class SampleRoundEntry(_Model):
    round: int
    in_coreset: bool
    importance: float | None
    weight: float | None = None
    estimated: bool | None = Field(
        None,
        description="true: this round's importance was estimated from neighbours, false: "
        "measured; null: the round did not record it",
    )


class NeighborEntry(_Model):
    sample_id: int
    similarity: float
    importance: float | None
    in_coreset: bool
    estimated: bool | None = Field(None, description="importance is an estimate (latest round)")


class HistogramModel(_Model):
    edges: list[float]
    counts: list[int]
    groups: dict[str, list[int]] = Field(
        default_factory=dict,
        description="counts of subsets over the same edges: `coreset` and `rest` in every "
        "histogram, `measured` and `estimated` in the importance one",
    )


class EstimateSummary(_Model):
    """How much of a round's importance vector was measured, and how odd the estimates look."""

    measured: int = Field(description="samples whose importance was freshly scored")
    estimated: int = Field(description="samples whose importance is an estimate")
    unknown: int = Field(description="samples with no importance at all (never scored)")
    negative_estimates: int = Field(
        description="estimates below 0, a value no gradient norm can take"
    )
    min_measured: float | None
    min_estimate: float | None


class QuantileSummary(_Model):
    count: int = Field(description="finite values the quantiles are taken over")
    p10: float
    p25: float
    p50: float
    p75: float
    p90: float


class StratumShare(_Model):
    name: str
    data_share: float
    coreset_share: float
    importance: QuantileSummary | None = None
    loss: QuantileSummary | None = None


class RoundStatsResponse(_Model):
    job_id: str
    round: int
    count: int
    churn: float | None
    rescored_fraction: float
    mean_importance: float | None
    timings: RoundTimings
    histograms: dict[str, HistogramModel] = Field(
        description="loss, importance, combined (the selector's utility, a rank in (0, 1])"
    )
    strata: dict[str, StratumShare] = Field(default_factory=dict)
    estimates: EstimateSummary | None = Field(
        None, description="null when the round did not record which scores were estimates"
    )


class DiffReason(_Model):
    reason: str
    change: Literal["entered", "left"]
    count: int
    text: str = Field(description="what the reason means, in a sentence")


class StratumChange(_Model):
    name: str
    entered: int
    left: int


class DiffEntry(_Model):
    sample_id: int
    change: Literal["entered", "left"]
    reason: str
    stratum: int | None
    utility_before: float = Field(description="the selector's utility in the previous round")
    utility_after: float
    importance_before: float | None
    importance_after: float | None
    estimated: bool | None = Field(description="importance_after is an estimate")
    planned: bool = Field(description="in the rescore plan the previous round published")


class RoundDiffResponse(_Model):
    """Who entered and left the coreset between round - 1 and round, and why."""

    job_id: str
    round: int
    previous: int
    entered: int
    left: int
    stayed: int
    reasons: list[DiffReason] = Field(description="every reason with at least one sample")
    strata: dict[str, StratumChange] = Field(default_factory=dict)
    samples: list[DiffEntry] = Field(
        description="per direction, the `limit` samples whose utility moved most"
    )
    limit: int


class ErrorResponse(_Model):
    """Every 4xx/5xx body: what is wrong, where, and how to fix it."""

    error: str = Field(description="a short machine-readable code, e.g. invalid_frame")
    detail: str = Field(description="a sentence for people: what was wrong and the fix")
    field: str | None = Field(None, description="the request field at fault, dotted")
    extra: dict[str, Any] | None = None


class HealthResponse(_Model):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


JobResponse.model_rebuild()
RescorePlanResponse.model_rebuild()
SampleResponse.model_rebuild()
RoundStatsResponse.model_rebuild()
RoundDiffResponse.model_rebuild()

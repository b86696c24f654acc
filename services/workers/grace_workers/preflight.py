"""What `grace score` checks before it starts Ray: the data, the service, the token, the job.

Each check that fails raises a `UsageError` whose one line names what is wrong and the fix,
within seconds, instead of a Ray actor failing the same way (retried, tens of seconds later,
inside a page of traceback). Nothing here imports torch or Ray, and nothing is written to the
service: the token is checked with a request the service refuses after reading the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grace_client import CoresetClient
from grace_client.errors import (
    GraceAPIError,
    NotFoundError,
    ServiceUnavailable,
    UnauthorizedError,
)
from grace_proto.models import JobResponse, RoundStatus
from grace_proto.usage import UsageError
from grace_workers.dataset import TokenDataset

PREFLIGHT_TIMEOUT = 5.0  # seconds per request: a service that is up answers these in ms


@dataclass(frozen=True, slots=True)
class ScoreInputs:
    """What the checks found: the job as the service describes it, and the opened dataset."""

    job: JobResponse
    dataset: TokenDataset


def check_score_inputs(
    *,
    url: str,
    token: str | None,
    job: str,
    round_: int,
    data: str,
    model: str | None,
    local_ray: bool,
) -> ScoreInputs:
    """Raise UsageError unless round `round_` of `job` can be scored with `data` and `model`.

    local_ray: the actors run on this machine, so the --model path must exist here too (on a
    cluster the path is the nodes', which this machine may not see).
    """
    if round_ < 0:
        raise UsageError(f"--round {round_}: must be >= 0 (0 scores every sample)")
    dataset = TokenDataset.open(data)  # DatasetFormatError is a UsageError naming the fix
    if model is not None and local_ray and not Path(model).exists():
        raise UsageError(
            f"--model {model}: no such file or directory; pass a TinyGPT checkpoint file or a "
            "local Hugging Face model directory"
        )
    with CoresetClient(url, token=token, timeout=PREFLIGHT_TIMEOUT, retries=1) as client:
        try:
            client.healthz()
        except ServiceUnavailable as exc:
            raise UsageError(
                f"cannot reach the GRACE service at {url} ({exc.detail or exc}); start it with "
                "`grace serve`, or pass --url (GRACE_URL) of the running one"
            ) from exc
        except (GraceAPIError, ValueError) as exc:  # something answers, but not as we do
            answer = f"{exc.status} {exc.error}" if isinstance(exc, GraceAPIError) else "not JSON"
            raise UsageError(
                f"{url} does not answer as a GRACE service (GET /healthz: {answer}); pass --url "
                "(GRACE_URL) of the service"
            ) from exc
        try:
            found = client.get_job(job)
            client.check_write_access(job)
        except UnauthorizedError as exc:
            what = "no token was given" if not token else "the token is not the service's"
            raise UsageError(
                f"the service at {url} refuses the token: {what}; pass --token or set "
                "GRACE_TOKEN to the service's GRACE_TOKEN"
            ) from exc
        except NotFoundError as exc:
            raise UsageError(
                f"job {job!r} does not exist at {url}; create it first (CoresetClient."
                "create_job, docs/client.md) or check --job"
            ) from exc
        except (GraceAPIError, ServiceUnavailable) as exc:
            raise UsageError(f"the service at {url} answered: {exc}") from exc
        if found.n_samples != len(dataset):
            raise UsageError(
                f"job {job!r} has {found.n_samples} samples but the dataset {data} has "
                f"{len(dataset)}; score the job with the dataset it was created for"
            )
        _check_round(client, found, round_)
        if model is None and client.get_checkpoint(job) is None:
            raise UsageError(
                f"job {job!r} has no published checkpoint and no --model was given; pass "
                "--model, or publish one with CoresetClient.put_checkpoint"
            )
    return ScoreInputs(found, dataset)


def _check_round(client: CoresetClient, job: JobResponse, round_: int) -> None:
    """Round r's plan is published with round r - 1: that round must exist (it may compute)."""
    if round_ == 0:
        return
    latest = job.current_round
    hint = (
        "score round 0 first (every sample)"
        if latest is None
        else f"its latest round is {latest}, so score round {latest + 1} or earlier"
    )
    try:
        manifest = client.get_round(job.job_id, round_ - 1)
    except NotFoundError as exc:
        raise UsageError(
            f"--round {round_}: its plan comes with round {round_ - 1} of job {job.job_id!r}, "
            f"which does not exist; {hint}"
        ) from exc
    if manifest.status == RoundStatus.FAILED:
        raise UsageError(
            f"--round {round_}: round {round_ - 1} of job {job.job_id!r} failed "
            f"({manifest.error}); trigger it again before scoring its plan"
        )

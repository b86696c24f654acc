"""/readyz's named checks before the jobs are loaded: the state says why it waits."""

from __future__ import annotations

from pathlib import Path

from grace_selection.adapters.local_store import LocalScoreStore
from grace_selection.adapters.store_records import StoreError
from grace_selection.api.app import make_index_factory
from grace_selection.service.registry import SelectionService


class DownStore(LocalScoreStore):
    """A store that does not answer, as Redis does while it is still starting."""

    def ping(self) -> None:
        raise StoreError("connection refused")


def test_a_store_that_is_down_is_named_before_the_first_load_attempt_fails(
    tmp_path: Path,
) -> None:
    # The loader has not tried yet (it runs in the background at start-up): readiness must
    # already say the service waits for the store, not a bare "loading".
    service = SelectionService(
        DownStore(tmp_path / "store"), make_index_factory("brute"), tmp_path / "data"
    )
    ready, checks = service.readiness()
    assert not ready
    assert checks["state"] == "loading: waiting for the store (unreachable: connection refused)"
    assert checks["store"] == "unreachable: connection refused"


def test_a_store_that_answers_while_loading_says_loading(tmp_path: Path) -> None:
    service = SelectionService(
        LocalScoreStore(tmp_path / "store"), make_index_factory("brute"), tmp_path / "data"
    )
    ready, checks = service.readiness()
    assert not ready
    assert checks == {"state": "loading", "store": "ok"}
    service.load()
    assert service.readiness() == (True, {"state": "ok", "store": "ok"})
    service.close()

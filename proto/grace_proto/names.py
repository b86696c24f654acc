"""The names a config or a batch may use, each spelled here once.

Dependency-free (the standard library only), so that the selection core, the wire models and the
client all import it without pulling anything else in. Each name set is a Literal type, which
mypy checks wherever a name is written, and the tuple of its values, which code iterates and
error messages list.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

SelectorName = Literal["graph_message_passing", "facility_location", "importance_sampling"]
"""How a round picks its coreset (`grace_selection.core.selectors.SELECTORS`)."""

EstimationRule = Literal["keep", "delta", "smooth"]
"""How stale importance is estimated (`grace_selection.core.estimation.ESTIMATORS`)."""

ScoreSourceName = Literal["worker", "trainer"]
"""Who sent a score batch: a scoring worker, or a trainer reporting the losses it computed."""

SELECTOR_NAMES: Final[tuple[SelectorName, ...]] = get_args(SelectorName)
ESTIMATION_RULES: Final[tuple[EstimationRule, ...]] = get_args(EstimationRule)
SCORE_SOURCES: Final[tuple[ScoreSourceName, ...]] = get_args(ScoreSourceName)

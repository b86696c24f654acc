"""The GRACE selection algorithm as plain functions over numpy arrays and frozen dataclasses.

Nothing here does I/O or imports a framework, store, index, Ray or torch; a test and an
import-linter contract keep it so.
"""

from grace_selection.core.config import SelectionConfig, SelectionConfigError
from grace_selection.core.coreset import Coreset
from grace_selection.core.graph import KnnGraph
from grace_selection.core.scores import ScoreTable
from grace_selection.core.selectors import SELECTORS, select_coreset

__all__ = [
    "SELECTORS",
    "Coreset",
    "KnnGraph",
    "ScoreTable",
    "SelectionConfig",
    "SelectionConfigError",
    "select_coreset",
]

"""The GRACE selection algorithm as plain functions over numpy arrays and frozen dataclasses.

Nothing here does I/O or imports a framework, store, index, Ray or torch; a test and an
import-linter contract keep it so.
"""

from grace_selection.core.config import SelectionConfig, SelectionConfigError
from grace_selection.core.coreset import Coreset
from grace_selection.core.graph import KnnGraph
from grace_selection.core.scores import ScoreTable

__all__ = ["Coreset", "KnnGraph", "ScoreTable", "SelectionConfig", "SelectionConfigError"]

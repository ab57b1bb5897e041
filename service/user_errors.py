"""Errors that describe the user's input or environment, not a bug in recmimic.

The CLI prints them as one line and exits 2; the worker fails the job with their message.
Anything else is a bug: it keeps its traceback (CLI) or is logged and named only by its type
(worker).
"""

from __future__ import annotations

from adaptive.config import StealError
from extractor.budget import BudgetError
from extractor.cache import CacheError
from extractor.errors import BlackBoxError
from extractor.probeset import ProbeSetError
from seqrec.data.fetch import FetchError

USER_ERRORS: tuple[type[Exception], ...] = (
    ValueError,  # bad options and data, including distill's ProbeDataError and ArtifactError
    OSError,
    FetchError,
    BlackBoxError,
    BudgetError,
    CacheError,
    ProbeSetError,
    StealError,
)

"""What a long-lived serving process does once it has started."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Keep what a serving process holds once started out of the garbage collector's full passes.

    The imports (torch, FastAPI, SQLAlchemy) leave hundreds of thousands of objects that live as
    long as the process, and every full collection walked them all with the event loop stopped,
    freeing nothing: under load, 250-340 ms about every 3 s in an API process
    (`bench/service.py`) and about 150 ms every 1.5 s in a teacher process under wrk, which set
    the p99 of both. What is garbage now is collected first, so none is frozen; objects made
    later are collected as usual. Both the service's API processes and the teacher's call this.
    """
    gc.collect()
    gc.freeze()

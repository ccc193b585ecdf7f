"""One-time work (dequantizing a model, generating a dataset, sampling templates, computing statistics, training
a network) says what it does and how long it took, as log records on the ``pitfalls.progress`` logger.

The pytest plugin shows them live on the terminal, once, from the controlling process; elsewhere they go
wherever logging is configured.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

LOGGER = logging.getLogger("pitfalls.progress")


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Log ``what ...`` now and ``what: done in N s`` after the block."""
    LOGGER.info("%s ...", what)
    start = time.perf_counter()
    yield
    LOGGER.info("%s: done in %.0f s", what, time.perf_counter() - start)

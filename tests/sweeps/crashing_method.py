"""A method whose first training step kills its own worker with SIGSEGV, for the crash-report test.

Nothing registers it on import: the test calls ``register()`` in the driver (and unregisters it
after), and Ray calls it in every worker as the ``worker_process_setup_hook``, so no production
code and no other test (the registry-driven contract tests) ever sees it.
"""

from __future__ import annotations

import signal
import threading

from trainables.methods import METHODS, register_method
from trainables.methods.supervised import Supervised

NAME = "segfault_for_tests"


class Segfault(Supervised):
    """Supervised, except that ``training_step`` raises SIGSEGV in the calling thread, as a crashing
    native kernel does."""

    name = NAME

    def training_step(self, views, labels):
        signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)
        raise AssertionError("unreachable: SIGSEGV ends the process")


def register() -> None:
    """Idempotent: register ``Segfault`` in this process."""
    if NAME not in METHODS:
        register_method(Segfault)

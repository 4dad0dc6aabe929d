"""Several schema upgrades at the same moment, as init containers of a rollout's pods run."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from cds_hooks.store import Store


def upgrade_together(stores: Sequence[Store]) -> list[BaseException]:
    """Run every store's upgrade at once (released by one barrier); return the errors."""
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def start(store: Store) -> None:
        barrier.wait()
        try:
            store.upgrade()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors

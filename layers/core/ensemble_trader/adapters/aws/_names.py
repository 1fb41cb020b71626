"""Logical → physical resource names (``features`` → ``et-local-features``)."""

from __future__ import annotations

from ensemble_trader import constants
from ensemble_trader.runtime.settings import Settings

_LOGICAL = (
    set(constants.STREAMS)
    | set(constants.QUEUES)
    | {t.logical for t in constants.TABLES}
    | {constants.EVENT_BUS, constants.MODEL_BUCKET}
)


def physical(name: str, settings: Settings) -> str:
    """``name`` qualified with the settings' stage when it is a logical name, else unchanged.

    Adapters accept both, so a handler can say ``"features"`` and a CLI user can pass the
    full physical name of a stream in another account.
    """
    return settings.name(name) if name in _LOGICAL else name

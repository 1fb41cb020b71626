"""In-memory fakes of every port, for unit tests and the in-process backtester.

They behave like the real adapters where it matters to callers — versioned conditional puts
raise ConcurrencyError, publishers keep order — and record what they received so tests can
look. ``FailureInjector`` makes any of them fail on chosen calls, to test retry paths.
"""

from ensemble_trader.adapters.memory.fakes import (
    FailureInjector,
    MemoryCache,
    MemoryDeadLetters,
    MemoryEventBus,
    MemoryKeyValueStore,
    MemoryModelStore,
    MemoryQueuePublisher,
    MemoryStreamPublisher,
)

__all__ = [
    "FailureInjector",
    "MemoryCache",
    "MemoryDeadLetters",
    "MemoryEventBus",
    "MemoryKeyValueStore",
    "MemoryModelStore",
    "MemoryQueuePublisher",
    "MemoryStreamPublisher",
]

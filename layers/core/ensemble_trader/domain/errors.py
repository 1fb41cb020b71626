"""Typed errors of the domain. Adapters translate AWS/Redis failures into these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class EnsembleTraderError(Exception):
    """Base class of every error this package raises on purpose."""


class _Missing:
    """The type of :data:`MISSING`."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""The :attr:`FieldProblem.value` of a field the message lacks (it has no value to show)."""


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with one field of one message (``value`` is :data:`MISSING` when the
    message lacks the field)."""

    field: str
    value: Any
    message: str

    def __str__(self) -> str:
        if self.value is MISSING:
            return f"{self.field}: missing ({self.message})"
        return f"{self.field}={self.value!r}: {self.message}"


class InvalidMessageError(EnsembleTraderError, ValueError):
    """A message that crosses a boundary failed validation.

    ``problems`` names every field that was wrong, with its value, so the reason stored with a
    dead-lettered record says exactly what to fix.
    """

    def __init__(self, model: str, problems: list[FieldProblem]):
        self.model = model
        self.problems = problems
        super().__init__(f"invalid {model}: " + "; ".join(str(p) for p in problems))

    @property
    def reason(self) -> str:
        return str(self)


class DataError(EnsembleTraderError, ValueError):
    """Input data (a CSV file, a data set) is malformed; the message names the file and row."""


class StoreRefusedError(DataError):
    """A store refused an item or a request it will never accept (DynamoDB's ValidationException:
    an item over 400 KB, an empty key). Retrying does not help, as with any DataError, but the
    input is not to blame alone: where an input would be dead-lettered as malformed, a refusal of
    the store's fails the work instead, so it is counted, alarmed and kept whole."""


class StateError(EnsembleTraderError):
    """Persisted state cannot be decoded or is inconsistent with the code that reads it."""


class ConcurrencyError(EnsembleTraderError):
    """A conditional write lost a race (the stored version moved on)."""


class ModelArtifactError(EnsembleTraderError):
    """A model artifact is missing, corrupted or does not match its manifest."""


class InfrastructureError(EnsembleTraderError):
    """A backing service (DynamoDB, Kinesis, Redis, ...) failed; retrying may help."""

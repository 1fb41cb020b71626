"""Typed settings from the environment (prefix ``ET_``), shared by handlers, CLI and local stack."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ensemble_trader import constants
from ensemble_trader.domain.errors import DataError

T = TypeVar("T")

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _default_models_dir() -> Path:
    """Committed model artifacts: ``layers/models`` in a checkout, ``/opt/models`` in the layer."""
    for candidate in (PACKAGE_DIR.parents[1] / "models", Path("/opt/models")):
        if candidate.is_dir():
            return candidate
    return PACKAGE_DIR.parents[1] / "models"


class Settings(BaseSettings):
    """Everything a handler needs to find its resources.

    Resource names derive from ``stage`` through :func:`ensemble_trader.constants.qualified`,
    the function the CDK app uses too, so one variable (``ET_STAGE``) points a handler at a stack.

    ``region`` is the AWS CLI's environment: ``AWS_REGION`` (Lambda sets it; so does the local
    stack), else ``AWS_DEFAULT_REGION``; None when neither is set (or both are blank). There is no
    built-in default: an operator command would otherwise reach another region's stack than the
    runbook's ``aws ...`` commands do. A client is then built for the AWS profile's region, and
    without one fails naming how to set it (:func:`ensemble_trader.adapters.aws.clients.aws_region`).
    """

    model_config = SettingsConfigDict(env_prefix="ET_", frozen=True, extra="ignore")

    stage: str = constants.LOCAL_STAGE
    region: str | None = Field(default=None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    aws_endpoint_url: str | None = None  # the moto server locally; unset in AWS
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_iam_user: str | None = None  # ElastiCache Serverless IAM auth (the deployed cache needs it)
    redis_cache_name: str | None = None
    model_bucket: str | None = None  # defaults to the stage's registry bucket name
    models_dir: Path = Field(default_factory=_default_models_dir)
    strategy_id: str = "ensemble"

    @field_validator("region", "aws_endpoint_url", "redis_iam_user", "redis_cache_name", "model_bucket", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """An empty (or blank) value means unset: the dev template declares ``ET_AWS_ENDPOINT_URL=""``
        so that ``sam local invoke --env-vars`` can override it (SAM only overrides variables the
        template declares), and a local-env file blanks the cache's IAM user and name; an empty
        endpoint must not reach boto3 (``endpoint_url=""`` is an invalid endpoint), nor an empty
        user switch on ElastiCache IAM auth; a blank ``AWS_REGION`` is no region."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def name(self, logical: str) -> str:
        """Physical name of a stream, queue, table or bus of this stage."""
        return constants.qualified(self.stage, logical)

    @property
    def bucket(self) -> str:
        return self.model_bucket or self.name(constants.MODEL_BUCKET)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process (a Lambda container reads its environment once)."""
    return Settings()


class EnvironmentSettingError(DataError):
    """An environment variable holds a value that cannot configure what it is meant to.

    ``variable`` is the variable's name; the message says what was wrong with its value. One
    error can name several variables (see :meth:`naming`): ``variable`` is then their names,
    comma-separated; ``problems`` maps each variable named to what was wrong with it.
    """

    def __init__(self, variable: str, problem: str, *, problems: Mapping[str, str] | None = None):
        self.variable = variable
        self.problem = problem
        self.problems: dict[str, str] = dict(problems) if problems else {variable: problem}
        super().__init__(f"{variable}: {problem}")

    @classmethod
    def naming(cls, problems: Mapping[str, str]) -> EnvironmentSettingError:
        """One error naming every variable of ``problems`` (variable -> what is wrong), in their
        order: ``NAME: problem`` for one, ``A, B: A: problem; B: problem`` for several."""
        if not problems:
            raise ValueError("EnvironmentSettingError.naming needs at least one variable")
        if len(problems) == 1:
            ((name, problem),) = problems.items()
            return cls(name, problem)
        return cls(", ".join(problems), "; ".join(f"{name}: {problem}" for name, problem in problems.items()),
                   problems=problems)


class RegionNotSetError(EnvironmentSettingError):
    """No AWS region anywhere: neither ``AWS_REGION`` nor ``AWS_DEFAULT_REGION`` is set, and the
    AWS profile (``AWS_PROFILE``, else ``default``) names none. Raised by a command that reaches
    AWS, before any request; the message says how to set one."""

    def __init__(self, profile: str | None = None, *, local_stage: bool = False):
        where = f"the AWS profile {profile!r}" if profile else "the default AWS profile"
        # the local stage without an endpoint: most likely a shell that never took local up's lines
        local = ('for the local stack, eval "$(ensemble-trader local status --exports)" once '
                 "`ensemble-trader local up` runs; for AWS, " if local_stage else "")
        super().__init__(
            "AWS_REGION",
            f"no AWS region is set (not in AWS_REGION, AWS_DEFAULT_REGION or {where}): {local}name the stack's "
            "region, e.g. export AWS_REGION=eu-west-1, or aws configure set region eu-west-1"
            + (f" --profile {profile}" if profile else ""),
        )


def json_from_env(
    name: str,
    model: type[T],
    *,
    build: Callable[..., T] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> T:
    """``model`` built from ``defaults`` overridden by the JSON object in the variable ``name``.

    Unset or blank, the variable changes nothing: the result is ``build(**defaults)``.
    ``build`` is how the options become a ``model`` (``model`` itself unless given, e.g. a
    validating ``create`` classmethod). A value that is not JSON, not a JSON object, or whose
    options ``build`` rejects raises :class:`EnvironmentSettingError` naming the variable and
    the problem (the rejection is kept as its ``__cause__``); without the variable, whatever
    ``build`` raises for the defaults propagates as it is.
    """
    options: dict[str, Any] = dict(defaults or {})
    raw = os.environ.get(name, "").strip()
    if raw:
        try:
            loaded = json.loads(raw)
        except ValueError as exc:
            raise EnvironmentSettingError(name, f"not valid JSON ({exc}): {raw!r}") from None
        if not isinstance(loaded, dict):
            raise EnvironmentSettingError(
                name,
                f"must be a JSON object of {model.__name__} options, got {type(loaded).__name__}: {raw!r}",
            )
        options.update(loaded)
    factory = build if build is not None else model
    if not raw:  # the defaults alone: a rejection is not the variable's fault, so it propagates
        return factory(**options)
    try:
        return factory(**options)
    except (ValueError, TypeError) as exc:
        raise EnvironmentSettingError(name, f"not a valid {model.__name__} ({exc}): {raw!r}") from exc

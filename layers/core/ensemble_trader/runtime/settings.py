"""Typed settings from the environment (prefix ``ET_``), shared by handlers, CLI and local stack."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ensemble_trader import constants

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
    """

    model_config = SettingsConfigDict(env_prefix="ET_", frozen=True, extra="ignore")

    stage: str = constants.LOCAL_STAGE
    region: str = Field(default="us-east-1", validation_alias="AWS_REGION")
    aws_endpoint_url: str | None = None  # the moto server locally; unset in AWS
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_iam_user: str | None = None  # ElastiCache Serverless IAM auth (the deployed cache needs it)
    redis_cache_name: str | None = None
    model_bucket: str | None = None  # defaults to the stage's registry bucket name
    models_dir: Path = Field(default_factory=_default_models_dir)
    strategy_id: str = "ensemble"

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

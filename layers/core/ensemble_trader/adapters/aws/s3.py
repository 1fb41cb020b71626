"""S3 model store: the model registry bucket as :class:`ensemble_trader.ports.ModelStore`.

A failed call's error names the operation and the object (``S3 get s3://bucket/key: ...``): an
InfrastructureError, or the DeadlineExceededError (an InfrastructureError too) of the client's
deadline guard led by them (:func:`~ensemble_trader.adapters.aws.clients.call_error`).
"""

from __future__ import annotations

from typing import Any

from ensemble_trader.adapters.aws.clients import CALL_ERRORS, call_error, error_code
from ensemble_trader.adapters.aws.clients import client as make_client
from ensemble_trader.domain.errors import ConcurrencyError, ModelArtifactError
from ensemble_trader.runtime.settings import Settings, get_settings


class S3ModelStore:
    """Reads and writes model artifacts under ``prefix`` in the stage's registry bucket."""

    def __init__(
        self,
        s3_client: Any | None = None,
        *,
        settings: Settings | None = None,
        bucket: str | None = None,
        prefix: str = "",
    ) -> None:
        self._settings = settings or get_settings()
        self._client = s3_client or make_client("s3", self._settings)
        self.bucket = bucket or self._settings.bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def read(self, key: str) -> bytes:
        full = self.prefix + key
        try:
            return self._client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
        except CALL_ERRORS as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise ModelArtifactError(f"s3://{self.bucket}/{full} does not exist") from exc
            raise call_error(exc, f"S3 get s3://{self.bucket}/{full}") from exc

    def write(self, key: str, data: bytes) -> None:
        full = self.prefix + key
        try:
            self._client.put_object(Bucket=self.bucket, Key=full, Body=data)
        except CALL_ERRORS as exc:
            raise call_error(exc, f"S3 put s3://{self.bucket}/{full}") from exc

    def replace(self, key: str, data: bytes, expected: bytes | None) -> None:
        """A conditional put: ``If-Match`` on the ETag of the object read (it still holds
        ``expected``), or ``If-None-Match: *`` when ``expected`` is None — S3 refuses the write
        (412) when another writer changed the object in between."""
        full = self.prefix + key
        try:
            current = self._client.get_object(Bucket=self.bucket, Key=full)
            body, etag = current["Body"].read(), current["ETag"]
        except CALL_ERRORS as exc:
            if error_code(exc) not in ("NoSuchKey", "404", "NotFound"):
                raise call_error(exc, f"S3 get s3://{self.bucket}/{full}") from exc
            body, etag = None, None
        if body != expected:
            raise ConcurrencyError(f"s3://{self.bucket}/{full} changed since it was read")
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            self._client.put_object(Bucket=self.bucket, Key=full, Body=data, **condition)
        except CALL_ERRORS as exc:
            if error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise ConcurrencyError(f"s3://{self.bucket}/{full} changed while it was written") from exc
            raise call_error(exc, f"S3 put s3://{self.bucket}/{full}") from exc

    def list(self, prefix: str = "") -> list[str]:
        """Keys (relative to the store's prefix) that start with ``prefix``."""
        keys: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        except CALL_ERRORS as exc:
            raise call_error(exc, f"S3 list s3://{self.bucket}/{self.prefix}{prefix}") from exc
        return keys

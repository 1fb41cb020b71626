"""DynamoDB adapters: a key-value store with optimistic versioning, plus reusable helpers.

Items are plain dicts on the Python side: ``float`` goes to DynamoDB as a number (through
``Decimal``) and comes back as ``float`` (or ``int`` when integral), ``bytes`` as binary. Numbers
DynamoDB cannot hold are refused, and floats too small for it stored as 0 (:mod:`..dynamo_numbers`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from ensemble_trader.adapters.aws._names import physical
from ensemble_trader.adapters.aws.clients import client as make_client
from ensemble_trader.adapters.aws.clients import error_code
from ensemble_trader.adapters.dynamo_numbers import storable_number
from ensemble_trader.domain.errors import ConcurrencyError, InfrastructureError
from ensemble_trader.runtime.settings import Settings, get_settings

VERSION_ATTRIBUTE = "version"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_dynamo_value(value: Any, path: str) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (float, int)):  # in DynamoDB's range (dynamo_numbers), floats through Decimal
        number = storable_number(value, path)
        return Decimal(repr(number)) if isinstance(number, float) else number
    if isinstance(value, Mapping):
        return {str(k): _to_dynamo_value(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_dynamo_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def _from_dynamo_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        return bytes(value.value)
    if isinstance(value, dict):
        return {k: _from_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo_value(v) for v in value]
    if isinstance(value, set):
        return {_from_dynamo_value(v) for v in value}
    return value


def serialize_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A Python dict as a DynamoDB attribute map (floats via Decimal, bytes as binary)."""
    return {k: _serializer.serialize(_to_dynamo_value(v, k)) for k, v in item.items()}


def deserialize_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB attribute map as a Python dict (numbers as int/float, binary as bytes)."""
    return {k: _from_dynamo_value(_deserializer.deserialize(v)) for k, v in item.items()}


def _key_names(table: str) -> tuple[str, ...]:
    from ensemble_trader import constants

    try:
        return constants.table_spec(table).key_names
    except KeyError:  # a physical name: rows are not collapsed
        return ()


def translate(exc: Exception, what: str) -> Exception:
    """A botocore error as the domain's exception (ConcurrencyError for a lost condition)."""
    if error_code(exc) == "ConditionalCheckFailedException":
        return ConcurrencyError(f"{what}: condition failed (another writer got there first)")
    return InfrastructureError(f"{what}: {type(exc).__name__}: {exc}")


class DynamoKeyValueStore:
    """:class:`ensemble_trader.ports.KeyValueStore` over DynamoDB.

    ``table`` may be a logical name from ``constants.TABLES`` (qualified with the stage) or a
    physical one. With ``expected_version`` the put is conditional: it succeeds only if the
    stored item's ``version`` equals it, or the item does not exist and it is 0; otherwise
    :class:`ConcurrencyError`. The caller sets the new ``version`` in ``item``.
    """

    def __init__(self, dynamodb_client: Any | None = None, *, settings: Settings | None = None):
        self._settings = settings or get_settings()
        self._client = dynamodb_client or make_client("dynamodb", self._settings)

    @property
    def client(self) -> Any:
        return self._client

    def table_name(self, table: str) -> str:
        return physical(table, self._settings)

    def get_item(self, table: str, key: Mapping[str, Any], *, consistent: bool = True) -> dict[str, Any] | None:
        name = self.table_name(table)
        try:
            response = self._client.get_item(
                TableName=name, Key=serialize_item(key), ConsistentRead=consistent
            )
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"DynamoDB get_item {name} {dict(key)}") from exc
        found = response.get("Item")
        return deserialize_item(found) if found is not None else None

    def put_item(
        self, table: str, item: Mapping[str, Any], *, expected_version: int | None = None
    ) -> None:
        name = self.table_name(table)
        kwargs: dict[str, Any] = {"TableName": name, "Item": serialize_item(item)}
        if expected_version is not None:
            if expected_version == 0:
                kwargs["ConditionExpression"] = "attribute_not_exists(#v) OR #v = :v"
            else:
                kwargs["ConditionExpression"] = "#v = :v"
            kwargs["ExpressionAttributeNames"] = {"#v": VERSION_ATTRIBUTE}
            kwargs["ExpressionAttributeValues"] = {":v": {"N": str(expected_version)}}
        try:
            self._client.put_item(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise translate(
                exc, f"DynamoDB put_item {name} (expected version {expected_version})"
            ) from exc

    def put_items(self, table: str, items: Sequence[Mapping[str, Any]], *, max_attempts: int = 5) -> None:
        """Unconditional puts in ``BatchWriteItem`` calls of 25, retrying unprocessed items.

        For append-style rows (regime history, decisions) where one ``PutItem`` per row would
        dominate the handler's time. For a logical table of ``constants.TABLES``, rows with the
        same key collapse to the last one (DynamoDB rejects a batch that repeats a key).
        """
        name = self.table_name(table)
        rows = [dict(i) for i in items]
        keys = _key_names(table)
        if keys:
            rows = list({tuple(r.get(k) for k in keys): r for r in rows}.values())
        for start in range(0, len(rows), 25):
            pending = [{"PutRequest": {"Item": serialize_item(r)}} for r in rows[start : start + 25]]
            for attempt in range(1, max_attempts + 1):
                try:
                    response = self._client.batch_write_item(RequestItems={name: pending})
                except (ClientError, BotoCoreError) as exc:
                    raise translate(exc, f"DynamoDB batch_write_item {name}") from exc
                pending = response.get("UnprocessedItems", {}).get(name, [])
                if not pending:
                    break
                if attempt < max_attempts:
                    time.sleep(0.05 * 2 ** (attempt - 1))
            else:
                raise InfrastructureError(
                    f"DynamoDB batch_write_item {name}: {len(pending)} items still unprocessed after "
                    f"{max_attempts} attempts"
                )

    def get_versions(
        self, table: str, keys: Sequence[Mapping[str, Any]], *, max_attempts: int = 5
    ) -> list[int]:
        """The ``version`` of each key's item (0 when absent): consistent ``BatchGetItem`` calls of
        100 keys that fetch only the key and the version, retrying unprocessed keys."""
        name = self.table_name(table)
        names = list(keys[0]) if keys else []
        projection = {f"#k{i}": n for i, n in enumerate(names)} | {"#v": VERSION_ATTRIBUTE}
        found: dict[tuple, int] = {}
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {
                "Keys": [serialize_item(k) for k in keys[start : start + 100]],
                "ConsistentRead": True,
                "ProjectionExpression": ", ".join(projection),
                "ExpressionAttributeNames": projection,
            }
            for attempt in range(1, max_attempts + 1):
                try:
                    response = self._client.batch_get_item(RequestItems={name: request})
                except (ClientError, BotoCoreError) as exc:
                    raise translate(exc, f"DynamoDB batch_get_item {name}") from exc
                for raw in response.get("Responses", {}).get(name, []):
                    item = deserialize_item(raw)
                    found[tuple(item[n] for n in names)] = int(item.get(VERSION_ATTRIBUTE, 0))
                unprocessed = response.get("UnprocessedKeys", {}).get(name)
                if not unprocessed:
                    break
                request = dict(request, Keys=unprocessed["Keys"])
                if attempt < max_attempts:
                    time.sleep(0.05 * 2 ** (attempt - 1))
            else:
                raise InfrastructureError(
                    f"DynamoDB batch_get_item {name}: keys still unprocessed after {max_attempts} attempts"
                )
        return [found.get(tuple(k[n] for n in names), 0) for k in keys]

    def delete_item(self, table: str, key: Mapping[str, Any]) -> None:
        name = self.table_name(table)
        try:
            self._client.delete_item(TableName=name, Key=serialize_item(key))
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"DynamoDB delete_item {name}") from exc

    def query(self, table: str, partition_key: str, value: Any, *, limit: int | None = None,
              newest_first: bool = False) -> list[dict[str, Any]]:
        """Every item whose partition key ``partition_key`` equals ``value`` (paginated)."""
        name = self.table_name(table)
        kwargs: dict[str, Any] = {
            "TableName": name,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": partition_key},
            "ExpressionAttributeValues": {":pk": _serializer.serialize(_to_dynamo_value(value, partition_key))},
            "ScanIndexForward": not newest_first,
        }
        items: list[dict[str, Any]] = []
        try:
            while True:
                if limit is not None:
                    kwargs["Limit"] = limit - len(items)
                response = self._client.query(**kwargs)
                items.extend(deserialize_item(i) for i in response.get("Items", []))
                last = response.get("LastEvaluatedKey")
                if not last or (limit is not None and len(items) >= limit):
                    return items
                kwargs["ExclusiveStartKey"] = last
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"DynamoDB query {name}") from exc

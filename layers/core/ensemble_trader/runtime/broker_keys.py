"""The broker secret as the stack creates it: Alpaca's keys not stored yet.

The CDK stack creates ``et-<stage>-broker-keys`` holding :data:`PLACEHOLDER`, empty keys, and an
operator puts the real pair in after the first deployment (docs/deployment.md, *First
deployment*, step 3). Until then every Alpaca router fails to build
(``BrokerUnavailableError``: the secret lacks the keys). The scheduled reconciliation, which runs
every 5 minutes from the deployment on, asks :func:`unstored_keys_secret` whether its failure is
that placeholder, and then reports it (an error in its log, the metric ``broker_keys_missing``,
the alarm ``BrokerKeysMissing``) instead of failing the invocation, which Lambda retried twice and
then sent to ``events-dlq`` — a letter every 5 minutes until the keys were stored.

Only the exact placeholder counts. A secret with one key, keys under other names, text that is
not JSON, a secret that cannot be read: an operator's mistake or a fault, still raised as before.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)

PLACEHOLDER: dict[str, str] = {"api_key": "", "secret_key": ""}
"""The broker secret's value as the stack creates it (``infra_cdk/constructs/broker.py``)."""


def is_placeholder(secret_string: Any) -> bool:
    """True if ``secret_string`` is the JSON of :data:`PLACEHOLDER` (whatever its spacing)."""
    if not isinstance(secret_string, str):
        return False
    try:
        return json.loads(secret_string) == PLACEHOLDER
    except ValueError:
        return False


def unstored_keys_secret(settings: Any = None, orders: Any = None, secrets: Any = None) -> str | None:
    """The name of the broker secret when the orders settings trade Alpaca and their secret still
    holds :data:`PLACEHOLDER`; None otherwise — the paper broker, keys stored, or the settings or
    the secret not readable (the caller's own failure already says why).

    ``settings`` (:class:`~ensemble_trader.runtime.settings.Settings`), ``orders``
    (:class:`~ensemble_trader.runtime.orders.OrdersSettings`) and ``secrets`` (a Secrets Manager
    client) default to the function's own."""
    try:
        if settings is None:
            from ensemble_trader.runtime.settings import get_settings

            settings = get_settings()
        from ensemble_trader.runtime.orders import broker_secret_name, read_order_settings

        if orders is None:
            orders, _ = read_order_settings()
        if orders.broker != "alpaca":
            return None
        name = broker_secret_name(settings, orders)
        if secrets is None:
            from ensemble_trader.adapters.aws.clients import client

            secrets = client("secretsmanager", settings)
        value = secrets.get_secret_value(SecretId=name).get("SecretString")
    except Exception as exc:  # noqa: BLE001 - any failure here means "not known to be the placeholder"
        log.info("broker secret not checked for the placeholder (%s: %s)", type(exc).__name__, exc)
        return None
    return name if is_placeholder(value) else None

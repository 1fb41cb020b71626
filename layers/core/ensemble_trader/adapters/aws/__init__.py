"""AWS adapters: the only package that imports boto3.

Each adapter implements a port of :mod:`ensemble_trader.ports` and turns botocore errors into
the domain's exceptions (:class:`~ensemble_trader.domain.errors.InfrastructureError`,
:class:`~ensemble_trader.domain.errors.ConcurrencyError`). Clients come from
:func:`ensemble_trader.adapters.aws.clients.client` and can be injected in every constructor.
"""

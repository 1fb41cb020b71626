"""Brokers behind :class:`ensemble_trader.ports.Broker`: ``paper`` (default) and ``alpaca``."""

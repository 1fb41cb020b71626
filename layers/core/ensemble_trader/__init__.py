"""ensemble-trader core: pure domain, ports, adapters, runtime wiring, local stack and backtester."""

__version__ = "0.1.0"

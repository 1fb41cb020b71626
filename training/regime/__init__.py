"""Regime-model training, validation and historical checks (offline; uses hmmlearn)."""

"""Offline side of the meta-agent: choosing its configuration on validation data.

:mod:`training.meta.select` runs the ensemble backtest (``ensemble_trader.backtest.ensemble``)
for a list of candidate :class:`~ensemble_trader.domain.meta_agent.MetaAgentConfig` s over the
validation sets of docs/meta-agent.md §6 and ranks them by the mean margin over the issue's
target; ``--split test`` reports one chosen configuration on the test sets.
"""

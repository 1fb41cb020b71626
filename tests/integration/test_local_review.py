"""Defects of the demo's reports found in review, against the shared local stack."""

from __future__ import annotations


def test_regime_report_accounts_for_a_re_emitted_features_copy(clean_stack):
    """A features retry re-emits a feature vector (the features report calls it a re-emitted
    copy); the regime stage skips the copy as a duplicate. Its report must not count the copy as
    an input that came out nowhere."""
    from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
    from ensemble_trader.cli.feed import replay_bars
    from ensemble_trader.local.reports import features as features_report
    from ensemble_trader.local.reports import regime as regime_report
    from ensemble_trader.marketdata import load_arch

    stack = clean_stack.stack
    features, regime = clean_stack.emulator(["features"]), clean_stack.emulator(["regime"])
    replay_bars([load_arch("sp500")[:100]], KinesisPublisher(settings=stack.settings), "market-data")
    features.run_until_drained()
    key, data = clean_stack.new_records("features")[50]
    stack.client("kinesis").put_record(StreamName=stack.name("features"), PartitionKey=key, Data=data)
    regime.run_until_drained()

    assert "(+1 re-emitted copies" in features_report.summarize(stack)
    text = regime_report.summarize(stack)
    assert "out + rejected = 100 of 100 in: every record accounted for" in text
    assert "100  distinct bars on features (+1 re-emitted copies" in text

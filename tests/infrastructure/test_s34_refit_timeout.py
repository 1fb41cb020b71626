"""The daily regime refit has a timeout of its own, Lambda's largest, while the stream functions
keep theirs: the refit shared the regime function's 30 s, and its Baum-Welch pass grows with the
symbols (about 0.5 s per symbol of 2,000 rows on one core), so a stage trading some 50 symbols
would have timed out every day. Its dashboard row draws the duration against that timeout."""

from __future__ import annotations

import json

from ensemble_trader.constants import FUNCTIONS, REFIT_TIMEOUT_SECONDS, function_spec

from infra_cdk.constructs.functions import function_name


def _timeouts(synth) -> dict[str, int]:
    return {p["FunctionName"]: p["Timeout"] for p in synth.props("AWS::Lambda::Function") if "FunctionName" in p}


def test_the_refit_runs_with_its_own_timeout_and_the_other_entries_with_their_functions(real):
    timeouts = _timeouts(real)
    assert timeouts[function_name("prod", "regime.refit")] == REFIT_TIMEOUT_SECONDS == 900
    for spec in FUNCTIONS:
        assert timeouts[function_name("prod", spec.logical)] == spec.timeout_seconds
        for extra in spec.extra_entries:
            if (spec.logical, extra) != ("regime", "refit"):
                assert timeouts[function_name("prod", f"{spec.logical}.{extra}")] == spec.timeout_seconds


def test_timeout_of_an_entry_without_one_of_its_own_is_the_functions():
    regime = function_spec("regime")
    assert regime.timeout_of("refit") == REFIT_TIMEOUT_SECONDS
    assert regime.timeout_of() == regime.timeout_of("handler") == regime.timeout_seconds == 30
    assert function_spec("orders").timeout_of("reconcile") == function_spec("orders").timeout_seconds


def test_the_refit_dashboard_row_draws_its_own_timeout(real):
    name = function_name("prod", "regime.refit")
    bodies = [json.dumps(p["DashboardBody"]) for p in real.props("AWS::CloudWatch::Dashboard")]
    text = "".join(bodies)
    assert f"{name}: duration (ms) against its {REFIT_TIMEOUT_SECONDS} s timeout" in text
    assert f"{name}: duration (ms) against its 30 s timeout" not in text

"""Infinite posterior draws stay valid JSON in a selection and in the meta-agent's explanation.

Under the textbook vague prior Gamma(0.001, 0.001) on a Gaussian sampler's precision, about half
the precisions drawn before an arm's first reward underflow to 0 and the draw is ±infinity. The
explanation detail wrote those as floats: pydantic put them into the intent's JSON body as the
strings "Infinity" / "-Infinity", so the intent read back from the queue or the decisions row was
not the one decided, and the decisions row held the non-standard token Infinity."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
from ensemble_trader.domain.bandits import GaussianThompson
from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentStep
from ensemble_trader.domain.models import OrderIntent

from tests.unit.test_meta_agent import path, run

VAGUE = {"alpha0": 0.001, "beta0": 0.001}


def _quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():  # numpy warns of the division by a precision of 0
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def test_a_selection_with_infinite_draws_is_valid_json_with_their_signs() -> None:
    learner = GaussianThompson(4, random_state=1, **VAGUE)
    selection = _quietly(learner.select)
    assert np.isposinf(selection.samples).any() and np.isneginf(selection.samples).any()  # the case at hand
    samples = json.loads(json.dumps(selection.as_dict(), allow_nan=False))["samples"]
    for drawn, written in zip(selection.samples.tolist(), samples, strict=True):
        assert written == (drawn if math.isfinite(drawn) else ("inf" if drawn > 0 else "-inf"))


def test_an_intent_explained_by_infinite_draws_reads_back_equal_and_its_detail_is_json() -> None:
    prices, regimes, targets = path(30, seed=1)
    step = MetaAgentStep(MetaAgentConfig.create(policy="thompson", mode="select", context="global",
                                                policy_params=VAGUE))
    _, decisions = _quietly(run, step, prices, regimes, targets)
    intent = decisions[0].intent
    samples = {name: agent["sample"] for name, agent in intent.explanation_detail["agents"].items()}
    assert set(samples.values()) >= {"inf", "-inf"}, samples  # the first bar's draws: no agent rewarded yet
    chosen = intent.explanation_detail["chosen"]
    assert samples[chosen] == "inf" and "draw inf)" in intent.explanation_detail["why"]
    for decision in decisions:
        body = decision.intent.model_dump_json()
        assert OrderIntent.model_validate_json(body) == decision.intent
        json.dumps(decision.intent.explanation_detail, allow_nan=False)

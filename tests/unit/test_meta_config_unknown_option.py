"""An unknown meta-agent option (`--meta-config`, ET_META_CONFIG) is named as unknown, with the
closest option when one is close, else the list: pydantic's "Extra inputs are not permitted" left
a user with a misspelt `regime_prior_round` guessing."""

from __future__ import annotations

import pytest
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.meta_agent import MetaAgentConfig


def test_a_misspelt_option_names_the_closest():
    with pytest.raises(InvalidMessageError) as caught:
        MetaAgentConfig.create(regime_prior_round=300)
    assert str(caught.value) == ("invalid MetaAgentConfig: regime_prior_round=300: unknown option; "
                                 "did you mean regime_prior_rounds?")


def test_an_option_like_none_lists_them_all():
    with pytest.raises(InvalidMessageError) as caught:
        MetaAgentConfig.create(zzz=1)
    text = str(caught.value)
    assert text.startswith("invalid MetaAgentConfig: zzz=1: unknown option; the options are ")
    assert all(name in text for name in MetaAgentConfig.model_fields)


def test_other_problems_keep_pydantics_words():
    with pytest.raises(InvalidMessageError) as caught:
        MetaAgentConfig.create(shrinkage="lots")
    assert "unknown option" not in str(caught.value) and "shrinkage='lots'" in str(caught.value)


def test_the_backtest_flag_shows_it(capsys):
    from ensemble_trader.cli import main

    assert main(["backtest", "--meta-config", '{"vol_targt": 0.1}', "--bars", "synth:realistic:1:300"]) == 1
    assert "vol_targt=0.1: unknown option; did you mean vol_target?" in capsys.readouterr().err

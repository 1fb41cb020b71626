"""A data spec named twice in ``bars`` or ``validation_bars`` is refused, naming it.

It was read twice: every agent whose data it was trained on it with twice the weight of the
other series (two tracks of the environment, drawn twice as often), counted it twice in the
observation statistics and the pooled validation score, and the manifest listed it twice. Each
refusal test fails on the code before.
"""

from __future__ import annotations

import pytest
from ensemble_trader.cli import main
from pydantic import ValidationError

import training.agents.train as train
from training.agents.train import TrainConfig

SPEC = "synth:realistic:11:1200"


@pytest.mark.parametrize("bars", [f"{SPEC},{SPEC}", f"{SPEC}, synth:mean_reverting:12:1200 ,{SPEC}",
                                  [SPEC, "synth:mean_reverting:12:1200", SPEC]])
def test_a_repeated_bars_spec_is_refused(bars):
    with pytest.raises(ValidationError, match=rf"'{SPEC}' is given more than once; name each data set once"):
        TrainConfig.model_validate({"bars": bars})


def test_a_repeated_validation_spec_is_refused():
    with pytest.raises(ValidationError, match=r"validation_bars=\['v.csv', 'w.csv', 'v.csv'\]: 'v.csv' is given more"):
        TrainConfig.model_validate({"bars": SPEC, "validation_bars": "v.csv,w.csv,v.csv"})


def test_the_cli_refuses_it_before_reading_any_bar(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "load_series", lambda *a, **k: pytest.fail("bars were read"))
    code = main(["train", "agents", "--quick", "--no-progress", "--out", str(tmp_path / "o"),
                 "--bars", SPEC, "synth:mean_reverting:12:1200", SPEC])
    assert code == 1
    err = capsys.readouterr().err
    assert f"bars=['{SPEC}', 'synth:mean_reverting:12:1200', '{SPEC}']: '{SPEC}' is given more than once" in err
    assert not (tmp_path / "o").exists()


def test_distinct_specs_still_pass():
    config = TrainConfig.model_validate({"bars": f"{SPEC},synth:realistic:12:1200", "validation_bars": "v.csv"})
    assert config.bars == (SPEC, "synth:realistic:12:1200") and config.validation_bars == ("v.csv",)

"""The committed sample events that ``events/generate.py`` writes are exactly what it generates.

The events are used by tests and by ``sam local invoke`` (docs/deployment.md): a change to the
event builders of :mod:`ensemble_trader.local.events` or to the bars that did not regenerate them
would leave the samples describing shapes the emulator no longer produces. The generator writes
into a temporary folder here; ``events/`` is only read.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
HAND_KEPT = {"sqs-order-intents-batch.json", "eventbridge-reconcile.json"}


def test_generate_reproduces_the_committed_events_byte_for_byte(tmp_path):
    out = tmp_path / "events"
    result = subprocess.run([sys.executable, str(EVENTS / "generate.py"), "--out", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    generated = sorted(path.name for path in out.iterdir())
    committed = sorted(path.name for path in EVENTS.glob("*.json"))
    # every committed event is generated, except the two kept by hand
    assert generated == sorted(set(committed) - HAND_KEPT), (generated, committed)
    for name in generated:
        assert (out / name).read_bytes() == (EVENTS / name).read_bytes(), f"events/{name} differs from generate.py's"

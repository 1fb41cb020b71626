"""How the live demo tests start the demo: as a terminal's foreground job, whose Ctrl-C (SIGINT)
raises ``KeyboardInterrupt`` whatever the test run does with SIGINT.

A CI run started as a background job of a non-interactive shell ignores SIGINT (POSIX), an
ignored signal stays ignored across fork and exec, and Python installs its ``KeyboardInterrupt``
handler only over the default action: the demo spawned by such a run ignored the test's SIGINT,
ran on into its trading stages and the test failed after waiting 120 s.
"""

from __future__ import annotations

import signal
import sys

from tests.integration.test_local_review_live import foreground_job, sigint_ignored

_SIGINT_ACTION = (
    "import signal; h = signal.getsignal(signal.SIGINT); "
    "print('KeyboardInterrupt' if h is signal.default_int_handler else getattr(h, 'name', h))"
)


def _child_sigint_action() -> str:
    proc = foreground_job([sys.executable, "-c", _SIGINT_ACTION], env={})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out.strip()


def test_a_foreground_job_gets_keyboard_interrupt_from_a_run_that_ignores_sigint():
    with sigint_ignored():
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert _child_sigint_action() == "KeyboardInterrupt"


def test_a_foreground_job_gets_keyboard_interrupt_from_a_run_that_handles_sigint():
    assert _child_sigint_action() == "KeyboardInterrupt"


def test_sigint_ignored_restores_the_previous_handler():
    before = signal.getsignal(signal.SIGINT)
    with sigint_ignored():
        pass
    assert signal.getsignal(signal.SIGINT) is before

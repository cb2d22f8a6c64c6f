"""Each atheris harness, run under libFuzzer for a bounded time: a crash fails the test.

Every harness (``harness_<name>.py``) is run in its own process, the way one runs it by
hand, with ``-max_total_time`` and ``-runs`` bounds and a fixed ``-seed`` so CI explores
the same inputs each time. The committed corpus (``corpus/<name>/``) is read but never
written: libFuzzer writes new inputs into its *first* corpus directory, which here is a
temporary one, so CI leaves the checkout clean. A crash, an unexpected exception, a
broken contract assertion, a slow input (``-timeout``) or a memory blow-up (``-rss_limit_mb``)
leaves its input in the test's temporary directory; the failure message names the file
and the command that replays it.

To grow the committed corpus by hand, fuzz longer into it (new inputs are kept only if
they add coverage), then minimise it, keeping the named ``seed-*`` and ``regression-*``
files (``make_seeds.py`` writes the seeds; a crash's input, once fixed, is committed as
``regression-<what>``), and commit the result. ``-merge`` re-runs the harness as a
program, so the virtualenv's ``python3`` must come first on ``PATH``::

    export PATH=$PWD/.venv/bin:$PATH PYTHONPATH=.
    tests/fuzz/harness_envelope.py tests/fuzz/corpus/envelope -max_total_time=1800
    mkdir /tmp/min && cp tests/fuzz/corpus/envelope/seed-* /tmp/min/
    cp tests/fuzz/corpus/envelope/regression-* /tmp/min/ 2>/dev/null
    tests/fuzz/harness_envelope.py -merge=1 /tmp/min tests/fuzz/corpus/envelope
    rm -r tests/fuzz/corpus/envelope && mv /tmp/min tests/fuzz/corpus/envelope
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
HARNESSES = ("callback", "plaid_webhook", "profile", "envelope")
SECONDS = int(os.environ.get("FUZZ_SECONDS", "20"))
MAX_RUNS = 2_000_000
MIN_RUNS = 1_000  # a harness that stops early has tested nothing
SEED = 1

pytestmark = pytest.mark.fuzz


@pytest.mark.parametrize("name", HARNESSES)
def test_harness_finds_no_crash(name: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    found = tmp_path / "new-inputs"
    found.mkdir()
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    command = [
        sys.executable, str(HERE / f"harness_{name}.py"), str(found), str(HERE / "corpus" / name),
        f"-max_total_time={SECONDS}", f"-runs={MAX_RUNS}", f"-seed={SEED}", "-max_len=4096",
        "-timeout=10", "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
    ]
    # TMPDIR: the harnesses' scratch files (a keyring, a profile) stay in tmp_path.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        command, cwd=tmp_path, env=env,
        capture_output=True, text=True, errors="replace", timeout=SECONDS + 60, check=False,
    )
    start = result.stderr.find("=== Uncaught Python exception")
    log = result.stderr[start:start + 6000] if start >= 0 else result.stderr[-6000:]
    crashes = sorted(artifacts.iterdir())
    replay = "\n".join(
        f"  {path}\n  replay: PYTHONPATH=. {Path(sys.executable).name} "
        f"tests/fuzz/harness_{name}.py {path}" for path in crashes
    )
    assert not crashes, f"harness_{name} failed:\n{replay}\n{log}"
    assert result.returncode == 0, log
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done is not None, log
    assert int(done.group(1)) >= MIN_RUNS, log

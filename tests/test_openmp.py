"""torch's OpenMP pool sleeps when it waits, in every f5build process (f5build.openmp): unless the user
names a policy, and set before torch is loaded, which is the only time OpenMP reads it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from f5build.openmp import WAIT_POLICY, passive_waits


def test_passive_waits_unless_the_environment_names_a_policy():
    env: dict[str, str] = {}
    assert passive_waits(env) and env == {WAIT_POLICY: "PASSIVE"}
    env = {WAIT_POLICY: "ACTIVE"}
    assert not passive_waits(env) and env == {WAIT_POLICY: "ACTIVE"}
    env = {WAIT_POLICY: " "}  # named but empty is no choice
    assert passive_waits(env) and env[WAIT_POLICY] == "PASSIVE"


@pytest.mark.parametrize(("given", "seen"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_entry_point_sets_the_policy_before_torch_loads(given: str | None, seen: str):
    """`python -m f5build` imports no torch before main() sets the policy, so the torch that parsing a
    stage's options or running it loads afterwards runs under it."""
    code = (
        "import os, sys\n"
        "from f5build.cli import main\n"
        "assert 'torch' not in sys.modules, 'f5build.cli imported torch'\n"
        "try:\n"
        "    main(['train', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import torch\n"
        "print('policy', os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY}
    if given is not None:
        env[WAIT_POLICY] = given
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[-1] == f"policy {seen}"

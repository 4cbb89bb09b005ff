"""The allocator setting changes where memory comes from, never a number (issue 13)."""
import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from mddbench.allocator import ENV, configure_allocator

_PROBE = """
import json, os, resource, torch
from mddbench.allocator import configure_allocator
from mddbench.nn.networks import create_network
applied = configure_allocator()
torch.set_num_threads(1)
size, batch = int(os.environ.get("PROBE_SIZE", 28)), int(os.environ.get("PROBE_BATCH", 64))
net = create_network("convnet", 1, 2, size)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(batch, 1, size, size), torch.arange(batch) % 2
def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults, "env": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
                  "mmap_max": os.environ.get("MALLOC_MMAP_MAX_")}))
"""


def _probe(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != ENV}
    return {**env, **extra}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_raised_thresholds_stop_the_page_faults_and_reach_child_processes():
    tuned, default = _probe(_env()), _probe(_env(**{ENV: "default"}))
    assert tuned["applied"] and not default["applied"]
    assert tuned["env"] == str(1 << 30) and default["env"] is None
    assert tuned["mmap_max"] is None and default["mmap_max"] is None
    heap = _probe(_env(**{ENV: "heap"}))
    assert heap["applied"] and heap["mmap_max"] == "0"  # heap only, in child processes too
    # Five ConvNet steps at batch 64 after a warm-up: by default every step maps its activation
    # buffers afresh and faults them in page by page (~20,000 faults a step); with the raised
    # thresholds the freed buffers are reused.
    assert default["faults"] > 5 * 5000
    assert tuned["faults"] < default["faults"] / 4


def test_an_unknown_allocator_setting_is_refused(monkeypatch):
    from mddbench import allocator
    from mddbench.errors import ConfigError

    monkeypatch.setenv(ENV, "jemalloc")
    with pytest.raises(ConfigError, match="thresholds, heap, default"):
        allocator.setting()


def test_configure_allocator_is_idempotent():
    assert configure_allocator() == configure_allocator()


def _run(tmp_path, name: str, env: dict) -> tuple[list, dict]:
    out = tmp_path / name
    subprocess.run([sys.executable, "-m", "mddbench", "run", "--method", "mtt", "--dataset", "demo", "--ipc", "1",
                    "--budget", "smoke", "--hp", "iterations=3", "--eval-n-models", "1", "--eval-epochs", "5",
                    "--device", "cpu", "--quiet", "--out", str(out),
                    "--expert-cache", str(out / "experts")], env=env, check=True, capture_output=True)
    run = next((out / "runs").iterdir())
    record = json.loads((run / "result_convnet.json").read_text())
    return record["metrics"], load_file(str(run / "synset.safetensors"))


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_an_mtt_run_is_bit_identical_under_both_settings(tmp_path):
    """Experts, distillation and evaluation, each in its own process, with and without the setting."""
    tuned_models, tuned_set = _run(tmp_path, "tuned", _env())
    default_models, default_set = _run(tmp_path, "default", _env(**{ENV: "default"}))
    assert tuned_models == default_models
    assert tuned_set.keys() == default_set.keys()
    for key in tuned_set:
        assert tuned_set[key].equal(default_set[key]), key

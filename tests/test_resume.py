"""Kill and resume: a server killed mid-run (even between a round's metrics row and its
checkpoint) resumes to the bit-identical result of an uninterrupted run, and a resume with
another configuration names the keys that changed.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fedadc.config.schema import RunConfig
from fedadc.federated.reference import train_reference
from fedadc.federated.results import RunDirectory
from tests.fault_support import small_run


def resumable_run(results_dir: str) -> RunConfig:
    """Used by the killed subprocess too: threads fixed so both processes compute alike."""
    return dataclasses.replace(
        small_run("adc", {"xi": 0.25}, rounds=4, local_steps=3),
        threads=1,
        results_dir=results_dir,
    )


KILLED_SCRIPT = """
import sys
from fedadc.federated.results import RunDirectory
from fedadc.federated.reference import train_reference
from tests.test_resume import resumable_run

run = resumable_run(sys.argv[1])
train_reference(run, results=RunDirectory.create(run, "killed"))
"""


def checkpoint_round(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=False)["round"])
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


def assert_same_run_directory(a: Path, b: Path) -> None:
    sa = torch.load(a / "checkpoint.pt", weights_only=False)
    sb = torch.load(b / "checkpoint.pt", weights_only=False)
    assert sa["global_head"] == sb["global_head"]  # serialized head: bit for bit
    for part in ("tail", "decoder"):
        assert sa[part].keys() == sb[part].keys()
        for key in sa[part]:
            assert torch.equal(sa[part][key], sb[part][key]), (part, key)
    assert sa["ledger"] == sb["ledger"] and sa["losses"] == sb["losses"]
    summary_a = json.loads((a / "summary.json").read_text())
    summary_b = json.loads((b / "summary.json").read_text())
    for key in ("bytes_up", "bytes_down", "final_accuracy", "rounds"):
        assert summary_a[key] == summary_b[key], key
    assert (a / "ledger.csv").read_text() == (b / "ledger.csv").read_text()
    rows = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3, 4]  # no duplicate, no gap


def test_a_killed_server_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL the training process as soon as round 2 is checkpointed (it is then inside
    round 3), resume from the directory, and end bit-identical to an uninterrupted run."""
    run = resumable_run(str(tmp_path))
    full = RunDirectory.create(run, "full")
    train_reference(run, results=full)

    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SCRIPT, str(tmp_path)],
        cwd=Path(__file__).parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    killed = tmp_path / "killed"
    deadline = time.monotonic() + 300
    try:
        while checkpoint_round(killed / "checkpoint.pt") < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint of round 2 in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = checkpoint_round(killed / "checkpoint.pt")
    assert 2 <= done < 4 and not (killed / "summary.json").exists()

    result = train_reference(run, results=RunDirectory(killed), resume=True)
    assert [h["round"] for h in result.history] == [1, 2, 3, 4]
    assert_same_run_directory(full.path, killed)


def test_a_kill_between_metrics_and_checkpoint_leaves_no_duplicate_round(tmp_path, monkeypatch):
    """The window the atomic checkpoint cannot close: round 3's metrics row is written,
    its checkpoint is not. Resuming must redo round 3 once, not record it twice."""
    run = resumable_run(str(tmp_path))
    full = RunDirectory.create(run, "full")
    train_reference(run, results=full)

    cut = RunDirectory.create(run, "cut")

    class KillAfterMetrics(Exception):
        pass

    original = RunDirectory.save_checkpoint

    def save_then_die(self, server, history):
        if history[-1]["round"] == 3:
            raise KillAfterMetrics  # after append_round(3), before its checkpoint
        original(self, server, history)

    with monkeypatch.context() as patch:
        patch.setattr(RunDirectory, "save_checkpoint", save_then_die)
        with pytest.raises(KillAfterMetrics):
            train_reference(run, results=cut)
    rows = (cut.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["round"] for r in rows] == [1, 2, 3]
    train_reference(run, results=cut, resume=True)
    assert_same_run_directory(full.path, cut.path)


def test_resume_with_another_configuration_names_the_keys(tmp_path):
    run = resumable_run(str(tmp_path))
    directory = RunDirectory.create(run, "a")
    other = dataclasses.replace(run, seed=run.seed + 1)
    with pytest.raises(ValueError, match=r"seed: 0 -> 1.*may change on resume"):
        train_reference(other, results=directory, resume=True)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint\.pt"):
        train_reference(run, results=directory, resume=True)


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    """A parallel sweep starts runs in the same second: each claims its own directory by
    creating it, so none crashes on another's name, from threads racing on one name."""
    from concurrent.futures import ThreadPoolExecutor

    run = resumable_run(str(tmp_path))
    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: RunDirectory.create(run, "same").path, range(16)))
    assert len(set(dirs)) == 16
    assert all((d / "config.json").is_file() for d in dirs)
    assert sorted(d.name for d in dirs) == sorted(["same"] + [f"same-{i}" for i in range(1, 16)])

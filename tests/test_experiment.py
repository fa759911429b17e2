"""Sweeps and reports: experiment files expand and compose, runs resume, reports aggregate.

Fast: the paper configurations are only composed (never trained) and the one training run
is a 2-client, 1-round toy.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
from pathlib import Path

import pytest

from fedadc.compression import compressor_params, create_compressor, list_compressors
from fedadc.compression.registry import ratio_params
from fedadc.config import compose, to_dict
from fedadc.experiment import expand, load_experiment, plan, run_experiment, run_name
from fedadc.experiment.cli import main as experiment_main
from fedadc.experiment.expand import format_value
from fedadc.experiment.report import main as report_main
from fedadc.federated.results import identity
from fedadc.model.spec import TokenSpec
from strategies.flower_runner import flower_run_config, to_toml
from strategies.run_config import overrides_from_flower

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: flwr's dependency
    import tomli as tomllib

TINY = [
    "federation.rounds=1",
    "federation.local_steps=2",
    "federation.num_clients=2",
    "model.kwargs.embed_dim=16",
    "model.kwargs.depth=2",
    "model.split_at=1",
    "threads=1",
]
PAPER = ("paper_cifar100_deit_tiny", "paper_food101_deit_small")


@pytest.fixture(scope="module")
def plans() -> dict:
    return {name: plan(load_experiment(name)) for name in ("digits_quick", "balance_grid", *PAPER)}


def _build_compressor(run) -> None:
    """Every run's method parameters are accepted by its compressor (cheap: no model)."""
    d = 384 if "small" in run.model.name else 192
    spec = TokenSpec(num_tokens=197, dim=d, num_classes=10)
    create_compressor(run.method.name, spec, **run.method.params)


def test_digits_quick_has_every_method_and_runs_base_once_per_seed(plans):
    assert len(expand(load_experiment("digits_quick"))) == 7 * 3 * 2
    runs, duplicates = plans["digits_quick"]
    assert (len(runs), duplicates) == (38, 4)
    methods = [p.run.method.name for p in runs]
    assert set(methods) == {
        "identity",
        "adc",
        "topk",
        "randtopk",
        "c3sl",
        "bottlenet",
        "quantization",
    }
    assert methods.count("identity") == 2 and methods.count("adc") == 6
    assert len({p.identity for p in runs}) == len(runs)
    for p in runs:
        assert p.run.data.source == "digits" and p.run.federation.mode == "sl"
        assert p.run.federation.budget_epochs == 2.0 and p.run.threads == 1
        assert p.run.optim.client_state == "keep"
        assert p.run.federation.budget_scope == "activations"  # equal communication
        _build_compressor(p.run)


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_follow_the_protocol(plans, name):
    runs, duplicates = plans[name]
    assert (len(runs), duplicates) == (34 * 3, 0)
    for p in runs:
        run = p.run
        assert run.model.pretrained and run.model.split_at == 3
        assert run.federation.mode == "sl" and run.federation.num_clients == 1
        assert run.federation.batch_size == 128 and run.learning_rate == 1e-4
        assert run.federation.budget_epochs == 10 and run.federation.budget_scope == "activations"
        assert run.data.source == "hub" and run.data.img_size == 224
        _build_compressor(run)
    assert {p.run.seed for p in runs} == {42, 51, 114}
    groups = {p.run.method.params.get("group_size") for p in runs if p.run.method.name == "c3sl"}
    assert groups == {2, 4, 8, 16, 32}
    adc = sorted({p.run.method.params["xi"] for p in runs if p.run.method.name == "adc"})
    assert adc == [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5]


def test_balance_grid_uses_explicit_ratios(plans):
    runs, _ = plans["balance_grid"]
    assert len(runs) == 25 * 2
    cells = {(p.run.method.params["batch_ratio"], p.run.method.params["token_ratio"]) for p in runs}
    assert len(cells) == 25
    for p in runs:
        assert "xi" not in p.run.method.params
        _build_compressor(p.run)


@pytest.mark.parametrize(
    "value",
    ["plain", "with space", "C:\\data\\cifar", "ends\\", "it's", "a,b", "null", 3, 0.5, True, None],
)
def test_format_value_reads_back_as_itself_in_hydra(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([f"key={format_value(value)}"])
    assert override.value() == value


def test_command_line_sweeps_and_replacements():
    assert len(expand(None, ["method=adc,topk", "seed=range(0,3)"])) == 6
    runs, _ = plan(load_experiment("digits_quick"), ["seed=0", "federation.rounds=2"])
    assert len(runs) == 19  # the seed axis is replaced, identity still de-duplicated
    assert {(p.run.seed, p.run.federation.rounds) for p in runs} == {(0, 2)}
    with pytest.raises(ValueError, match="nosuchkey"):
        plan(None, ["nosuchkey=1"])


def test_cli_dry_run_and_multirun_rule(tmp_path, capsys):
    assert experiment_main(["method=adc,topk", "--dry-run", "--out", str(tmp_path)]) == 2
    assert experiment_main(["-m", "method=adc,topk", "--dry-run", "--out", str(tmp_path)]) == 0
    assert "2 runs" in capsys.readouterr().out
    argv = ["experiment=digits_quick", "seed=1", "--dry-run", "--out", str(tmp_path)]
    assert experiment_main(argv) == 0
    out = capsys.readouterr().out
    assert "19 runs" in out and out.count(" todo ") == 19


def test_the_sweep_runs_with_the_runner_it_is_given(tmp_path):
    calls, opened = [], []

    def fake(planned, results, resume):
        calls.append((planned.run.seed, resume))
        (results.path / "summary.json").write_text(json.dumps({"final_accuracy": 1.0}))

    @contextlib.contextmanager
    def factory(args, out):
        opened.append(out)
        yield fake
        opened.append("closed")

    argv = ["-m", "method=identity", "seed=0,1", *TINY, "--out", str(tmp_path)]
    assert experiment_main([*argv, "--runner", "fake"], runners={"fake": factory}) == 0
    assert calls == [(0, False), (1, False)] and opened == [tmp_path.resolve(), "closed"]
    assert experiment_main(argv, runners={"fake": factory}) == 0  # done: skipped
    assert len(calls) == 2


def test_run_name_depends_on_the_config_not_on_how_it_is_spelled():
    a = compose(["method=topk", "xi=0.05", "seed=3"])
    b = compose(["seed=3", "xi=0.05", "method=topk"])
    assert run_name(a) == run_name(b)
    assert run_name(a).startswith("topk-r0.05-dirichlet0.5-s3-")
    assert run_name(a) != run_name(compose(["method=topk", "xi=0.05", "seed=4"]))


def test_run_experiment_runs_once_then_skips_and_resumes(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fedadc.experiment")
    path = run_experiment(["method=adc", *TINY], out_root=tmp_path)
    summary = path / "summary.json"
    assert summary.is_file() and (path / "config.json").is_file()
    stamp = summary.stat().st_mtime_ns
    again = run_experiment([*reversed(TINY), "method=adc"], out_root=tmp_path)
    assert again == path and summary.stat().st_mtime_ns == stamp
    assert "skipped" in caplog.text and "done" in caplog.text
    # an interrupted run (checkpoint, no summary) resumes instead of starting over
    os.remove(summary)
    run_experiment(["method=adc", *TINY], out_root=tmp_path)
    assert summary.is_file()
    assert len((path / "metrics.jsonl").read_text().splitlines()) == 1
    assert "resuming" in caplog.text


def test_runs_differing_only_in_where_or_how_they_execute_are_one_run():
    one = compose(["method=adc", *TINY])
    other = compose(["method=adc", *TINY, "threads=2", "federation.timeout_s=5"])
    assert identity(one) == identity(other) and run_name(one) == run_name(other)
    assert identity(one) != identity(compose(["method=adc", *TINY, "seed=1"]))
    runs, duplicates = plan(None, ["method=adc", *TINY[:-1], "threads=1,2"])
    assert (len(runs), duplicates) == (1, 1)


def test_every_method_names_its_own_ratio_parameters():
    assert ratio_params("topk") == {"ratio": "r"} and ratio_params("identity") == {}
    assert list(ratio_params("adc")) == ["xi", "batch_ratio", "token_ratio"]
    for name in list_compressors():
        assert set(ratio_params(name)) <= set(compressor_params(name)), name


def test_a_two_seed_sweep_is_one_run_per_seed_whatever_the_threads(tmp_path, capsys):
    root = tmp_path / "sweep"
    seeds = [["method=adc", *TINY, f"seed={seed}"] for seed in (0, 1)]
    paths = [run_experiment(overrides, out_root=root) for overrides in seeds]
    stamps = [(p / "summary.json").stat().st_mtime_ns for p in paths]
    # the same sweep with another thread count finds its runs finished
    again = [run_experiment([*o, "threads=2"], out_root=root) for o in seeds]
    assert again == paths
    assert [(p / "summary.json").stat().st_mtime_ns for p in paths] == stamps
    # ...and an interrupted one resumes under the other thread count
    os.remove(paths[1] / "summary.json")
    assert run_experiment([*seeds[1], "threads=2"], out_root=root) == paths[1]
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in paths)
    assert report_main([str(root), "--out", str(tmp_path / "report")]) == 0
    assert "2 runs in 1 groups" in capsys.readouterr().out
    with open(tmp_path / "report" / "results.csv") as fh:
        (row,) = csv.DictReader(fh)
    assert (row["n_seeds"], row["seeds"]) == ("2", "0 1")


def test_flower_mapping_composes_to_the_same_run():
    overrides = ["method=topk", "xi=0.05", "federation=sl", "optim.lr=null", *TINY]
    overrides += ["federation.budget_epochs=null", "data.path='/a b'", "data.source=disk"]
    flat = flower_run_config(overrides)
    assert flat["method"] == "topk" and flat["mode"] == "sl" and flat["rounds"] == 1
    assert flat["lr"] == 0.0 and flat["xi"] == 0.05 and flat["split-at"] == 1
    assert "threads=1" in flat["overrides"] and "model.kwargs.depth=2" in flat["overrides"]
    assert tomllib.loads(to_toml(flat)) == flat
    ours, theirs = compose(overrides), compose(overrides_from_flower(flat))
    assert identity(ours) == identity(theirs)


# ---------------------------------------------------------------- report

BASE = ["federation.rounds=2", "federation.num_clients=2"]


def _fake_run(
    root: Path, overrides: list[str], acc: float, nominal: float, up: int, **extra: object
) -> None:
    """A run directory written by hand, with known numbers (``extra``: more summary keys)."""
    run = compose([*BASE, *overrides])
    path = root / run_name(run)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(to_dict(run)))
    summary = {
        "final_accuracy": acc,
        "nominal_xi": nominal,
        "realised_xi": nominal * 0.9,
        "all_in_ratio": nominal * 2,
        "bytes_up": up,
        "bytes_down": up,
        "stop_reason": "rounds",
        "rounds": 2,
        **extra,
    }
    (path / "summary.json").write_text(json.dumps(summary))
    rows = [
        {"round": r, "test_accuracy": acc * r / 2, "bytes_up": up * r // 2,
         "bytes_down": up * r // 2, "realised_xi": nominal, "all_in_ratio": nominal, "wall_s": r}
        for r in (1, 2)
    ]  # fmt: skip
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_aggregates_over_seeds_and_plots(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, acc in ((0, 0.7), (1, 0.9)):
        _fake_run(runs / "a", ["method=adc", "xi=0.1", f"seed={seed}"], acc, 0.1, 1_000_000)
        _fake_run(runs, ["method=adc", "xi=0.25", f"seed={seed}"], acc - 0.1, 0.25, 2_000_000)
        _fake_run(runs, ["method=identity", f"seed={seed}"], 0.95, 1.0, 10_000_000)
    _fake_run(runs, ["method=topk", "xi=0.1", "seed=0"], 0.5, 0.122, 1_500_000)
    # the same configuration and seed again (e.g. once with Flower): a replicate, left out
    _fake_run(runs / "b", ["method=adc", "xi=0.1", "seed=0"], 0.1, 0.1, 1_000_000)
    for tb in (0.3, 0.7):
        for kn in (0.3, 0.7):
            ratios = [f"method.params.batch_ratio={tb}", f"method.params.token_ratio={kn}"]
            _fake_run(runs, ["method=adc", "~method.params.xi", *ratios], tb + kn, tb * kn, 5)
    out = tmp_path / "report"
    assert report_main([str(runs), "--out", str(out)]) == 0
    assert "11 runs in 8 groups" in capsys.readouterr().out
    with open(out / "results.csv") as fh:
        rows = {(r["method"], r["params"]): r for r in csv.DictReader(fh)}
    adc = rows[("adc", "xi=0.1")]
    assert float(adc["accuracy_mean"]) == pytest.approx(0.8)
    assert float(adc["accuracy_std"]) == pytest.approx(0.1)  # population std (np.std)
    assert (adc["n_seeds"], adc["seeds"]) == ("2", "0 1")
    assert float(adc["all_in_mb"]) == pytest.approx(2.0)
    assert float(adc["xi_realised"]) == pytest.approx(0.09)
    assert float(rows[("identity", "")]["accuracy_std"]) == pytest.approx(0.0)
    assert rows[("topk", "ratio=0.1")]["n_seeds"] == "1"
    md = (out / "results.md").read_text()
    assert "| adc | xi=0.1 | 0.1 | 0.09 | 0.2 | 2 | 0.8000 ± 0.1000 | - | 2 |" in md  # one protocol
    for name in ("accuracy_vs_xi", "accuracy_vs_communication", "balance_heatmap"):
        png = out / f"{name}.png"
        assert png.stat().st_size > 1024, name
        assert f"({name}.png)" in md


def test_report_shows_the_other_protocol_next_to_the_headline(tmp_path):
    runs = tmp_path / "runs"
    for seed, (unc, split) in enumerate(((0.7, 0.5), (0.9, 0.7))):
        both = {"final_accuracy_uncompressed": unc, "final_accuracy_split": split}
        _fake_run(runs, ["method=topk", f"seed={seed}"], unc, 0.1, 10,
                  test_protocol="uncompressed", **both)  # fmt: skip
        _fake_run(runs, ["method=bottlenet", f"seed={seed}"], split, 0.1, 10,
                  test_protocol="split", **both)  # fmt: skip
    out = tmp_path / "report"
    assert report_main([str(runs), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert "| 0.8000 ± 0.1000 (unc) | 0.6000 ± 0.1000 (split) | 2 |" in md  # topk
    assert "| 0.6000 ± 0.1000 (split) | 0.8000 ± 0.1000 (unc) | 2 |" in md  # bottlenet
    with open(out / "results.csv") as fh:
        rows = {r["method"]: r for r in csv.DictReader(fh)}
    assert rows["bottlenet"]["protocol"] == "split"
    assert float(rows["topk"]["accuracy_split_mean"]) == pytest.approx(0.6)
    assert float(rows["topk"]["accuracy_uncompressed_std"]) == pytest.approx(0.1)


def test_plots_draw_both_protocols(tmp_path, monkeypatch):
    """Accuracy vs xi and vs communication draw the headline protocol and the other one
    (dashed / dotted, same colour) for every compressed method."""
    from fedadc.experiment import plots
    from fedadc.experiment.groups import find_runs, group_runs

    runs = tmp_path / "runs"
    for seed in (0, 1):
        both = {"final_accuracy_uncompressed": 0.8, "final_accuracy_split": 0.6}
        _fake_run(runs, ["method=topk", f"seed={seed}"], 0.8, 0.1, 10,
                  test_protocol="uncompressed", **both)  # fmt: skip
    for path in runs.iterdir():  # per-round accuracy by protocol, as real runs record it
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        for row in rows:
            row["test_accuracy_uncompressed"] = row["test_accuracy"]
            row["test_accuracy_split"] = row["test_accuracy"] / 2
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    groups = group_runs(find_runs([runs]))
    legends = {}

    def keep_legend(fig, path):
        legends[path.name] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        return path

    monkeypatch.setattr(plots, "_save", keep_legend)
    plots.accuracy_vs_xi(groups, tmp_path / "xi.png", "t")
    plots.accuracy_vs_communication(groups, 0.1, tmp_path / "comm.png", "t")
    assert legends["xi.png"] == ["topk (uncompressed)", "topk (split)"]
    assert [label.split(", ")[-1] for label in legends["comm.png"]] == ["uncompressed", "split"]

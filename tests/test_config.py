"""Hydra conf/ -> RunConfig: defaults, the xi knob, strict keys, clear errors, Flower mapping."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import hydra
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fedadc.compression import create_compressor, list_compressors
from fedadc.config import (
    MethodConfig,
    ModelConfig,
    RunConfig,
    compose,
    conf_dir,
    to_dict,
    to_run_config,
    validate,
)
from fedadc.config.resolvers import bits_for, inverse_round
from fedadc.data import digits
from fedadc.federated.build import build_split
from fedadc.model import TokenSpec
from strategies.run_config import FLOWER_INTERNAL_KEYS, FLOWER_KEYS, overrides_from_flower

CONF = conf_dir()
METHOD_YAMLS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
PATH_DATA = {"local_disk", "imagefolder", "parquet"}  # need data.path


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_default_compose() -> None:
    run = compose()
    assert isinstance(run, RunConfig)
    assert run.method.name == "adc" and run.method.params == {"xi": 0.1}
    assert run.model.name == "vit_tiny_patch16_224" and run.model.split_at == 3
    assert run.model.kwargs == {
        "patch_size": 2,
        "embed_dim": 64,
        "depth": 6,
        "num_heads": 4,
        "mlp_ratio": 2.0,
    }
    assert not run.model.pretrained and run.model.checkpoint_path is None
    assert run.data.source == "digits"
    assert run.partition.kind == "dirichlet" and run.partition.alpha == 0.5
    assert run.federation.mode == "sfl" and run.federation.num_clients == 10
    assert (run.seed, run.device, run.results_dir) == (0, "cpu", "runs")
    assert run.evaluate_compressed is None and run.optim.lr is None
    assert run.wire.soft_label_dtype == "float32" and run.wire.hard_label_dtype == "int64"
    assert run.learning_rate == 1e-3  # from scratch


@pytest.mark.parametrize(
    "method, params",
    [
        ("topk", {"ratio": 0.05}),
        ("randtopk", {"ratio": 0.05}),
        ("bottlenet", {"ratio": 0.05}),
        ("adc", {"xi": 0.05}),
        ("adc_authors_split", {"xi": 0.05, "split_rule": "authors_code"}),
        ("c3sl", {"group_size": 20}),
        ("quantization", {"bits": 2}),
        ("identity", {}),
    ],
)
def test_xi_sets_every_method(method: str, params: dict) -> None:
    assert compose(["xi=0.05", f"method={method}"]).method.params == params


def test_c3sl_and_quantization_from_xi() -> None:
    assert compose(["method=c3sl", "xi=0.25"]).method.params == {"group_size": 4}
    assert compose(["method=quantization", "xi=0.25"]).method.params == {"bits": 8}
    assert (inverse_round(1.0), inverse_round(0.1), inverse_round(0.3)) == (1, 10, 3)
    assert (bits_for(1.0), bits_for(0.001), bits_for(0.1)) == (16, 1, 3)


@pytest.mark.parametrize("method", METHOD_YAMLS)
def test_every_method_yaml_builds(method: str) -> None:
    run = compose([f"method={method}"])
    spec = TokenSpec(num_tokens=17, dim=64, num_classes=10)  # vit_micro on 8x8 digits
    compressor = create_compressor(run.method.name, spec, **run.method.params)
    assert compressor.name == run.method.name
    assert 0.0 < compressor.nominal_xi(32) <= 1.0


def test_config_objects_are_plain_data_validated_where_used() -> None:
    """Building a config builds no model or compressor; compose and build_split validate
    it with the same errors, naming the key and the valid choices."""
    data = digits(seed=0)
    cases = [
        (ModelConfig(name="deit_tiny_patch16_22"), r"model\.name.*'deit_tiny_patch16_224'"),
        (MethodConfig("topk", {"ratio": 2}), r"method\.params\.ratio must be in \(0, 1\]"),
        (MethodConfig("nope", {}), r"method\.name must be one of \[.*'topk'"),
        (MethodConfig("topk", {"nope": 1}), r"unknown method\.params \['nope'\]"),
    ]
    for part, message in cases:
        key = "model" if isinstance(part, ModelConfig) else "method"
        run = RunConfig(**{key: part})
        for check in (lambda r=run: validate(r), lambda r=run: build_split(r, data)):
            with pytest.raises(ValueError, match=message):
                check()
    with pytest.raises(ValueError, match="device must be a torch device"):
        validate(RunConfig(device="tpu"))


def test_a_given_free_form_mapping_replaces_the_default() -> None:
    """OmegaConf merges mappings key by key; method.params and model.kwargs are replaced."""
    run = to_run_config({"method": {"name": "identity", "params": {}}, "model": {"kwargs": {}}})
    assert run.method.params == {} and run.model.kwargs == {}
    assert to_run_config({}).method == MethodConfig()


def test_every_registered_method_has_a_yaml() -> None:
    named = {OmegaConf.load(CONF / "method" / f"{m}.yaml").name for m in METHOD_YAMLS}
    assert named == set(list_compressors())


@pytest.mark.parametrize(
    "group, option",
    [(g, o) for g in ("model", "data", "partition", "federation", "optim") for o in options(g)],
)
def test_every_group_option_builds(group: str, option: str) -> None:
    extra = ["data.path=/data/x"] if group == "data" and option in PATH_DATA else []
    run = compose([f"{group}={option}", *extra])
    if group == "federation":  # a preset is its mode, or a shape of sfl
        mode, shape = {"ushape": ("sfl", "u")}.get(option, (option, "standard"))
        assert (run.federation.mode, run.federation.shape) == (mode, shape)
    if group == "partition":
        assert run.partition.kind == option


def test_unknown_group_option_lists_available() -> None:
    with pytest.raises(ValueError, match="config group 'method' has no option 'nope'") as info:
        compose(["method=nope"])
    for name in METHOD_YAMLS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "overrides, key, choices",
    [
        (["federation=nope"], "config group 'federation'", ["sfl", "sl"]),
        (["partition=nope"], "config group 'partition'", ["dirichlet", "iid", "pathological"]),
        (["model=nope"], "config group 'model'", ["vit_micro", "deit_tiny"]),
        (["data=nope"], "config group 'data'", ["digits", "parquet"]),
        (["method.name=nope"], "method.name", ["adc", "topk", "quantization"]),
        (["federation.mode=nope"], "federation.mode", ["sfl", "sl"]),
        (["partition.kind=nope"], "partition.kind", ["iid", "dirichlet", "pathological"]),
        (["data.source=nope"], "data.source", ["digits", "hub", "parquet"]),
        (["federation.head_update=x"], "federation.head_update", ["accumulated", "stale"]),
        (["federation.budget_scope=x"], "federation.budget_scope", ["all", "activations"]),
        (["wire.soft_label_dtype=x"], "wire.soft_label_dtype", ["float32", "float16"]),
        (["wire.hard_label_dtype=x"], "wire.hard_label_dtype", ["int64", "int16"]),
        (["method.params.mode=x"], "method.params.mode", ["double", "merge_only", "tokens_only"]),
        (["method.params.feature=x"], "method.params.feature", ["attention", "cls", "mean"]),
        (["method.params.split_rule=x"], "method.params.split_rule", ["sqrt", "authors_code"]),
        (["method.params.kmeans_backend=x"], "method.params.kmeans_backend", ["torch", "sklearn"]),
        (["model.name=deit_tiny_patch16_22"], "model.name", ["deit_tiny_patch16_224"]),
        (["device=tpu"], "device", ["cpu", "cuda"]),
    ],
)
def test_invalid_choices_name_the_key_and_the_choices(
    overrides: list[str], key: str, choices: list[str]
) -> None:
    """Fails at compose time, i.e. before any data, model or training."""
    with pytest.raises(ValueError) as info:
        compose(overrides)
    assert key in str(info.value)
    for choice in choices:
        assert repr(choice) in str(info.value) or choice in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "flat, key, choices",
    [
        ({"method": "nope"}, "'method'", METHOD_YAMLS),
        ({"mode": "nope"}, "'mode'", ["sfl", "sl"]),
        ({"partition": "nope"}, "'partition'", ["dirichlet", "iid", "pathological"]),
        ({"model": "nope"}, "'model'", ["deit_small", "deit_tiny", "vit_base", "vit_micro"]),
        ({"data": "nope"}, "'data'", ["digits", "parquet"]),
    ],
)
def test_flower_group_choices_name_the_flower_key(flat: dict, key: str, choices: list[str]) -> None:
    with pytest.raises(ValueError, match=f"Flower run-config {key} has no choice 'nope'") as info:
        compose(overrides_from_flower(flat))
    for choice in choices:
        assert repr(choice) in str(info.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=topk", "method.params.ratio=2"], r"method\.params\.ratio must be in \(0, 1\]"),
        (["method=c3sl", "method.params.group_size=0"], r"method\.params\.group_size"),
        (["method=topk", "~method.params.ratio"], r"needs method\.params \['ratio'\]"),
        (["federation.min_train_clients=11"], r"federation\.min_train_clients=11 can never"),
        (["federation.timeout_s=0"], r"federation\.timeout_s must be > 0"),
        (["federation.max_payload_bytes=0"], r"federation\.max_payload_bytes must be >= 1"),
        (["threads=0"], r"threads must be >= 1"),
    ],
)
def test_invalid_values_fail_at_compose_time(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compose(overrides)


@pytest.mark.parametrize("override", ["+federation.roundz=3", "federation.roundz=3"])
def test_unknown_key_override_names_it(override: str) -> None:
    with pytest.raises(ValueError, match=r"federation\.roundz") as info:
        compose([override])
    assert "rounds" in str(info.value) and "local_steps" in str(info.value)


@pytest.mark.parametrize("override", ["sead=1", "feder.rounds=1", "seed.x=1"])
def test_unknown_top_level_keys(override: str) -> None:
    with pytest.raises(ValueError, match="unknown config key"):
        compose([override])


@pytest.mark.parametrize(
    "file, line, key",
    [
        ("federation/sfl.yaml", "roundz: 3", "federation.roundz"),
        ("config.yaml", "sead: 1", "sead"),
    ],
)
def test_unknown_key_in_yaml_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str, line: str, key: str
) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    with open(conf / file, "a") as f:
        f.write(f"\n{line}\n")
    monkeypatch.setenv("FEDADC_CONF_DIR", str(conf))
    assert conf_dir() == conf.resolve()
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as info:
        compose()
    assert "valid keys" in str(info.value)


def test_missing_conf_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDADC_CONF_DIR", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="FEDADC_CONF_DIR"):
        compose()


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["federation.mode=xx"], "federation.mode"),
        (["federation.rounds=abc"], "federation.rounds"),
        (["federation.rounds=0"], "federation.rounds"),
        (["data=parquet"], "data.path"),
        (["xi=0"], "xi"),
        (["method.params.nope=1"], "method.params"),
    ],
)
def test_invalid_values_name_the_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        compose(overrides)


def test_overrides_of_keys_an_option_leaves_out() -> None:
    run = compose(
        "method=topk method.params.ratio=0.3 data=parquet data.path=/x model.kwargs.drop_rate=0.1"
    )
    assert run.method.params == {"ratio": 0.3}
    assert run.data.path == "/x" and run.model.kwargs["drop_rate"] == 0.1


def test_flower_round_trip() -> None:
    flower = {
        "method": "adc",
        "model": "vit_micro",
        "data": "parquet",
        "partition": "iid",
        "mode": "sl",
        "xi": 0.05,
        "alpha": 0.3,
        "num-clients": 3,
        "rounds": 2,
        "local-steps": 5,
        "steps-per-message": 0,
        "batch-size": 16,
        "budget-epochs": 0,
        "split-at": 2,
        "lr": 0.0,
        "seed": 7,
        "results-dir": "/tmp/my runs",
        "overrides": "method.params.split_rule=authors_code data.path=/x",
        "resume": "",
        "fast-sim": True,
    }
    overrides = overrides_from_flower(flower)
    groups = ["method=adc", "model=vit_micro", "data=parquet", "partition=iid", "federation=sl"]
    assert overrides[:5] == groups
    assert overrides[-2:] == ["method.params.split_rule=authors_code", "data.path=/x"]
    run = compose(overrides)
    assert run.method.params == {"xi": 0.05, "split_rule": "authors_code"}
    assert (run.data.source, run.data.path, run.partition.kind) == ("parquet", "/x", "iid")
    assert run.partition.alpha == 0.3
    fed = run.federation
    assert (fed.mode, fed.num_clients, fed.rounds) == ("sl", 3, 2)
    assert (fed.local_steps, fed.steps_per_message, fed.batch_size) == (5, 0, 16)
    assert fed.budget_epochs is None and run.optim.lr is None
    assert (run.model.split_at, run.seed, run.results_dir) == (2, 7, "/tmp/my runs")

    run = compose(overrides_from_flower({"budget-epochs": 2.5, "lr": 3e-4, "xi": 1}))
    assert run.federation.budget_epochs == 2.5 and run.optim.lr == 3e-4


def test_flower_rejects_unknown_and_mistyped_keys() -> None:
    with pytest.raises(ValueError, match="roundz") as info:
        overrides_from_flower({"roundz": 3})
    assert "rounds" in str(info.value)
    with pytest.raises(ValueError, match="'rounds' must be a number"):
        overrides_from_flower({"rounds": "3"})
    with pytest.raises(ValueError, match="'method' must be a string"):
        overrides_from_flower({"method": 1})
    with pytest.raises(ValueError, match=r"federation\.rounds must be int"):
        compose(overrides_from_flower({"rounds": 2.5}))


def test_pyproject_declares_exactly_the_flower_keys() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    with open(pyproject, "rb") as f:
        declared = tomllib.load(f).get("tool", {}).get("flwr", {}).get("app", {}).get("config")
    if declared is None:
        pytest.skip("pyproject has no [tool.flwr.app.config]")
    flat = {k for k, v in declared.items() if not isinstance(v, dict)}
    assert flat == set(FLOWER_KEYS) | FLOWER_INTERNAL_KEYS
    run = compose(overrides_from_flower(declared))  # the Flower defaults compose
    assert run.method.name == declared["method"]


@pytest.mark.parametrize(
    "overrides",
    [[], ["method=quantization", "federation=sl"], ["data=cifar100", "model=deit_tiny"]],
)
def test_to_dict_round_trip(overrides: list[str]) -> None:
    run = compose(overrides)
    plain = to_dict(run)
    assert json.loads(json.dumps(plain)) == plain
    assert to_run_config(OmegaConf.create(plain)) == run
    assert to_run_config(plain) == run


def test_compose_inside_an_initialised_hydra(tmp_path: Path) -> None:
    (tmp_path / "outer.yaml").write_text("a: 1\n")
    with hydra.initialize_config_dir(version_base=None, config_dir=str(tmp_path)):
        outer = GlobalHydra.instance().hydra
        assert compose(["method=topk"]).method.name == "topk"
        assert GlobalHydra.instance().hydra is outer
        assert hydra.compose("outer").a == 1
    assert not GlobalHydra.instance().is_initialized()
    assert compose().method.name == "adc"


def test_compose_accepts_a_string() -> None:
    assert compose("method=topk 'results_dir=/a b'").results_dir == "/a b"

"""Sweep YAML -> Optuna: distributions, nested blocks, samplers, pruners, storages, base configs.

Fast contracts, no training: every supported W&B distribution translates to
the Optuna distribution it means, values come back as the config expects
them, and everything unsupported fails at load time with the parameter's name.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from flexcnn.config import validate_config
from flexcnn.errors import ConfigError, UserError
from flexcnn.overrides import apply_overrides
from flexcnn.search.params import SUPPORTED
from flexcnn.search.pruners import make_pruner, min_epochs, pruner_name
from flexcnn.search.samplers import make_sampler, sampler_name
from flexcnn.search.space import build_space
from flexcnn.search.storage import mask_password, parse_storage
from flexcnn.search.study import plan_study
from flexcnn.search.sweep_file import load_sweep, parse_sweep
from flexcnn.search.wandb_hyperband import WandbHyperbandPruner

REPO = Path(__file__).resolve().parents[1]

# (W&B spec, expected Optuna distribution)
TRANSLATIONS = {
    "categorical": ({"values": ["relu", "gelu"]}, CategoricalDistribution(["relu", "gelu"])),
    "explicit categorical": (
        {"distribution": "categorical", "values": [32, 64]},
        CategoricalDistribution([32, 64]),
    ),
    "int min/max": ({"min": 1, "max": 4}, IntDistribution(1, 4)),
    "float min/max": ({"min": 0.0, "max": 0.5}, FloatDistribution(0.0, 0.5)),
    "uniform": ({"distribution": "uniform", "min": 0, "max": 1}, FloatDistribution(0.0, 1.0)),
    "int_uniform": ({"distribution": "int_uniform", "min": 2, "max": 6}, IntDistribution(2, 6)),
    "log_uniform_values": (
        {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
        FloatDistribution(1e-5, 1e-1, log=True),
    ),
    "log_uniform_values as YAML 1.1 strings": (
        {"distribution": "log_uniform_values", "min": "1e-4", "max": "3e-2"},
        FloatDistribution(1e-4, 3e-2, log=True),
    ),
    "inv_log_uniform_values": (
        {"distribution": "inv_log_uniform_values", "min": 0.01, "max": 1.0},
        FloatDistribution(0.01, 1.0, log=True),
    ),
    "q_uniform int q": (
        {"distribution": "q_uniform", "min": 16, "max": 128, "q": 16},
        IntDistribution(16, 128, step=16),
    ),
    "q_uniform float q": (
        {"distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": 0.1},
        FloatDistribution(0.0, 0.5, step=0.1),
    ),
    "q_log_uniform_values q=1": (
        {"distribution": "q_log_uniform_values", "min": 16, "max": 256, "q": 1},
        IntDistribution(16, 256, log=True),
    ),
    "q_log_uniform_values q=8": (
        {"distribution": "q_log_uniform_values", "min": 16, "max": 256, "q": 8},
        FloatDistribution(16.0, 256.0, log=True),
    ),
    "log_uniform (natural-log bounds)": (
        {"distribution": "log_uniform", "min": math.log(1e-4), "max": math.log(1e-1)},
        FloatDistribution(1e-4, 1e-1, log=True),
    ),
}


@pytest.mark.parametrize("case", list(TRANSLATIONS), ids=list(TRANSLATIONS))
def test_every_supported_distribution_translates(case: str) -> None:
    spec, expected = TRANSLATIONS[case]
    space = build_space({"optim.lr" if "log" in case or "uniform" in case else "model.activation": spec})
    (param,) = space.params
    got = param.distribution
    assert type(got) is type(expected)
    if isinstance(expected, CategoricalDistribution):
        assert tuple(got.choices) == tuple(expected.choices)  # type: ignore[attr-defined]
    else:
        for attr in ("low", "high", "step", "log"):
            want, have = getattr(expected, attr), getattr(got, attr)
            assert have == pytest.approx(want) if isinstance(want, float) else have == want, attr


def test_constants_are_fixed_overrides_not_searched() -> None:
    space = build_space(
        {
            "train.epochs": {"value": 3},
            "data.augment": {"distribution": "constant", "value": "none"},
            "optim": {"value": {"name": "sgd", "momentum": 0.8}},
        }
    )
    assert space.params == ()
    assert space.constants == {"train.epochs": 3, "data.augment": "none", "optim.name": "sgd", "optim.momentum": 0.8}


def test_quantised_log_values_round_like_wandb() -> None:
    space = build_space({"data.batch_size": {"distribution": "q_log_uniform_values", "min": 16, "max": 256, "q": 8}})
    (param,) = space.params
    assert param.decode(37.9) == 40 and isinstance(param.decode(37.9), int)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        value = space.suggest(study.ask())["data.batch_size"]
        assert isinstance(value, int) and value % 8 == 0 and 16 <= value <= 256


def test_nested_blocks_become_dotted_names() -> None:
    space = build_space(
        {
            "model": {
                "parameters": {
                    "activation": {"values": ["relu", "gelu"]},
                    "conv_dropout": {"min": 0.0, "max": 0.3},
                }
            },
            "optim": {"parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}},
            "logging": {"parameters": {"wandb": {"parameters": {"num_samples": {"value": 0}}}}},
        }
    )
    assert space.names == ["model.activation", "model.conv_dropout", "optim.lr"]
    assert space.constants == {"logging.wandb.num_samples": 0}


def test_list_valued_choices_come_back_as_lists_and_configs_validate() -> None:
    choices = [[8, 16], [16, 32, 64]]
    space = build_space({"model.num_filters": {"values": choices}, "model.kernel_size": {"values": [3, [3, 5]]}})
    dist = space.param("model.num_filters").distribution
    assert isinstance(dist, CategoricalDistribution)
    assert all(isinstance(c, str) for c in dist.choices)  # stored as JSON text: Optuna cannot store lists
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        values = space.suggest(trial)
        assert values["model.num_filters"] in choices
        seen.add(tuple(values["model.num_filters"]))
        study.tell(trial, 0.0)
        # decode() gives the same values back from what the study stored
        assert space.decode(study.trials[-1].params) == values
    assert seen == {tuple(c) for c in choices}
    overrides = {"model.num_filters": [8, 16], "model.kernel_size": [3, 5]}
    config = validate_config(apply_overrides({}, overrides))
    assert config.model.filters() == [8, 16] and config.model.kernel_sizes() == [3, 5]


def test_mapping_choices_merge_into_their_section() -> None:
    space = build_space({"optim": {"values": [{"name": "sgd", "lr": 0.1}, {"name": "adam"}]}})
    tree = {"optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01}}
    merged = apply_overrides(tree, {"optim": space.param("optim").decode(space.param("optim").distribution.choices[1])})  # type: ignore[attr-defined]
    assert merged["optim"] == {"name": "adam", "lr": 0.003, "weight_decay": 0.01}
    assert tree["optim"]["name"] == "adamw"  # the base is not modified


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"optim.lr": {"distribution": "normal", "mu": 0, "sigma": 1}}, "optim.lr"),
        ({"optim.lr": {"distribution": "beta", "min": 0, "max": 1}}, "not supported"),
        ({"model.activation": {"values": ["relu"], "probabilities": [1.0]}}, "probabilities"),
        ({"optim.lrr": {"values": [0.1]}}, "did you mean 'lr'"),
        ({"optim.lr": {"min": 0.1, "max": 0.01}}, "less than max"),
        ({"optim.lr": {"distribution": "log_uniform_values", "min": 0, "max": 1}}, "min > 0"),
        ({"optim": {"values": [1, 2]}}, "config section"),
        ({"optim.lr.x": {"values": [1]}}, "is a value, not a config section"),
        ({"optim.lr": {"values": []}}, "non-empty list"),
        ({"optim.lr": {"distribution": "uniform", "values": [1, 2]}}, "uniform takes min, max"),
        ({"optim.lr": 0.1}, "expected a mapping"),
    ],
)
def test_unsupported_specs_fail_with_the_parameter_name(parameters: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_space(parameters)
    text = str(err.value)
    assert message in text
    name = next(iter(parameters))
    assert name.split(".")[0] in text


def test_unsupported_distribution_lists_the_supported_ones() -> None:
    with pytest.raises(ConfigError) as err:
        build_space({"optim.lr": {"distribution": "q_normal", "mu": 0, "sigma": 1, "q": 1}})
    for kind in ("uniform", "int_uniform", "log_uniform_values", "q_uniform", "q_log_uniform_values"):
        assert kind in str(err.value)
    assert len(SUPPORTED) >= 8


def test_grid_needs_discrete_parameters() -> None:
    space = build_space(
        {
            "model.activation": {"values": ["relu", "gelu"]},
            "model.num_filters": {"values": [[8], [8, 16]]},
            "train.epochs": {"distribution": "int_uniform", "min": 1, "max": 3},
            "data.batch_size": {"distribution": "q_uniform", "min": 32, "max": 64, "q": 16},
        }
    )
    assert space.grid_size() == 2 * 2 * 3 * 3
    assert space.grid()["data.batch_size"] == [32, 48, 64]
    continuous = build_space({"optim.lr": {"min": 0.001, "max": 0.1}})
    with pytest.raises(ConfigError, match=r"optim\.lr: method grid needs discrete values"):
        continuous.grid()


# --------------------------------------------------------------------------- samplers and pruners


def test_method_chooses_the_sampler_and_the_command_line_overrides_it() -> None:
    space = build_space({"model.activation": {"values": ["relu", "gelu"]}, "train.epochs": {"min": 1, "max": 2}})
    assert isinstance(make_sampler(sampler_name("grid"), space), optuna.samplers.GridSampler)
    assert isinstance(make_sampler(sampler_name("random"), space), optuna.samplers.RandomSampler)
    tpe = make_sampler(sampler_name("bayes"), space, seed=0)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._multivariate is True and tpe._constant_liar is True  # parallel workers spread out
    assert isinstance(make_sampler(sampler_name("bayes", "random"), space), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler("qmc", space), optuna.samplers.QMCSampler)
    assert isinstance(make_sampler("gp", space), optuna.samplers.GPSampler)
    with pytest.raises(ConfigError, match="--sampler must be one of"):
        sampler_name("bayes", "hyperopt")


def test_cmaes_needs_its_package_and_says_so() -> None:
    space = build_space({"optim.lr": {"min": 0.001, "max": 0.1}})
    if importlib.util.find_spec("cmaes") is None:
        with pytest.raises(UserError, match="needs the package\\(s\\) cmaes"):
            make_sampler("cmaes", space)
    else:
        assert isinstance(make_sampler("cmaes", space), optuna.samplers.CmaEsSampler)


def test_grid_workers_share_one_grid_order() -> None:
    # GridSampler maps trial numbers to grid points through a shuffled order: all workers must agree.
    space = build_space({"train.epochs": {"values": [1, 2, 3, 4, 5]}})
    orders = [make_sampler("grid", space, seed=None, worker_index=k)._all_grids for k in range(3)]  # type: ignore[attr-defined]
    assert orders[0] == orders[1] == orders[2]


def test_hyperband_from_early_terminate() -> None:
    early = {"type": "hyperband", "min_iter": 2, "max_iter": 9, "eta": 3}
    assert pruner_name(early) == "hyperband" and pruner_name(None) == "none"
    # The sweep file's hyperband is W&B's own rule (tests/test_wandb_hyperband_parity.py checks its decisions).
    pruner = make_pruner("hyperband", {"type": "hyperband", "min_iter": 2, "eta": 3}, max_epochs=20)
    assert isinstance(pruner, WandbHyperbandPruner) and pruner.rule.bands[:4] == (2, 6, 18, 54)
    assert pruner.rule.strict  # W&B's schema default, though its docs say false
    # max_iter wins over min_iter, as in W&B's code, and needs s
    with pytest.raises(ConfigError, match="max_iter needs s"):
        make_pruner("hyperband", early, max_epochs=20)
    assert make_pruner("hyperband", {**early, "s": 2}, max_epochs=20).rule.bands == (1, 3)


def test_optuna_hyperband_keeps_the_old_mapping() -> None:
    early = {"type": "hyperband", "min_iter": 2, "max_iter": 9, "eta": 3}
    pruner = make_pruner("optuna-hyperband", early, max_epochs=20)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (2, 9, 3)
    # max_iter defaults to the epochs of a trial
    assert make_pruner("optuna-hyperband", {"type": "hyperband", "min_iter": 1}, max_epochs=6)._max_resource == 6
    # W&B's alternative form: max_iter and s give min_iter = max_iter / eta**s
    assert min_epochs({"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3}) == 3
    with pytest.raises(ConfigError, match="min_iter"):
        make_pruner("optuna-hyperband", {"type": "hyperband", "min_iter": 5}, max_epochs=5)


def test_asha_is_an_explicit_choice_and_hyperband_stays_wandbs_rule() -> None:
    early = {"type": "hyperband", "min_iter": 3, "eta": 2}  # sweeps/flexcnn.yaml's
    assert pruner_name(early) == "hyperband"  # the sweep file's early_terminate still means W&B's rule
    assert isinstance(make_pruner(pruner_name(early), early, max_epochs=6), WandbHyperbandPruner)
    for spec in (early, None):  # asha ignores early_terminate: from epoch 1, eta 4
        pruner = make_pruner(pruner_name(spec, "asha"), spec, max_epochs=6)
        assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
        assert (pruner._min_resource, pruner._reduction_factor, pruner._min_early_stopping_rate) == (1, 4, 0)
    assert pruner_name(None) == "none"  # no early_terminate: no pruning unless asked


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("asha", optuna.pruners.SuccessiveHalvingPruner),
        ("median", optuna.pruners.MedianPruner),
        ("percentile", optuna.pruners.PercentilePruner),
        ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_pruner_override(name: str, cls: type) -> None:
    assert isinstance(make_pruner(pruner_name(None, name), None, max_epochs=4), cls)


# --------------------------------------------------------------------------- sweep files


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _sweep(**extra: object) -> dict:
    return {
        "program": "flexcnn",
        "command": ["flexcnn", "train", "configs/demo-digits.yaml", "--args-json", "${args_json_file}"],
        "method": "random",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}},
        **extra,
    }


def test_base_config_is_found_in_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    sweep = load_sweep(_write(tmp_path / "s.yaml", _sweep()))
    assert sweep.base_config == Path("configs/demo-digits.yaml")
    assert sweep.metric == "val/acc" and sweep.direction == "maximize"
    # relative to the sweep file's folder when the working folder does not have it
    (tmp_path / "base.yml").write_text("train: {epochs: 2}\n")
    cmd = ["flexcnn", "train", "--set", "train.seed=3", "base.yml", "--args-json", "${args_json_file}"]
    other = load_sweep(_write(tmp_path / "t.yaml", _sweep(command=cmd)))
    assert other.base_config == tmp_path / "base.yml"
    assert other.fixed_overrides == ["train.seed=3"]
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_sweep(_write(tmp_path / "u.yaml", _sweep(command=["flexcnn", "train", "missing.yaml"])))


def test_base_config_is_found_above_the_sweep_file_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "configs").mkdir()
    (repo / "configs" / "x.yaml").write_text("train: {epochs: 2}\n")
    (repo / "sweeps" / "deep").mkdir(parents=True)
    sweep = _write(repo / "sweeps" / "deep" / "s.yaml", _sweep(command=["flexcnn", "train", "configs/x.yaml"]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_sweep(sweep).base_config == repo / "configs" / "x.yaml"
    # The working folder still comes first (where `wandb agent` runs the command).
    (elsewhere / "configs").mkdir()
    (elsewhere / "configs" / "x.yaml").write_text("train: {epochs: 3}\n")
    assert load_sweep(sweep).base_config == Path("configs/x.yaml")
    # Not found: every place tried is named, up to the repository root and no further.
    missing = _write(repo / "sweeps" / "deep" / "m.yaml", _sweep(command=["flexcnn", "train", "configs/none.yaml"]))
    with pytest.raises(ConfigError) as err:
        load_sweep(missing)
    message = str(err.value)
    for place in (elsewhere, repo / "sweeps" / "deep", repo / "sweeps", repo):
        assert str(place / "configs" / "none.yaml") in message
    assert str(tmp_path / "configs" / "none.yaml") not in message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metric": {"name": "accuracy", "goal": "maximize"}}, "not a per-epoch key"),
        ({"metric": {"name": "val/acc", "goal": "minimize"}}, "contradicts"),
        ({"metric": {"name": "val/acc"}}, "contradicts"),  # W&B's default goal is minimize
        ({"method": "hyperopt"}, "method must be one of"),
        ({"scheduler": {"engine": "wandb"}}, "unknown key(s) scheduler"),
        ({"controller": {"type": "remote"}}, "controller must be a mapping with type: cloud"),
        ({"metrics": [{"name": "val/acc"}, {"name": "val/loss"}]}, "controller.objectives"),
        ({"controller": {"type": "cloud", "objectives": ["test/acc"]}}, "unknown objective 'test/acc'"),
        ({"controller": {"type": "cloud", "objectives": ["params:maximize"]}}, "wrong way round"),
        ({"controller": {"type": "cloud", "objectives": ["val/loss"]}}, "exactly one of"),
        ({"early_terminate": {"type": "envelope"}}, "hyperband"),
        ({"controller": {"type": "cloud", "pruner": "asap"}}, "controller.pruner must be one of hyperband"),
        ({"run_cap": 0}, "run_cap"),
    ],
)
def test_bad_sweep_files_fail_at_load_time(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_sweep(_sweep(**change))
    assert message in str(err.value)


def test_controller_pruner_is_the_optuna_paths_and_the_command_line_still_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    early = {"type": "hyperband", "min_iter": 2, "eta": 2}
    sweep = parse_sweep(_sweep(early_terminate=early, controller={"type": "cloud", "pruner": "asha"}, run_cap=4))
    assert sweep.early_terminate == early  # what W&B agents of the file apply, untouched
    plan = plan_study(sweep)
    assert plan.settings.pruner == "asha" and isinstance(plan.pruner(), optuna.pruners.SuccessiveHalvingPruner)
    # The start-up line says where the rule came from and how to get W&B's instead.
    assert plan.notices == [
        "pruner asha from controller.pruner; W&B agents of this file apply its early_terminate "
        "(W&B's hyperband rule), as --pruner hyperband does here"
    ]
    by_hand = plan_study(sweep, pruner="hyperband")
    assert by_hand.settings.pruner == "hyperband" and isinstance(by_hand.pruner(), WandbHyperbandPruner)
    assert by_hand.notices == []
    # Without early_terminate the file's pruner applies without a word; several objectives cannot prune.
    alone = plan_study(parse_sweep(_sweep(controller={"type": "cloud", "pruner": "median"}, run_cap=4)))
    assert (alone.settings.pruner, alone.notices) == ("median", [])
    multi = parse_sweep(
        _sweep(controller={"type": "cloud", "pruner": "asha", "objectives": ["params:minimize"]}, run_cap=4)
    )
    assert plan_study(multi).settings.pruner == "none"
    assert "controller.pruner ignored" in plan_study(multi).notices[0]


def test_plan_resolves_budget_constants_and_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    params = {
        "model.activation": {"values": ["relu", "gelu"]},
        "train.epochs": {"values": [2, 4]},
        "data.limit": {"value": 300},
    }
    grid = plan_study(parse_sweep(_sweep(method="grid", parameters=params)))
    assert grid.settings.n_trials == 4 and grid.settings.sampler == "grid"
    assert grid.base_tree["data"]["limit"] == 300 and grid.base_tree["train"]["monitor"] == "val/acc"
    assert grid.max_epochs == 4
    capped = plan_study(parse_sweep(_sweep(method="grid", parameters=params, run_cap=3)))
    assert capped.settings.n_trials == 3
    assert plan_study(parse_sweep(_sweep(run_cap=7))).settings.n_trials == 7
    assert plan_study(parse_sweep(_sweep()), n_trials=5).settings.n_trials == 5
    with pytest.raises(ConfigError, match="--n-trials"):
        plan_study(parse_sweep(_sweep()))
    with pytest.raises(ConfigError, match=r"data\.limit"):
        plan_study(parse_sweep(_sweep(run_cap=2, parameters={"data.limit": {"value": -1}})))


# --------------------------------------------------------------------------- storage URLs


def test_storage_urls() -> None:
    assert parse_storage(None).kind == "journal" and parse_storage(None).url == "optuna-journal.log"
    assert parse_storage("runs/study.log").kind == "journal"
    assert parse_storage("x.journal").kind == "journal"
    assert parse_storage("journal:/tmp/anything").url == "/tmp/anything"
    assert parse_storage("sqlite:///study.db").kind == "rdb"
    pg = parse_storage("postgres://me:s3cret@db:5432/optuna")
    assert pg.kind == "rdb" and pg.url.startswith("postgresql://") and pg.has_heartbeat
    assert "s3cret" not in pg.display and "s3cret" not in pg.dashboard_command()
    assert mask_password("postgresql://u:p@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(UserError, match="redis"):
        parse_storage("redis://localhost")
    with pytest.raises(UserError, match="journal file"):
        parse_storage("study.txt")


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_translates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    sweep = load_sweep(path)
    plan = plan_study(sweep, n_trials=None if sweep.run_cap or sweep.method == "grid" else 10)
    assert plan.settings.metric == sweep.metric
    assert plan.base_tree["train"]["monitor"] == sweep.metric
    study = optuna.create_study(direction=sweep.direction, sampler=plan.sampler(seed=0), pruner=plan.pruner())
    values = plan.space.suggest(study.ask())
    validate_config(apply_overrides(plan.base_tree, values))  # a sampled trial is a valid config


def test_train_monitor_follows_the_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match=r"train\.monitor follows metric\.name"):
        plan_study(parse_sweep(_sweep(run_cap=2, parameters={"train.monitor": {"value": "val/loss"}})))


def test_only_connection_errors_are_waited_for() -> None:
    import sqlalchemy.exc as sa
    from optuna.exceptions import StorageInternalError

    from flexcnn.search.storage import is_connection_error

    down = sa.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    wrapped = StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = down
    assert is_connection_error(down) and is_connection_error(wrapped)
    bad_data = StorageInternalError("An exception is raised during the commit.")
    bad_data.__cause__ = sa.DataError("INSERT", {}, Exception("value too long"))
    assert not is_connection_error(bad_data)
    assert not is_connection_error(ValueError("no"))

"""Sweeps (vmr/pipeline/tune.py, workflows/tune.py): search-space parsing, and real sweeps on a private Ray cluster
(Ray Tune + ASHA, every trial a Ray Train run, MLflow parent/child runs, best config written, best model registered),
including a driver killed mid-sweep and restarted."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from vmr.errors import ConfigError
from vmr.pipeline.tune import check_distribution, overrides_of, representative, to_tune

ROOT = Path(__file__).resolve().parents[1]


# ---- the search space ------------------------------------------------------------------------------------------------


def test_search_space_entries_become_tune_domains():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = to_tune({"model.matr.gamma": {"loguniform": [0.01, 1.0]}, "model.a2fa.kernel_size": {"choice": [15, 21]},
                     "train.batch_size": {"randint": [8, 17]}, "train.lr": 1e-4, "x": {"grid": [1, 2]}})
    assert isinstance(space["model.matr.gamma"], Float) and isinstance(space["model.a2fa.kernel_size"], Categorical)
    assert isinstance(space["train.batch_size"], Integer) and space["train.lr"] == 1e-4
    assert space["x"] == {"grid_search": [1, 2]}
    lo, hi = space["model.matr.gamma"].lower, space["model.matr.gamma"].upper
    assert (lo, hi) == (0.01, 1.0)


@pytest.mark.parametrize("spec, message", [
    ({"loguniform": [0.0, 1.0]}, "positive low bound"),
    ({"uniform": [2.0, 1.0]}, "low < high"),
    ({"uniform": [1.0]}, "list of 2"),
    ({"choice": []}, "non-empty list"),
    ({"normal": [0, 1]}, "expected one of"),
    ({"uniform": [0, 1], "choice": [1]}, "expected one of"),
    ({"randint": [1.5, 4]}, "integers"),
])
def test_bad_distributions_are_refused_with_the_key_named(spec, message):
    with pytest.raises(ConfigError, match=message) as e:
        check_distribution("model.matr.gamma", spec)
    assert "search_space.model.matr.gamma" in str(e.value)


def test_sampled_values_become_overrides_the_config_parses_back():
    from vmr.config import parse_overrides

    params = {"model.matr.gamma": 0.0123456789, "train.lr": 3e-05, "model.a2fa.kernel_size": 21}
    parsed = parse_overrides(overrides_of(params))
    assert parsed["model"]["matr"]["gamma"] == pytest.approx(0.0123456789)
    assert parsed["train"]["lr"] == pytest.approx(3e-05) and isinstance(parsed["train"]["lr"], float)
    assert parsed["model"]["a2fa"]["kernel_size"] == 21
    assert representative({"loguniform": [0.5, 2]}) == 0.5 and representative({"choice": ["a"]}) == "a"


def test_a_search_key_the_training_config_does_not_have_fails_before_any_trial():
    from vmr.pipeline.tune import _check_space

    files = [str(ROOT / "configs" / "demo.yaml"), str(ROOT / "configs" / "demo_finetune.yaml")]
    _check_space({"model.matr.gamma": {"loguniform": [0.01, 1.0]}}, files, [])
    with pytest.raises(ConfigError, match="search_space key 'model.matr.gama'"):
        _check_space({"model.matr.gama": {"loguniform": [0.01, 1.0]}}, files, [])


def test_the_shipped_tune_config_resolves_and_every_space_fits_its_model():
    from vmr.config import resolve
    from vmr.pipeline.tune import SweepConfig, _check_space

    cfg = resolve(SweepConfig, [str(ROOT / "configs" / "tune.yaml")])
    assert set(cfg.search_space) == {"matr", "a2fa"}
    assert "model.matr.gamma" in cfg.search_space["matr"] and "model.a2fa.kernel_size" in cfg.search_space["a2fa"]
    assert any(k.startswith("model.matr.lambda_") for k in cfg.search_space["matr"])
    demo = [str(ROOT / "configs" / "demo.yaml"), str(ROOT / "configs" / "demo_finetune.yaml")]
    _check_space(cfg.search_space["matr"], demo, [])
    _check_space(cfg.search_space["a2fa"], [str(ROOT / "configs" / "finetune_text.yaml")], [])


# ---- real sweeps -----------------------------------------------------------------------------------------------------


def _mlflow(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _sweep_runs(client, sweep: str):
    exp = client.get_experiment_by_name("vmr-tune")
    parents = client.search_runs([exp.experiment_id],
                                 f"tags.`vmr.sweep` = '{sweep}' and tags.`vmr.sweep.role` = 'parent'")
    assert len(parents) == 1, [p.info.run_name for p in parents]
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    return parents[0], children


@pytest.mark.slow
def test_sweep_tracks_trials_as_children_writes_the_best_config_and_registers_the_best_model(demo_sweep):
    result, client = demo_sweep["result"], _mlflow(demo_sweep["tracking_uri"])
    parent, children = _sweep_runs(client, "demo-sweep")
    assert parent.info.status == "FINISHED"

    # every trial is a child of the one parent run, with its own training run and per-epoch validation metric
    assert len(children) == 3 == len(result["trials"])
    assert len({c.data.tags["vmr.trial_id"] for c in children}) == 3
    best_by_mlflow = {}
    for c in children:
        assert c.data.tags["vmr.sweep.role"] == "trial" and c.info.status in ("FINISHED", "KILLED")
        history = client.get_metric_history(c.info.run_id, "val/mIoU")
        assert history, c.data.tags["vmr.trial_id"]
        best_by_mlflow[c.data.tags["vmr.trial_id"]] = (max(m.value for m in history), c.info.run_id)
        assert (demo_sweep["workdir"] / "tune" / "demo-sweep-trials" / f"demo-sweep-{c.data.tags['vmr.trial_id']}"
                ).is_dir()
    # the winner is the trial with the best validation score that MLflow recorded
    top = max(score for score, _ in best_by_mlflow.values())
    winners = {t for t, (score, _) in best_by_mlflow.items() if score == top}  # trials can tie on a small val split
    assert result["best_trial"] in winners and result["best_trial"] == parent.data.tags["vmr.best.trial_id"]
    winner = result["best_trial"]
    assert result["metric_value"] == pytest.approx(best_by_mlflow[winner][0])

    # the best config: the training config with the winner's sampled values, ready for `vmr finetune --config`
    from vmr.pipeline.workflow import resolve_config

    best_file = Path(result["best_config"])
    assert best_file.is_file() and best_file.parent.name == "demo-sweep"
    cfg, _ = resolve_config("finetune", [str(best_file)], [])
    winner_params = next(t["params"] for t in result["trials"] if t["trial_id"] == winner)
    assert cfg.model.matr.gamma == pytest.approx(winner_params["model.matr.gamma"])
    assert cfg.train.lr == pytest.approx(winner_params["train.lr"])
    assert cfg.model.matr.d_model == 32 and cfg.run_name == ""  # the rest is the training config

    # the best model is registered from the winner's child run, and loads with the winner's hyperparameters
    name, version = result["registered"].removeprefix("models:/").split("/")
    mv = client.get_model_version(name, version)
    assert mv.run_id == best_by_mlflow[winner][1] and mv.tags["vmr.trial_id"] == winner
    from vmr.models.checkpoint import load_model

    os.environ.setdefault("MLFLOW_TRACKING_URI", demo_sweep["tracking_uri"])
    model, card = load_model(result["registered"])
    assert card.config["gamma"] == pytest.approx(winner_params["model.matr.gamma"])


@pytest.mark.slow
def test_a_killed_driver_is_restarted_and_the_sweep_resumes(private_ray_cluster, ops_demo_config, tune_driver,
                                                            tmp_path):
    start, last_json = tune_driver
    name = "resume-sweep"
    tune_dir = ops_demo_config.parent / "wd" / "tune"
    args = (f"name={name}", "num_samples=2", "max_concurrent_trials=1", "asha.grace_period=1", "seed=2")
    first = start(private_ray_cluster, ops_demo_config, *args, log=tmp_path / "first.log")
    try:
        # wait until Tune has saved its experiment state and a trial has written its epoch-0 checkpoint
        deadline, ckpt = time.monotonic() + 1200, None
        while time.monotonic() < deadline and first.poll() is None:
            found = sorted((tune_dir / f"{name}-trials").glob("*/checkpoint_epoch0000/vmr_checkpoint.json"))
            if found and any((tune_dir / name).glob("experiment_state*.json")):
                ckpt = found[0].parent
                break
            time.sleep(0.5)
        assert first.poll() is None and ckpt is not None, (tmp_path / "first.log").read_text()[-5000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)  # the driver dies; the cluster (and the storage) stay
        first.wait(60)
    written = ckpt.stat().st_mtime_ns
    assert not (tune_dir / name / "best_config.yaml").exists()
    client = _mlflow(f"sqlite:///{ops_demo_config.parent / 'wd' / 'mlflow.db'}")
    parent, _ = _sweep_runs(client, name)
    assert parent.info.status == "RUNNING"

    second = start(private_ray_cluster, ops_demo_config, *args, log=tmp_path / "second.log")
    rc = second.wait(1500)
    output = (tmp_path / "second.log").read_text(errors="replace")
    assert rc == 0, output[-6000:]
    result = last_json(output)
    assert result["restored"] and f"resuming sweep {name}" in output
    # one sweep, one parent run, one child run per trial (a restored trial continues its MLflow run)
    assert len(result["trials"]) == 2 and (tune_dir / name / "best_config.yaml").is_file()
    parent_after, children = _sweep_runs(client, name)
    assert parent_after.info.run_id == parent.info.run_id and parent_after.info.status == "FINISHED"
    assert len(children) == 2 and len({c.data.tags["vmr.trial_id"] for c in children}) == 2
    # the interrupted trial went on from its checkpoint instead of starting over: epoch 0 was not trained again
    assert ckpt.stat().st_mtime_ns == written
    assert (ckpt.parent / "checkpoint_epoch0001" / "vmr_checkpoint.json").is_file()
    run = ckpt.parent.name
    assert f"resuming {run} from" in output or f"{run}: all 2 epochs are done already" in output
    assert result["registered"]


def test_cli_refuses_a_misspelt_search_key_before_starting_anything(tmp_path, capsys):
    from vmr.cli import main

    cfg = tmp_path / "tune.yaml"
    cfg.write_text("search_space:\n  matr:\n    model.matr.gama: {loguniform: [0.01, 1.0]}\n")
    assert main(["tune", "--config", str(cfg), f"storage_path={tmp_path / 'tune'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "search_space key 'model.matr.gama'" in err
    assert not (tmp_path / "tune").exists()

"""The pretrain and finetune workflows end to end on a tiny demo archive: real rendered videos, real CLIP features
(random weights, ViT-S-32 to keep extraction short), Ray Data + Ray Train on a local Ray, a real MLflow store.

Runs share one module: pretraining once, then finetuning runs that start from its registered model. Each run is a few
epochs of a very small MATR; the tests check behaviour (what is logged, resumed, restarted, registered), not quality.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from fixtures.s3 import s3_credentials_in_env

from vmr.features.store import FeatureStore
from vmr.models.checkpoint import check_features, load_model, read_card
from vmr.pipeline.tracking import params_from_config
from vmr.pipeline.workflow import TrainingError, resolve_config, run_workflow

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

TINY = [
    "data.demo.n_videos=6", "data.demo.duration_range=[50,60]", "data.demo.size=[160,120]",
    "data.demo.length_range=[4,8]", "data.features.model=ViT-S-32", "data.features.pretrained=none",
    "data.stream.max_target=32", "data.stream.max_query=8",
    "data.clips.clip_min=4", "data.clips.clip_max=8", "data.clips.target_window_s=[20,30]", "data.clips.clips_per_video=2",
    "data.clip_draws=1", "data.val_clips_per_video=1",
    "data.pairs.window_min=20", "data.pairs.window_max=30", "data.pairs.pairs_per_instance=1",
    "model.matr.d_model=32", "model.matr.ff_dim=64", "model.matr.enc_layers=1", "model.matr.dec_layers=1",
    "model.matr.heads=2", "model.matr.queries=4",
    "train.batch_size=4", "train.plot_items=2", "train.torch_threads=1",
]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    started = not ray.is_initialized()
    if started:
        with s3_credentials_in_env():  # the workers' own credentials for the S3 tests (never forwarded by vmr)
            ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    if started:
        ray.shutdown()
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("train_e2e")


def _run(workflow: str, workdir, *overrides: str):
    cfg, files = resolve_config(workflow, None, TINY + [f"data.workdir={workdir}", *overrides])
    return run_workflow(workflow, cfg, config_files=files)


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def _steps_per_epoch(workdir) -> int:
    """Optimizer steps per finetuning epoch (1 worker): the train pairs the workflow builds, over the batch size."""
    from vmr import annotations
    from vmr.data.match_pairs import build_match_pairs

    cfg, _ = resolve_config("finetune", None, TINY + [f"data.workdir={workdir}"])
    store = FeatureStore(str(workdir / "features"))
    ann = annotations.load(str(workdir / "demo" / "annotations" / "matches.csv"), "matches", store=store)
    n = len(build_match_pairs(ann.records, store, cfg.data.pairs)["train"])
    return math.ceil(n / cfg.train.batch_size)


@pytest.fixture(scope="module")
def pretrained(local_ray, workdir):
    return _run("pretrain", workdir, "run_name=pre", "train.epochs=2")


def test_pretrain_end_to_end(pretrained, workdir):
    r = pretrained
    assert r.samples["train"] > 0 and r.samples["val"] > 0
    # checkpoints: vmr format, with the features they were made from, in the run folder with its config
    card = read_card(r.best_checkpoint)
    assert card.kind == "matr" and card.config["d_model"] == 32 and card.config["in_dim"] == 384
    assert card.features.model == "ViT-S-32" and card.features.pretrained == "none" and card.features.dim == 384
    assert read_card(r.latest_checkpoint).extra["epoch"] == 1
    assert (workdir / "runs" / "pre" / "vmr_config.yaml").is_file()
    saved, _ = resolve_config("pretrain", [str(workdir / "runs" / "pre" / "vmr_config.yaml")], [])
    assert saved.train.epochs == 2 and saved.data.features.store == str(workdir / "features")
    check_features(card, FeatureStore(str(workdir / "features")))
    # MLflow: params = the resolved config, per-epoch metrics, artifacts, the registered model
    client = _client(r.tracking_uri)
    run = client.get_run(r.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["vmr.run_name"] == "pre"
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.matr.d_model"] == "32"
    assert run.data.params["data.features.model"] == "ViT-S-32"
    assert _steps(client, r.mlflow_run_id, "train/loss") == [0, 1]
    assert _steps(client, r.mlflow_run_id, "val/mIoU") == [0, 1]
    arts = _artifacts(client, r.mlflow_run_id)
    assert {"config.yaml", "plots/val_moments.png", "plots/val_matrix_0.png"} <= arts
    assert r.registered == "models:/vmr-matr-pretrained/1"
    assert client.get_model_version("vmr-matr-pretrained", "1").tags["vmr.features.model"] == "ViT-S-32"


def test_finetune_resumes_after_an_interruption(pretrained, workdir, tmp_path):
    """A run killed in its second epoch (no restarts allowed) fails; the same command again continues from the
    checkpoint of the first epoch (epoch 0 is not trained again) and finishes, in the same MLflow run."""
    spe = _steps_per_epoch(workdir)
    assert spe >= 2
    marker = tmp_path / "killed"
    with pytest.raises(TrainingError, match="--run-name ft"):
        _run("finetune", workdir, "run_name=ft", "train.epochs=2", "trainer.max_failures=0",
             f"debug.kill_at_step={spe + 1}", f"debug.kill_marker={marker}")
    assert marker.is_file()
    client = _client(f"sqlite:///{workdir}/mlflow.db")
    first = client.search_runs([client.get_experiment_by_name("vmr-finetune").experiment_id],
                               filter_string="tags.`vmr.run_name` = 'ft'")[0]
    assert first.info.status == "FAILED" and _steps(client, first.info.run_id, "train/loss") == [0]

    r = _run("finetune", workdir, "run_name=ft", "train.epochs=2")
    assert r.mlflow_run_id == first.info.run_id
    assert _steps(client, r.mlflow_run_id, "train/loss") == [0, 1]  # epoch 0 once: resumed, not restarted
    assert client.get_run(r.mlflow_run_id).info.status == "FINISHED"
    assert read_card(r.latest_checkpoint).extra["epoch"] == 1
    # finetuning started from the pretrained model, and is scored next to the cosine baseline
    assert r.init_from == "models:/vmr-matr-pretrained/1"
    assert client.get_run(r.mlflow_run_id).data.tags["vmr.init_from"] == "models:/vmr-matr-pretrained/1"
    assert {"baseline/mIoU", "baseline/R1-0.5"} <= set(r.baseline)
    assert {"test/mIoU", "test_baseline/mIoU", "test/R1-0.5"} <= set(r.test_metrics)
    assert "baseline/mIoU" in client.get_run(r.mlflow_run_id).data.metrics
    # the registered model loads through MLflow and refuses other features
    assert r.registered == "models:/vmr-matr/1"
    model, card = load_model("models:/vmr-matr/latest", tracking_uri=r.tracking_uri)
    assert card.kind == "matr" and card.extra["run_name"] == "ft" and not model.training
    from vmr.features.settings import FeatureSettings
    from vmr.models.checkpoint import FeatureMismatchError

    with pytest.raises(FeatureMismatchError):
        check_features(card, FeatureSettings("ViT-B-32", "openai", 0.5))


def test_a_killed_worker_restarts_from_the_last_checkpoint(pretrained, workdir, tmp_path):
    spe = _steps_per_epoch(workdir)
    marker = tmp_path / "killed"
    r = _run("finetune", workdir, "run_name=kill", "train.epochs=2", "trainer.max_failures=1",
             f"debug.kill_at_step={spe + 1}", f"debug.kill_marker={marker}", "tracking.register_as=none")
    assert marker.is_file()  # the worker did die mid-epoch 1
    client = _client(r.tracking_uri)
    assert _steps(client, r.mlflow_run_id, "train/loss") == [0, 1]  # restarted at epoch 1, not 0
    assert client.get_run(r.mlflow_run_id).info.status == "FINISHED" and r.registered == ""
    assert read_card(r.latest_checkpoint).extra["epoch"] == 1


def test_metrics_and_artifacts_land_in_a_real_mlflow_server(pretrained, workdir, s3_server, mlflow_server):
    """Tracking to an ``mlflow server`` (artifacts proxied into S3) with the checkpoints in S3 too."""
    runs = s3_server.bucket() + "/runs"
    r = _run("finetune", workdir, "run_name=srv", "train.epochs=1", f"tracking.tracking_uri={mlflow_server.uri}",
             f"trainer.storage_path={runs}", f"init_from={pretrained.best_checkpoint}")
    assert r.tracking_uri == mlflow_server.uri and r.init_from == pretrained.best_checkpoint
    client = _client(mlflow_server.uri)
    run = client.get_run(r.mlflow_run_id)
    assert run.data.params["trainer.storage_path"] == runs
    assert "val/mIoU" in run.data.metrics and "baseline/mIoU" in run.data.metrics
    assert {"config.yaml", "plots/val_moments.png"} <= _artifacts(client, r.mlflow_run_id)
    keys = s3_server.keys(mlflow_server.artifact_root)
    assert any(k.endswith(f"{r.mlflow_run_id}/artifacts/config.yaml") for k in keys)
    assert any(k.endswith("vmr_checkpoint.json") for k in keys)  # the logged model, in the bucket
    # checkpoints went to S3 and load from there and through the server's registry
    assert r.best_checkpoint.startswith(runs + "/srv/checkpoint_epoch")
    assert read_card(r.best_checkpoint).extra["run_name"] == "srv"
    model, card = load_model("models:/vmr-matr/1", tracking_uri=mlflow_server.uri)
    assert card.extra["run_name"] == "srv"
    assert np.isfinite(card.metrics["val/mIoU"])


def test_params_have_no_secrets():
    params = params_from_config({"data": {"videos": "s3://user:hunter2@minio:9000/v", "api_key": "abc"},
                                 "tracking": {"password": "", "tracking_uri": "http://u:pw@host:5000"}})
    assert params == {"data.videos": "s3://user:***@minio:9000/v", "data.api_key": "***", "tracking.password": "",
                      "tracking.tracking_uri": "http://u:***@host:5000"}


def test_text_finetuning_with_a2fa_end_to_end(pretrained, workdir):
    """A2FA on QVHighlights-format text queries derived from the demo's match annotations (random CLIP text weights:
    a plumbing check, not a quality result)."""
    from vmr.annotations import load as load_annotations

    cfg, files = resolve_config("finetune", [str(CONFIGS / "finetune_text.yaml")], TINY + [
        f"data.workdir={workdir}", "run_name=text", "train.epochs=1", "model.a2fa.kernel_size=5",
        "model.a2fa.cnn_channels=[4,4]", "model.a2fa.mlp_hidden=8"])
    r = run_workflow("finetune", cfg, config_files=files)
    assert r.init_from == "" and r.samples["train"] > 0 and r.samples["val"] > 0
    rows = load_annotations(str(workdir / "text" / "text_train.jsonl"), "qvhighlights").records
    assert rows and rows[0].sentence.startswith("a player performs a ")
    client = _client(r.tracking_uri)
    run = client.get_run(r.mlflow_run_id)
    assert run.data.params["model.kind"] == "a2fa" and run.data.params["train.schedule"] == "warmup_cosine"
    assert {"val/mAP", "val/R1-0.5", "train/mse"} <= set(run.data.metrics)
    assert {"plots/val_moments.png", "plots/val_matrix_0.png"} <= _artifacts(client, r.mlflow_run_id)
    assert r.registered == "models:/vmr-a2fa/1" and not r.baseline  # no cosine baseline for sentences
    model, card = load_model("models:/vmr-a2fa/1", tracking_uri=r.tracking_uri)
    assert card.kind == "a2fa" and card.task == "text" and card.config["kernel_size"] == 5


def test_bad_commands_end_in_one_line():
    import subprocess
    import sys
    from pathlib import Path

    vmr = str(Path(sys.executable).parent / "vmr")
    for args, msg in ((["pretrain", "train.nope=1"], "unknown config key(s) ['nope'] in train"),
                      (["pretrain", "model.kind=a2fa"], "A2FA has none"),
                      (["finetune", "--config", "/nonexistent.yaml"], "config file not found"),
                      (["finetune", "epochs"], "expected key=value")):
        p = subprocess.run([vmr, *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_every_config_file_resolves():
    for workflow, files, kind in (("pretrain", None, "matr"), ("finetune", None, "matr"),
                                  ("pretrain", [str(CONFIGS / "pretrain.yaml")], "matr"),
                                  ("finetune", [str(CONFIGS / "finetune.yaml")], "matr"),
                                  ("finetune", [str(CONFIGS / "finetune_text.yaml")], "a2fa")):
        cfg, used = resolve_config(workflow, files, [])
        assert cfg.model.kind == kind and used
    paper, _ = resolve_config("finetune", [str(CONFIGS / "finetune.yaml")], ["trainer.num_workers=3"])
    assert paper.model.matr.d_model == 1024 and paper.train.optimizer == "adamw" and paper.trainer.num_workers == 3
    text, _ = resolve_config("finetune", [str(CONFIGS / "finetune_text.yaml")], [])
    assert text.train.optimizer == "adam" and text.train.schedule == "warmup_cosine" and text.model.a2fa.top_k == 10

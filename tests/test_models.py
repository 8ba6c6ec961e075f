"""Weights: checkpoints by repo id (and revision) or directory, pulled into the Hugging Face cache from
a hub over HTTP; a server whose weights are missing starts, is not ready, and refuses jobs naming the
command to run, charging nothing."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from openreel.engine.tiny import TINY_DISTILLED_LORA, save_tiny_reference_adapter
from openreel.engine.weights import (
    Adapter,
    Checkpoint,
    WeightsMissing,
    complete,
    locate,
    locate_adapter,
    require_adapter,
)
from openreel.settings import Settings

from fakehub import fake_hub
from support import cli, mp4_summary, png, running_server, wait_for
from support import tiny_checkpoint as built_tiny_checkpoint

# One worker runs this module, so its module-scoped fixtures start once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("models")]

FAST = {"prompt": "a boat", "model": "veo-3.1-fast", "veoParams": {"duration": 4}}


@pytest.fixture(scope="module")
def tiny_checkpoint() -> Path:
    """The test process's build, shared with its servers: tests copy it before changing anything."""
    return built_tiny_checkpoint()


def test_checkpoints_parse_repo_ids_revisions_and_directories(tmp_path: Path) -> None:
    assert Checkpoint.parse("Lightricks/LTX-2") == Checkpoint("Lightricks/LTX-2", None)
    assert Checkpoint.parse("Lightricks/LTX-2@v1.1") == Checkpoint("Lightricks/LTX-2", "v1.1")
    assert str(Checkpoint.parse("Lightricks/LTX-2@v1.1")) == "Lightricks/LTX-2@v1.1"
    assert Checkpoint.parse(str(tmp_path)).is_local
    assert Checkpoint.parse("/nowhere/ltx2").is_local
    assert not Checkpoint.parse("Lightricks/LTX-2").is_local


def test_a_checkpoint_missing_a_component_or_a_shard_is_not_complete(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    assert complete(tiny_checkpoint) and locate(Checkpoint(str(tiny_checkpoint))) == tiny_checkpoint
    no_vae = shutil.copytree(tiny_checkpoint, tmp_path / "no-vae")
    shutil.rmtree(no_vae / "vae")
    assert not complete(no_vae) and locate(Checkpoint(str(no_vae))) is None
    sharded = shutil.copytree(tiny_checkpoint, tmp_path / "sharded")
    (sharded / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors"}}'
    )
    assert not complete(sharded)


@pytest.mark.live
def test_missing_weights_refuse_jobs_until_pulled(tiny_checkpoint: Path, tmp_path: Path) -> None:
    repo = shutil.copytree(tiny_checkpoint, tmp_path / "repo")
    (repo / "ltx-2-single-file.safetensors").write_bytes(b"not needed by the pipeline")
    with fake_hub("acme/ltx2-tiny", repo) as hub:
        env = {
            "HF_ENDPOINT": hub,
            "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
            "OPENREEL_ENGINE": "ltx2",
            "OPENREEL_CHECKPOINT": "acme/ltx2-tiny",
        }
        with running_server(tmp_path, env, engine="ltx2") as server:
            key = server.new_key(credits=50)
            with server.client(key) as client:
                entry = client.get("/v2/models").json()["models"][0]["engine"]
                assert entry["checkpoint"] == "acme/ltx2-tiny"
                assert (entry["weightsPresent"], entry["ready"]) == (False, False)
                assert "openreel models pull" in entry["notice"]
                refused = client.post("/v2/videos/generate", json=FAST)
                assert refused.status_code == 503
                assert "openreel models pull" in refused.json()["error"]
                assert client.get("/v2/me").json()["team"]["credits"] == 50
                assert client.get("/v2/jobs").json()["jobs"] == []
            assert "no" in cli(server.data_dir, "models", "list", env=env)

            pulled = cli(server.data_dir, "models", "pull", env=env)
            assert "ready:" in pulled
            snapshot = next((tmp_path / "hf-cache").glob("models--acme--ltx2-tiny/snapshots/*"))
            assert complete(snapshot) and (snapshot / "latent_upsampler" / "config.json").is_file()
            assert (snapshot / TINY_DISTILLED_LORA).is_file()
            assert not (snapshot / "ltx-2-single-file.safetensors").exists()
            listed = cli(server.data_dir, "models", "list", env=env)
            assert "yes" in listed and "MB" in listed

            server.stop()
            server.start()
            health = httpx.get(server.url + "/healthz").json()
            assert (health["engineReady"], health["engineError"]) == (True, None)
            with server.client(key) as client:
                entry = client.get("/v2/models").json()["models"][0]["engine"]
                assert (entry["weightsPresent"], entry["ready"], entry["randomWeights"]) == (
                    True,
                    True,
                    False,
                )


@pytest.mark.live
def test_a_missing_distilled_lora_makes_every_id_unready_until_pulled(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """A dev checkpoint without its distilled LoRA cannot run a recipe: every id says why and what to
    pull, jobs get a 503 and cost nothing; with the LoRA pulled from its own repo, they render and
    report the recipe they ran."""
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "dev-only")
    lora_repo = tmp_path / "lora-repo"
    lora_repo.mkdir()
    (checkpoint / TINY_DISTILLED_LORA).rename(lora_repo / TINY_DISTILLED_LORA)
    with fake_hub("acme/lora", lora_repo) as hub:
        env = {
            "HF_ENDPOINT": hub,
            "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
            "OPENREEL_ENGINE": "ltx2",
            "OPENREEL_CHECKPOINT": str(checkpoint),
            "OPENREEL_DISTILLED_LORA": f"acme/lora:{TINY_DISTILLED_LORA}",
            "OPENREEL_X264_PRESET": "ultrafast",
        }
        with running_server(tmp_path, env, engine="ltx2") as server:
            key = server.new_key(credits=100)
            with server.client(key) as client:
                engines = {m["id"]: m["engine"] for m in client.get("/v2/models").json()["models"]}
                for model_id in ("veo-3.1-fast", "veo-3.1"):
                    assert engines[model_id]["ready"] is False
                    assert "distilled LoRA" in engines[model_id]["unavailable"]
                    assert "openreel models pull" in engines[model_id]["unavailable"]
                refused = client.post("/v2/videos/generate", json=FAST)
                assert refused.status_code == 503 and "openreel models pull" in refused.json()["error"]
                assert client.get("/v2/me").json()["team"]["credits"] == 100
            assert "distilled LoRA" in cli(server.data_dir, "models", "list", env=env)

            assert f"ready: acme/lora:{TINY_DISTILLED_LORA}" in cli(
                server.data_dir, "models", "pull", env=env
            )
            server.stop()
            server.start()
            with server.client(key) as client:
                models = {m["id"]: m for m in client.get("/v2/models").json()["models"]}
                shown = models["veo-3.1"]["engine"]
                assert shown["ready"] is True and shown["unavailable"] is None
                assert shown["recipe"]["kind"] == "quality" and shown["recipe"]["version"] == "2.0"
                # The tiny transformer's two blocks hold no STG block: /v2/models shows what renders run.
                assert [s["guidance"] for s in shown["recipe"]["stages"]] == [["cfg", "modality"], []]
                job_id = client.post("/v2/videos/generate", json=FAST).json()["jobId"]
                done = wait_for(client, job_id, timeout=300)
                assert done["status"] == "COMPLETED", done
                stages = done["result"]["recipe"]["stages"]
                # The tiny checkpoint declares a quarter grid, whichever engine name loads it.
                assert [(s["width"], s["height"], s["lora"]) for s in stages] == [
                    (160, 96, True),
                    (320, 192, True),
                ]


def test_adapters_parse_local_files_and_hub_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "ic.safetensors"
    file.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    for value in (str(file), "./ic.safetensors", "ic.safetensors"):
        assert Adapter.parse(value) == Adapter(str(file))  # absolute, whatever the cwd
    assert locate_adapter(Adapter.parse("./missing.safetensors")) is None
    with pytest.raises(WeightsMissing, match="is not a file"):
        require_adapter(Adapter.parse("./missing.safetensors"))
    assert Adapter.parse("acme/ic") == Adapter("acme/ic")
    parsed = Adapter.parse("acme/ic@v2:ic-lora-0.9.safetensors")
    assert parsed == Adapter("acme/ic", "v2", "ic-lora-0.9.safetensors")
    assert str(parsed) == "acme/ic@v2:ic-lora-0.9.safetensors"
    with pytest.raises(ValueError, match="neither a path nor a hub id"):
        Settings(reference_adapter="adapters/sub/ic.safetensors")
    assert Settings(reference_adapter="").reference_adapter is None
    with pytest.raises(ValueError, match="neither a path nor a hub id"):
        Settings(checkpoint="org/name/extra")
    with pytest.raises(ValueError, match="neither a path nor a hub id"):
        Settings(distilled_lora="org//name")
    with pytest.raises(ValueError, match="neither a path nor a hub id"):
        Settings(upsampler="org//name:latent_upsampler")
    assert Settings(upsampler="acme/up@v1:latent_upsampler").upsampler == "acme/up@v1:latent_upsampler"
    assert Checkpoint.parse("./ic.safetensors") == Checkpoint(str(file))  # a path, made absolute


def test_pulling_an_ambiguous_adapter_repo_downloads_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "two"
    for name in ("a.safetensors", "b.safetensors", "old/c.safetensors"):
        save_tiny_reference_adapter(repo / name)
    cache = tmp_path / "hf-cache"
    with fake_hub("acme/two", repo) as hub:
        env = {"HF_ENDPOINT": hub, "HF_HUB_CACHE": str(cache), "OPENREEL_REFERENCE_ADAPTER": "acme/two"}
        with pytest.raises(AssertionError, match=r"holds 2 \.safetensors\s+files\s+at\s+its\s+root"):
            cli(tmp_path / "data", "models", "pull", env=env)
        assert not list(cache.rglob("*.safetensors"))
        named = {**env, "OPENREEL_REFERENCE_ADAPTER": "acme/two:b.safetensors"}
        assert "ready: acme/two:b.safetensors" in cli(tmp_path / "data", "models", "pull", env=named)
        assert [p.name for p in cache.rglob("*.safetensors")] == ["b.safetensors"]
        listed = cli(tmp_path / "data", "models", "list", env=named)
        assert "acme/two:b.safetensors" in listed and "no" not in listed.split("acme/two", 1)[1]
        # Unnamed, the repo stays ambiguous even with one of its files here.
        assert "no" in cli(tmp_path / "data", "models", "list", env=env).split("acme/two", 1)[1]


@pytest.mark.live
def test_reference_images_need_the_pulled_adapter_then_render(tiny_checkpoint: Path, tmp_path: Path) -> None:
    repo = tmp_path / "adapter-repo"
    save_tiny_reference_adapter(repo / "tiny-ic-lora.safetensors")
    (repo / "README.md").write_text("a tiny IC-LoRA")
    with fake_hub("acme/ic-lora", repo) as hub:
        env = {
            "HF_ENDPOINT": hub,
            "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
            "OPENREEL_ENGINE": "ltx2",
            "OPENREEL_CHECKPOINT": str(tiny_checkpoint),
            "OPENREEL_REFERENCE_ADAPTER": "acme/ic-lora",
            "OPENREEL_X264_PRESET": "ultrafast",
        }
        with running_server(tmp_path, env, engine="ltx2") as server:
            key = server.new_key(credits=100)
            with server.client(key) as client:
                models = {m["id"]: m for m in client.get("/v2/models").json()["models"]}
                assert models["veo-3.1-fast"]["acceptsReferenceImages"] is False  # not pulled yet
                assert models["veo-3.1-lite"]["acceptsReferenceImages"] is False
                assert models["veo-3.1-fast"]["engine"]["referenceAdapter"] == {
                    "adapter": "acme/ic-lora",
                    "weightsPresent": False,
                }
                assert models["veo-3.1-lite"]["engine"]["referenceAdapter"] is None
                refs = [
                    client.post(
                        "/v2/uploads", files={"file": (f"{i}.png", png(w, h, c), "image/png")}
                    ).json()["url"]
                    for i, (w, h, c) in enumerate([(300, 400, (200, 30, 30)), (500, 300, (30, 30, 200))])
                ]
                body = {**FAST, "veoParams": {"duration": 4, "seed": 5, "reference_images": refs}}
                refused = client.post("/v2/videos/generate", json=body)
                assert refused.status_code == 503 and "openreel models pull" in refused.json()["error"]
                assert client.get("/v2/me").json()["team"]["credits"] == 100
                assert "reference_images" in cli(server.data_dir, "models", "list", env=env)

                pulled = cli(server.data_dir, "models", "pull", env=env)
                assert "ready: acme/ic-lora" in pulled
                listed = cli(server.data_dir, "models", "list", env=env)
                assert "acme/ic-lora" in listed and "no" not in listed.split("acme/ic-lora", 1)[1]
                adapter = client.get("/v2/models").json()["models"][0]["engine"]["referenceAdapter"]
                assert adapter["weightsPresent"] is True

            server.stop()  # the worker loaded the engine before the pull: it starts again with the adapter
            server.start()
            with server.client(key) as client:
                assert client.get("/v2/models").json()["models"][0]["acceptsReferenceImages"] is True
                plain = {**FAST, "veoParams": {"duration": 4, "seed": 5}}
                ids = [client.post("/v2/videos/generate", json=b).json()["jobId"] for b in (body, plain)]
                done = [wait_for(client, job_id, timeout=300) for job_id in ids]
                assert [job["status"] for job in done] == ["COMPLETED", "COMPLETED"], done
                assert (done[0]["result"]["width"], done[0]["result"]["height"]) == (1280, 720)
                assert done[0]["input"]["veoParams"]["reference_images"] == refs
                videos = [client.get(job["result"]["videoUrl"]).content for job in done]
                assert mp4_summary(videos[0])["frames"] == 96
                # Decoded pictures, so that a container detail cannot make two equal renders differ.
                assert not np.array_equal(*(_first_picture(video) for video in videos))


def _first_picture(mp4: bytes) -> np.ndarray:
    with av.open(io.BytesIO(mp4)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


@pytest.mark.live
def test_an_adapter_the_workers_cannot_load_refuses_references_without_charge(tmp_path: Path) -> None:
    """The file is here, but it is another model's: the worker says so and the server believes it."""
    wrong = tmp_path / "other-model.safetensors"
    save_file(
        {
            "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.ones(4, 999),
            "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.ones(16, 4),
        },
        str(wrong),
    )
    with running_server(tmp_path, {"OPENREEL_REFERENCE_ADAPTER": str(wrong)}) as server:
        key = server.new_key(credits=50)
        with server.client(key) as client:
            assert client.get("/v2/models").json()["models"][0]["acceptsReferenceImages"] is False
            ref = client.post("/v2/uploads", files={"file": ("r.png", png(64, 64), "image/png")}).json()[
                "url"
            ]
            body = {**FAST, "veoParams": {"duration": 4, "reference_images": [ref]}}
            refused = client.post("/v2/videos/generate", json=body)
            assert (
                refused.status_code == 503 and "does not load into this checkpoint" in refused.json()["error"]
            )
            assert client.get("/v2/me").json()["team"]["credits"] == 50
            assert client.post("/v2/videos/generate", json=FAST).status_code == 202

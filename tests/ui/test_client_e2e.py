"""End to end through gradio_client against the launched app (real FeedbackService, tiny model, SQLite in tmp_path).

Each Client is one browser session: the signed-in rater lives in that session's gr.State, as in a browser tab.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.ui.live_app import ADMIN_TOKEN, LiveApp, serve, tiny_settings

pytestmark = pytest.mark.slow


def signed_in(live: LiveApp, name: str, downloads: Path | None = None, token: str = "") -> Client:
    client = Client(live.url, verbose=False, download_files=str(downloads) if downloads else False)
    answer = client.predict(name, token, api_name="/login")
    badge, saved, _timer = answer
    assert name in badge and saved == name
    assert not token or token not in str(answer), "the token never comes back (a joined session stream reads it)"
    return client


def downloaded(out: dict[str, Any]) -> Path:
    """An export's File update ({"value": local path, "visible": True, ...}) -> the downloaded file."""
    assert out["visible"] is True, "the download box appears"
    return Path(out["value"])


def shown(out: tuple[Any, ...]) -> dict[str, str]:
    """The /next, /rate, /skip, /undo outputs by meaning."""
    prompt, response, version, status, progress, _timer, slider, _undo_timer = out
    # a new response starts with the slider in the middle; /next showing the same response again leaves it alone
    assert slider in (0.0, {"__type__": "update"}), "every response starts with the slider in the middle"
    return {"prompt": prompt, "response": response["value"], "version": version, "status": status, "progress": progress}


def test_sign_in_rate_undo_and_a_full_batch_makes_a_new_version(live: LiveApp) -> None:
    client = signed_in(live, "alice")
    live.wait_for(lambda d: d.buffer_ready >= live.settings.batch_size, what="a full prefetch buffer")
    first = shown(client.predict(api_name="/next"))
    assert first["prompt"] and first["version"] == "Model version **v0**"
    assert first["progress"] == "**0** rated · 0 skipped"

    after_rate = shown(client.predict(1.0, api_name="/rate"))
    assert after_rate["status"] == "Rating saved" and after_rate["progress"].startswith("**1** rated")
    undone = shown(client.predict(api_name="/undo"))
    assert undone["status"] == "Undone" and undone["progress"].startswith("**0** rated")
    assert (undone["prompt"], undone["response"]) == (first["prompt"], first["response"]), "undo re-offers the sample"

    for score in (1.0, -1.0, 0.5, 0.0):
        last = shown(client.predict(score, api_name="/rate"))
    assert last["progress"].startswith(f"**{live.settings.batch_size}** rated")
    live.wait_for(lambda d: d.version >= 1, what="the PPO step of the first batch")
    status, counts = client.predict(api_name="/dashboard")
    assert status.startswith("### Model v1") and "trained **4**" in counts
    mean_score = client.predict(api_name="/history")[0]
    assert len(mean_score["data"]) == 1, "one PPO step, one point"
    assert _skip_until_version(client, "v1")["version"] == "Model version **v1**"


def _skip_until_version(client: Client, version: str, timeout: float = 60.0) -> dict[str, str]:
    """Skip the v0 samples still in the buffer until the generator's v1 samples come up."""
    deadline = time.monotonic() + timeout
    out = shown(client.predict(api_name="/next"))
    while version not in out["version"]:
        assert time.monotonic() < deadline, f"no {version} sample within {timeout} s: {out}"
        out = shown(
            client.predict(api_name="/skip") if out["response"] or out["prompt"] else client.predict(api_name="/next")
        )
    return out


def test_admin_controls_are_refused_for_raters_and_work_for_admins(live: LiveApp, tmp_path: Path) -> None:
    rater, typed_admin = signed_in(live, "bob"), signed_in(live, "admin")  # typing "admin" gives no rights
    admin = signed_in(live, "carol", downloads=tmp_path / "downloads", token=ADMIN_TOKEN)
    refusals = [("/pause_training", ()), ("/set_reward_source", ("length:40",)), ("/save_checkpoint", ())]
    for client in (rater, typed_admin):
        for endpoint, args in refusals:
            message = client.predict("", *args, api_name=endpoint)
            assert message.startswith("**Refused.** this needs an admin"), (endpoint, message)
        assert client.predict("", api_name="/export_jsonl") == {"__type__": "update"}, "no file for a rater"
        assert client.predict("wrong-token", api_name="/pause_training").startswith("**Refused.**")
    assert live.service.dashboard().training != "paused"
    assert live.service.dashboard().reward_source == "human"
    assert not live.settings.export_dir.exists()

    assert admin.predict(ADMIN_TOKEN, api_name="/pause_training") == "Training paused."
    assert live.service.dashboard().training == "paused"
    with pytest.raises(AppError, match="not in the list of choices"):  # the dropdown takes configured sources only
        admin.predict(ADMIN_TOKEN, "os:system", api_name="/set_reward_source")
    assert admin.predict(ADMIN_TOKEN, "length:40", api_name="/set_reward_source").startswith("Switching")
    live.wait_for(lambda d: d.reward_source.startswith("length"), what="the reward worker to switch")
    assert admin.predict(ADMIN_TOKEN, api_name="/start_training") == "Training running."
    saved = admin.predict(ADMIN_TOKEN, api_name="/save_checkpoint")
    assert saved.startswith("Checkpoint **v") and str(live.settings.data_dir) not in saved
    rows = downloaded(admin.predict(ADMIN_TOKEN, api_name="/export_jsonl")).read_text().splitlines()
    assert isinstance(rows, list)
    [exported] = live.settings.export_dir.iterdir()
    for path in (exported.resolve(), live.settings.export_dir.resolve()):  # the export folder is not served
        assert httpx.get(f"{live.url}gradio_api/file={path}").status_code in (403, 404)


def test_a_forged_session_hash_gets_nothing(live: LiveApp) -> None:
    admin = signed_in(live, "carol", token=ADMIN_TOKEN)
    forger = Client(live.url, verbose=False, download_files=False)
    forger.session_hash = admin.session_hash  # the admin's session: its gr.State says "carol, admin"
    assert forger.predict("", api_name="/pause_training").startswith("**Refused.**")
    assert forger.predict("", api_name="/export_jsonl") == {"__type__": "update"}
    assert live.service.dashboard().training != "paused"


def test_anonymous_clients_get_nothing(live: LiveApp) -> None:
    anonymous = Client(live.url, verbose=False, download_files=False)
    assert anonymous.predict("", api_name="/pause_training").startswith("**Refused.**")
    for fmt in ("jsonl", "parquet", "pairwise"):
        assert anonymous.predict("", api_name=f"/export_{fmt}") == {"__type__": "update"}
    assert anonymous.predict(api_name="/dashboard") == ({"__type__": "update"},) * 2
    assert anonymous.predict(api_name="/recent") == {"__type__": "update"}
    assert all(out == {"__type__": "update"} for out in anonymous.predict("hello", api_name="/compare"))
    assert not live.settings.export_dir.exists()
    upload = httpx.post(f"{live.url}gradio_api/upload", files={"files": ("big.bin", b"x" * 100_000)})
    assert upload.status_code >= 400, "the page takes no uploads: nothing big can be parked on the server"


def test_export_downloads_and_compare(live: LiveApp, tmp_path: Path) -> None:
    client = signed_in(live, "carol", downloads=tmp_path / "downloads", token=ADMIN_TOKEN)
    live.wait_for(lambda d: d.buffer_ready >= 2, what="two buffered samples")
    client.predict(api_name="/next")
    client.predict(0.5, api_name="/rate")
    client.predict(-0.5, api_name="/rate")
    exported = downloaded(client.predict(ADMIN_TOKEN, api_name="/export_jsonl"))
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert sorted(r["score"] for r in rows if r.get("rater") == "carol") == [-0.5, 0.5], rows
    assert downloaded(client.predict(ADMIN_TOKEN, api_name="/export_parquet")).stat().st_size > 0
    prompt, first, current = client.predict("", api_name="/compare")
    assert prompt, "an empty prompt means a prompt from the dataset"
    assert first["label"] == "First version (v0)" and current["label"].startswith("Current version (v")
    recent = client.predict(api_name="/recent")
    assert [row[1] for row in recent["data"]].count("carol") == 2


def test_actions_before_sign_in_are_refused_not_crashing(live: LiveApp) -> None:
    client = Client(live.url, verbose=False, download_files=False)
    assert client.predict("", api_name="/pause_training").startswith("**Refused.**")
    client.predict(0.5, api_name="/rate")  # a "Sign in first" toast; nothing is stored
    assert live.service.dashboard().counts["ratings"] == 0


def test_with_auth_the_login_name_is_the_rater(tiny_model: Path, prompts_file: Path, tmp_path: Path) -> None:
    settings = tiny_settings(
        tiny_model, prompts_file, tmp_path / "data", auth=(("alice", "pw"), ("mallory", "pw2")), admins=("alice",)
    )
    with serve(settings) as live:
        client = Client(live.url, verbose=False, download_files=False, auth=("alice", "pw"))
        badge, saved, *_ = client.predict("mallory", "", api_name="/login")  # a typed name cannot override it
        assert badge == "Rating as **alice** · admin" and saved == "alice"  # alice is in --admins
        client.predict(api_name="/next")
        client.predict(0.5, api_name="/rate")
        assert [r.rater for r in live.service.recent_ratings(5)] == ["alice"]
        mallory = Client(live.url, verbose=False, download_files=False, auth=("mallory", "pw2"))
        mallory.session_hash = client.session_hash  # alice's tab: its gr.State says "alice"
        mallory.predict(-1.0, api_name="/rate")  # refused: the request is mallory's
        assert [r.rater for r in live.service.recent_ratings(5)] == ["alice"]
        assert mallory.predict(api_name="/dashboard") == ({"__type__": "update"},) * 2
        assert mallory.predict("", api_name="/pause_training").startswith("**Refused.**"), "mallory is no admin"
        assert client.predict("", api_name="/pause_training") == "Training paused."  # alice, by her login

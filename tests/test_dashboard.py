"""The dashboard's server: jobs and their files (no traversal), escaping,
CSRF, the loopback default and the access token, costs to the cent,
presets, the character library and uploads. Browser tests are in
test_dashboard_browser.py."""
from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from remote.core.presets import PresetError, PromptPreset, delete_preset, list_presets, load_preset, presets_dir, save_preset
from remote.dashboard.__main__ import main as dashboard_main
from remote.dashboard.app import create_app
from remote.dashboard.costs import Ledger, summarize
from remote.dashboard.security import BindError, check_bind, is_loopback
from tests.fixtures.dashboard_data import ledger_total, make_job, png_bytes

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def app(root: Path, tmp_path: Path):
    return create_app(root, presets_folder=tmp_path / "presets")


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, app, url: str, data: dict | None = None, **kwargs):
    return client.post(url, data={"csrf_token": app.config["CSRF_TOKEN"], **(data or {})}, **kwargs)


# -- jobs -------------------------------------------------------------------------------------------------------
def test_job_list_and_page_show_images_settings_and_cost(root, client):
    make_job(root, "20261120-100000-aaaaaa", prompt="a knight in armour", images=3, cost="0.1234", seed=7,
             items=[{"name": "pose-walk", "status": "done", "images": ["ai-render-1.png"]},
                    {"name": "pose-run", "status": "rendering", "images": []}], contact_sheet=True)
    listing = client.get("/").get_data(as_text=True)
    assert "20261120-100000-aaaaaa" in listing and "/thumbs/20261120-100000-aaaaaa/ai-render-1.png" in listing
    assert "1/2 items" in listing
    page = client.get("/jobs/20261120-100000-aaaaaa").get_data(as_text=True)
    for name in ("ai-render-1.png", "ai-render-2.png", "ai-render-3.png", "contact-sheet.png"):
        assert f"/files/20261120-100000-aaaaaa/{name}" in page
    assert "a knight in armour" in page and "$0.12" in page and "stability" in page and "pose-run" in page
    assert ">7<" in page.replace(" ", "")  # the seed
    image = client.get("/files/20261120-100000-aaaaaa/ai-render-2.png")
    assert image.status_code == 200 and image.mimetype == "image/png" and image.data == png_bytes(64, (40, 120, 200))
    assert client.get("/api/jobs/20261120-100000-aaaaaa").get_json()["images"] == [
        "ai-render-1.png", "ai-render-2.png", "ai-render-3.png"]


@pytest.mark.parametrize("scene, shown", [
    ({"files": 3, "total_bytes": 44_400_000, "bytes_moved": 4_700, "sent_files": 1, "delta": True, "transport": "inline"},
     "scene: 3 files, 4.7 kB moved of 44.4 MB, the .blend as a delta (inline)"),
    ({"files": 1, "total_bytes": 10, "bytes_moved": 0, "sent_files": 0, "delta": False, "transport": "sftp"},
     "scene: 1 file, 0 bytes moved of 10 bytes (sftp)"),
    ({"files": "3", "total_bytes": 1e26, "bytes_moved": -1, "sent_files": True}, None),  # not plausible: not shown
    ({"files": 1, "total_bytes": 1, "bytes_moved": 1, "sent_files": 1, "transport": HOSTILE}, "moved of"),
])
def test_the_job_page_says_what_the_scenes_upload_moved(root, client, scene, shown):
    make_job(root, "job-s", images=1)
    path = root / "jobs" / "job-s.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "scene": scene}))
    page = client.get("/jobs/job-s").get_data(as_text=True)
    if shown is None:
        assert "scene-moved" not in page
    else:
        assert shown in page and "<script>alert" not in page


def test_batch_items_in_their_folders_and_live_item_progress(root, client):
    # A batch as the pod leaves it: <item>/render.png and <item>/ai-render-<n>.png, a contact sheet.
    make_job(root, "job-b", images=0, status="running", contact_sheet=True)
    output = root / "output" / "job-b"
    for item in ("walk-Cam1", "run-Cam1"):
        (output / item).mkdir()
        (output / item / "render.png").write_bytes(png_bytes(32))
        (output / item / "ai-render-1.png").write_bytes(png_bytes(48))
    path = root / "jobs" / "job-b.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "items_order": ["walk-Cam1", "run-Cam1", "jump-Cam1"],
                                "items_done": ["walk-Cam1"]}))
    live = client.get("/api/jobs/job-b").get_json()
    assert (live["items_done"], live["items_total"]) == (1, 3)  # from the record while the batch runs
    manifest = json.loads((output / "manifest.json").read_text())
    manifest["items"] = [{"name": "walk-Cam1", "status": "done", "render": "walk-Cam1/render.png",
                          "images": ["walk-Cam1/ai-render-1.png"]},
                         {"name": "run-Cam1", "status": "failed", "render": "run-Cam1/render.png", "images": []},
                         {"name": "evil", "status": "done", "images": ["../../x.png", "a/b/c/d.png", "/abs.png"]}]
    (output / "manifest.json").write_text(json.dumps(manifest))
    page = client.get("/jobs/job-b").get_data(as_text=True)
    assert "/thumbs/job-b/walk-Cam1/ai-render-1.png" in page and "/thumbs/job-b/run-Cam1/render.png" in page
    assert "x.png" not in page and "d.png" not in page and "abs.png" not in page
    assert client.get("/files/job-b/walk-Cam1/ai-render-1.png").data == png_bytes(48)
    assert client.get("/thumbs/job-b/run-Cam1/render.png").status_code == 200
    for url in ("/files/job-b/walk-Cam1/../../../secret.png", "/files/job-b/a/b/c/d.png", "/files/job-b/walk-Cam1/"):
        assert client.get(url, follow_redirects=True).status_code == 404, url
    live = client.get("/api/jobs/job-b").get_json()
    assert (live["items_done"], live["items_total"]) == (2, 3)  # the manifest, once back, says more


def test_thumbnails_are_small_and_made_once(root, client):
    make_job(root, "job-1", images=1, image_size=1024)
    first = client.get("/thumbs/job-1/ai-render-1.png")
    assert first.status_code == 200
    import io

    from PIL import Image
    assert max(Image.open(io.BytesIO(first.data)).size) == 256
    cached = list((root / "dashboard" / "thumbs").rglob("*.png"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert client.get("/thumbs/job-1/ai-render-1.png").data == first.data
    assert cached[0].stat().st_mtime_ns == stamp


def test_pagination_newest_first(root, client):
    for n in range(30):
        make_job(root, f"job-{n:02d}", images=1, at=f"2026-11-{n % 28 + 1:02d}T{n % 24:02d}:00:00+00:00", ledger=False)
    first = client.get("/").get_data(as_text=True)
    assert "page 1 of 2" in first and "job-27" in first  # the 28th of November is the newest
    second = client.get("/?page=2").get_data(as_text=True)
    assert first.count('class="card') + second.count('class="card') == 30
    assert client.get("/?page=abc").status_code == 200 and client.get("/?page=999").status_code == 200


def test_a_changed_record_is_seen_without_a_restart(root, client):
    record = make_job(root, "job-live", status="running", images=0)
    assert "running" in client.get("/api/jobs/job-live").get_json()["status"]
    path = root / "jobs" / "job-live.json"
    data = json.loads(path.read_text())
    with open(path, "r+") as handle:  # in place: the folder's mtime stays, the running record is still re-read
        handle.write(json.dumps({**data, "stage": "downloading"}))
        handle.truncate()
    assert client.get("/api/jobs/job-live").get_json()["stage"] == "downloading"
    record.status, record.stage = "done", "done"
    record.save(path)
    assert client.get("/api/jobs/job-live").get_json()["status"] == "done"
    assert client.get("/api/jobs").get_json() == {"running": []}
    make_job(root, "job-new", images=1)
    assert client.get("/api/jobs/job-new").status_code == 200
    (root / "jobs" / "job-new.json").unlink()
    assert client.get("/api/jobs/job-new").status_code == 404


# -- untrusted files: traversal, hostile names, escaping ------------------------------------------------------------
def test_file_urls_resolve_only_inside_the_data_dir(root, tmp_path, client):
    make_job(root, "job-1", images=1)
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    (root / "output" / "job-1" / "link.png").symlink_to(secret)
    for url in ("/files/job-1/..%2F..%2F..%2Fsecret.png", "/files/job-1/../../secret.png", "/files/..%2Fjob-1/render.png",
                "/files/job-1/link.png", "/files/job-1/manifest.json", "/files/job-1/.hidden.png",
                "/thumbs/job-1/link.png", "/files/nope/render.png", "/files/job-1/%2Fetc%2Fpasswd"):
        assert client.get(url, follow_redirects=True).status_code == 404, url
    # A record that points its outputs outside the data dir: nothing of it is served.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "render.png").write_bytes(png_bytes())
    (outside / "manifest.json").write_text(json.dumps({"images": ["render.png"], "render": "render.png"}))
    record = json.loads((root / "jobs" / "job-1.json").read_text())
    (root / "jobs" / "job-2.json").write_text(json.dumps({**record, "job_id": "job-2", "local_output_dir": str(outside)}))
    assert client.get("/files/job-2/render.png").status_code == 404
    assert "outside the data dir" in client.get("/jobs/job-2").get_data(as_text=True)


def test_hostile_records_and_manifests_are_ignored_or_cleaned(root, client):
    make_job(root, "job-1", images=1)
    jobs = root / "jobs"
    (jobs / "mismatch.json").write_text(json.dumps({"job_id": "job-1", "status": "done"}))  # id != file name
    (jobs / "dots.json").write_text(json.dumps({"job_id": "..", "status": "done"}))
    (jobs / "huge.json").write_text(json.dumps({"job_id": "huge", "prompt": "x" * 300_000}))
    (jobs / "list.json").write_text("[1, 2]")
    (jobs / "broken.json").write_text("{not json")
    manifest = root / "output" / "job-1" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["images"] = ["../../../etc/passwd", "/abs.png", "ai-render-1.png", 7, None]
    data["contact_sheet"] = "../x.png"
    manifest.write_text(json.dumps(data))
    listing = client.get("/").get_data(as_text=True)
    assert "Jobs <small>1</small>" in listing
    page = client.get("/jobs/job-1").get_data(as_text=True)
    assert "passwd" not in page and "abs.png" not in page and "x.png" not in page
    assert client.get("/api/jobs/job-1").get_json()["images"] == ["ai-render-1.png"]


def test_prompts_hosts_and_errors_are_html_escaped(root, client):
    make_job(root, "job-1", prompt=HOSTILE, host=HOSTILE, images=1)
    record = json.loads((root / "jobs" / "job-1.json").read_text())
    record["error"] = HOSTILE
    (root / "jobs" / "job-1.json").write_text(json.dumps(record))
    for url in ("/", "/jobs/job-1", "/costs"):
        body = client.get(url).get_data(as_text=True)
        assert "<script>alert" not in body and "<img src=x" not in body, url
        assert "&lt;script&gt;" in body, url


# -- CSRF, loopback, token, headers ------------------------------------------------------------------------------
def test_every_post_needs_the_csrf_token(root, app, client):
    make_job(root, "job-1", images=1)
    for url in ("/presets", "/presets/delete", "/library", "/generate", "/jobs/job-1/cancel", "/jobs/job-1/rerun",
                "/jobs/job-1/save-look"):
        assert client.post(url, data={"name": "x"}).status_code == 403, url
        assert client.post(url, data={"name": "x", "csrf_token": "wrong"}).status_code == 403, url
    assert post(client, app, "/library", {"name": "Knight"}).status_code == 302
    # The header works for scripts; a cross-site Origin is refused even with the token.
    assert client.post("/library", data={"name": "A"}, headers={"X-CSRF-Token": app.config["CSRF_TOKEN"]}).status_code == 302
    assert post(client, app, "/library", {"name": "B"}, headers={"Origin": "http://evil.example"}).status_code == 403


def test_loopback_default_refuses_other_host_names(client):
    assert client.get("/", headers={"Host": "127.0.0.1:8765"}).status_code == 200
    assert client.get("/", headers={"Host": "[::1]:8765"}).status_code == 200
    assert client.get("/", headers={"Host": "evil.example:8765"}).status_code == 400  # DNS rebinding


def test_binding_beyond_loopback_needs_a_token(root, capsys, monkeypatch):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    check_bind("127.0.0.1", None)
    with pytest.raises(BindError):
        check_bind("0.0.0.0", None)
    with pytest.raises(BindError):
        check_bind("0.0.0.0", "short")
    check_bind("0.0.0.0", "a-long-enough-token-123")
    monkeypatch.delenv("POSEFACTORY_DASHBOARD_TOKEN", raising=False)
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(root))
    assert dashboard_main(["--host", "0.0.0.0", "--port", "1"]) == 2
    assert "access token" in capsys.readouterr().err


def test_the_access_token_guards_every_request(root):
    token = "a-long-enough-token-123"
    app = create_app(root, access_token=token)
    client = app.test_client()
    assert client.get("/", headers={"Host": "10.0.0.2:8765"}).status_code == 401
    assert client.get("/", headers={"Host": "10.0.0.2:8765", "Authorization": "Bearer wrong"}).status_code == 401
    first = client.get(f"/?token={token}", headers={"Host": "10.0.0.2:8765"})
    assert first.status_code == 200 and "HttpOnly" in first.headers["Set-Cookie"]
    assert client.get("/costs", headers={"Host": "10.0.0.2:8765"}).status_code == 200  # the cookie
    assert app.test_client().get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_security_headers(client):
    response = client.get("/")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


def test_pages_use_no_external_assets(root, client):
    make_job(root, "job-1", images=1)
    for url in ("/", "/jobs/job-1", "/costs", "/generate", "/presets", "/library"):
        body = client.get(url).get_data(as_text=True)
        assert "http://" not in body.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in body, url
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200


# -- costs -------------------------------------------------------------------------------------------------------
def test_costs_equal_the_ledger_to_the_cent(root, client):
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    amounts = ["0.0133", "0.0267", "1.005", "0.3333", "0.0001", "2.4999", "0.1"]
    for n, amount in enumerate(amounts):
        make_job(root, f"job-{n}", cost=amount, host="runpod-a40" if n % 2 else "local",
                 backend="stability" if n % 3 else "none", at=(today - timedelta(days=n)).isoformat(), images=1)
    expected = ledger_total(root)
    assert expected == sum((Decimal(a) for a in amounts), Decimal(0))
    with open(root / "ledger.jsonl", "a") as handle:
        handle.write("not json\n{\"job_id\": \"../x\", \"cost_usd\": \"abc\"}\n")
    data = client.get("/api/costs").get_json()
    assert Decimal(data["total_usd"]) == expected
    assert sum(Decimal(v) for v in data["by_host"].values()) == expected
    assert sum(Decimal(v) for v in data["by_backend"].values()) == expected
    assert sum(Decimal(v) for v in data["by_day"].values()) == expected
    assert sum(Decimal(v) for v in data["by_week"].values()) == expected
    assert Decimal(data["by_backend"]["none"]) == Decimal("0.0133") + Decimal("0.3333") + Decimal("0.1")
    page = client.get("/costs").get_data(as_text=True)
    cents = f"${expected.quantize(Decimal('0.01'))}"
    assert f'id="total-all">{cents}<' in page and f'id="chart-total">{cents}<' in page
    assert f'data-total="{expected}"' in page
    assert "2 ledger line(s) could not be read" in page


def test_event_lines_are_detail_not_spending(root, client, monkeypatch):
    from remote.jobs.ledger import append_ledger

    make_job(root, "job-1", cost="0.25", host="serverless")
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(root))
    # What remote.runpod.serverless and remote.runpod.pods write next to the job lines.
    append_ledger({"event": "serverless_request", "host": "serverless", "cost_usd": 0.25, "at": "2026-11-20T10:00:00+00:00"})
    append_ledger({"event": "pod_start", "host": "pod-a", "pod_id": "p1", "cost_per_hr": 0.44, "at": "2026-11-20T09:00:00+00:00"})
    append_ledger({"event": "pod_start", "host": "pod-b", "pod_id": "p2", "cost_per_hr": 0.69, "at": "2026-11-20T09:00:00+00:00"})
    append_ledger({"event": "pod_stop", "host": "pod-b", "pod_id": "p2", "cost_usd": 0.345, "pod_seconds": 1800,
                   "at": "2026-11-20T09:30:00+00:00"})
    data = client.get("/api/costs").get_json()
    assert data["total_usd"] == "0.25" and data["pod_uptime_by_host"] == {"pod-b": "0.345"}
    assert data["burn_rate_usd_per_hr"] == "0.44"
    page = client.get("/costs").get_data(as_text=True)
    assert "pod-a since 2026-11-20T09:00:00+00:00 at $0.44/h" in page and "burn rate <strong>$0.44/h" in page


def test_ledger_is_read_incrementally(root):
    ledger = Ledger(root / "ledger.jsonl")
    assert ledger.entries() == []
    make_job(root, "job-1", cost="0.5")
    assert len(ledger.entries()) == 1
    with open(root / "ledger.jsonl", "a") as handle:
        handle.write('{"job_id": "job-2", "host": "h", "cost_usd": 0.25, "at": "2026-11-20T00:00:00+00:00"}\n{"job_id"')
    assert [e.cost_usd for e in ledger.entries()] == [Decimal("0.5"), Decimal("0.25")]  # the half line waits
    spending = summarize(ledger.entries())
    assert spending.total == Decimal("0.75") and spending.by_week == {"2026-W47": Decimal("0.75")}


def test_budget_left(root):
    from datetime import UTC, datetime

    make_job(root, "job-1", cost="3.5", at=datetime.now(UTC).isoformat())
    client = create_app(root, monthly_budget=Decimal("10")).test_client()
    assert 'id="budget-left" class="">$6.50 left' in client.get("/costs").get_data(as_text=True)


# -- presets -----------------------------------------------------------------------------------------------------
def test_presets_dir_follows_each_platform(tmp_path):
    home = Path("/home/ann")
    assert presets_dir("linux", {}, home) == home / ".config/posefactory/presets"
    assert presets_dir("linux", {"XDG_CONFIG_HOME": "/x/cfg"}, home) == Path("/x/cfg/posefactory/presets")
    assert presets_dir("linux", {"XDG_CONFIG_HOME": "relative"}, home) == home / ".config/posefactory/presets"
    assert presets_dir("darwin", {}, home) == home / "Library/Application Support/posefactory/presets"
    assert presets_dir("win32", {"APPDATA": "C:/Users/ann/AppData/Roaming"}, home) == \
        Path("C:/Users/ann/AppData/Roaming/posefactory/presets")
    assert presets_dir("linux", {"POSEFACTORY_PRESETS_DIR": "/p"}, home) == Path("/p")


def test_presets_round_trip_and_bad_files(tmp_path):
    folder = tmp_path / "presets"
    path = save_preset(PromptPreset(name="Moody knight!", prompt="a knight, rain", steps=40, style_preset="cinematic"),
                       folder)
    assert path.name == "Moody_knight.yaml"
    assert load_preset(path) == PromptPreset(name="Moody knight!", prompt="a knight, rain", steps=40,
                                             style_preset="cinematic")
    (folder / "bad.yaml").write_text("steps: 500\n")
    (folder / "evil.yaml").write_text("!!python/object/apply:os.system ['true']\n")
    (folder / "big.yaml").write_text("prompt: '" + "x" * 70_000 + "'\n")
    presets, problems = list_presets(folder)
    assert [p.name for p in presets] == ["Moody knight!"]
    assert len(problems) == 3 and any("steps" in p for p in problems)
    with pytest.raises(PresetError):
        save_preset(PromptPreset(name="///"), folder)
    assert delete_preset("Moody knight!", folder) and not delete_preset("Moody knight!", folder)


def test_presets_pages_save_and_delete(app, client, tmp_path):
    response = post(client, app, "/presets", {"name": HOSTILE[:60], "prompt": HOSTILE, "strength": "0.5", "steps": "25",
                                              "cfg_scale": "8", "style_preset": "anime"})
    assert response.status_code == 302
    presets, _ = list_presets(tmp_path / "presets")
    assert presets[0].prompt == HOSTILE and presets[0].steps == 25
    body = client.get("/presets").get_data(as_text=True)
    assert "<script>alert" not in body and "&lt;script&gt;" in body
    assert "steps 500" not in body
    post(client, app, "/presets", {"name": "x", "steps": "500", "strength": "0.5", "cfg_scale": "7"})
    assert "steps: 500 must be a whole number in 1..150" in client.get("/presets").get_data(as_text=True)
    generate = client.get("/generate", query_string={"preset": presets[0].name}).get_data(as_text=True)
    assert "&lt;script&gt;" in generate and 'value="25"' in generate
    post(client, app, "/presets/delete", {"name": presets[0].name})
    assert list_presets(tmp_path / "presets")[0] == []


# -- library -----------------------------------------------------------------------------------------------------
def test_library_save_rename_tag_favourite_delete_restore(root, app, client):
    make_job(root, "job-1", prompt="a knight", seed=9, images=2)
    response = post(client, app, "/jobs/job-1/save-look", {"character": HOSTILE[:90], "look": "Rainy"})
    assert response.status_code == 302
    character_url = response.headers["Location"]
    cid = character_url.rsplit("/", 1)[-1]
    page = client.get(character_url).get_data(as_text=True)
    assert "Rainy" in page and "/thumbs/job-1/ai-render-1.png" in page and "<script>alert" not in page
    stored = json.loads((root / "library" / "characters" / f"{cid}.json").read_text())
    look = stored["looks"][0]
    assert look["seed"] == 9 and look["prompt"] == "a knight" and look["images"][0] == {"job_id": "job-1",
                                                                                        "name": "ai-render-1.png"}
    post(client, app, f"/library/{cid}/rename", {"name": "Sir Knight"})
    post(client, app, f"/library/{cid}/tags", {"tags": "Hero, armour, hero"})
    post(client, app, f"/library/{cid}/favourite", {"favourite": "1"})
    stored = json.loads((root / "library" / "characters" / f"{cid}.json").read_text())
    assert (stored["name"], stored["tags"], stored["favourite"]) == ("Sir Knight", ["hero", "armour"], True)
    post(client, app, "/library", {"name": "Orc"})
    assert "Orc" in client.get("/library").get_data(as_text=True)
    tagged = client.get("/library?tag=hero").get_data(as_text=True)
    assert "★ Sir Knight" in tagged and "Orc" not in tagged
    post(client, app, f"/library/{cid}/looks/{look['id']}/delete")
    assert json.loads((root / "library" / "characters" / f"{cid}.json").read_text())["looks"] == []
    trashed = list((root / "library" / "trash").glob("*.json"))
    assert len(trashed) == 1
    post(client, app, f"/library-trash/{trashed[0].stem}/restore")
    assert json.loads((root / "library" / "characters" / f"{cid}.json").read_text())["looks"][0]["id"] == look["id"]
    assert not list((root / "library" / "trash").glob("*.json"))
    post(client, app, f"/library/{cid}/delete")
    assert not (root / "library" / "characters" / f"{cid}.json").exists()
    trashed = list((root / "library" / "trash").glob("*.json"))
    post(client, app, f"/library-trash/{trashed[0].stem}/restore")
    assert json.loads((root / "library" / "characters" / f"{cid}.json").read_text())["name"] == "Sir Knight"
    assert client.get("/library/..%2F..%2Fetc").status_code == 404
    assert post(client, app, "/library-trash/..%2Fx/restore").status_code == 404
    refused = post(client, app, "/library-trash/..x/restore")
    assert "nothing in the trash" in client.get(refused.headers["Location"]).get_data(as_text=True)


# -- generate: uploads and refusals ---------------------------------------------------------------------------------
def test_uploads_must_be_blend_files_within_the_limit(root, tmp_path):
    import io

    app = create_app(root, presets_folder=tmp_path / "presets", max_upload_bytes=64 * 1024)
    client = app.test_client()
    form = {"prompt": "a knight", "size": "1024x1024", "backend": "none", "host": "nowhere", "steps": "30",
            "variations": "1", "seed": "0", "strength": "0.35", "cfg_scale": "7"}

    def upload(name: str, content: bytes) -> str:
        response = post(client, app, "/generate", {**form, "blend": (io.BytesIO(content), name)},
                        content_type="multipart/form-data")
        if response.status_code != 302:
            return str(response.status_code)
        return client.get(response.headers["Location"]).get_data(as_text=True)

    assert "only .blend files" in upload("x.png", b"BLENDER-v500")
    assert "is not a Blender file" in upload("fake.blend", b"#!/bin/sh\nrm -rf /\n")
    assert upload("big.blend", b"BLENDER" + b"0" * 100 * 1024) == "413"
    assert not list((root / "scenes").glob("*.blend"))
    # A good header is kept under its hash (the job is then refused for the unknown host, before anything runs).
    assert "unknown host" in upload("knight.blend", b"BLENDER17-01v0500" + b"\0" * 100)
    stored = list((root / "scenes").glob("*.blend"))
    assert len(stored) == 1 and len(stored[0].stem) == 64
    assert "knight.blend" in client.get("/generate").get_data(as_text=True)
    assert not list((root / "jobs").glob("*.json")) if (root / "jobs").exists() else True


def test_rerun_and_cancel_refuse_clearly(root, app, client):
    make_job(root, "job-1", images=1, host="runpod")
    page = client.get(post(client, app, "/jobs/job-1/rerun").headers["Location"]).get_data(as_text=True)
    assert "not on this machine" in page
    page = client.get(post(client, app, "/jobs/job-1/cancel").headers["Location"]).get_data(as_text=True)
    assert "is not running" in page
    assert post(client, app, "/jobs/..%2Fx/cancel").status_code == 404


def test_settings_of_a_local_job_come_from_its_pod_job_file_and_its_scene_from_submissions_only(root):
    from remote.dashboard.readers import JobIndex, ManifestCache
    from remote.dashboard.scenes import SceneStore

    make_job(root, "job-1", images=1, host="local")
    sha = "ab" * 32
    workspace = root / "local-pod" / "workspace"
    (workspace / "jobs" / "job-1").mkdir(parents=True)
    (workspace / "jobs" / "job-1" / "job.json").write_text(json.dumps({
        "blend_path": f"{workspace}/jobs/job-1/scene/character.blend", "output_dir": "x", "prompt": "a knight",
        "steps": 33, "width": 1216, "height": 832, "seed": 5, "api_base_url": "https://evil.example"}))
    store, job = SceneStore(root), JobIndex(root).get("job-1")
    # The CLI's and the add-on's scenes travel as file trees: no single .blend here to re-run from.
    assert store.scene_of(job) == "" and store.scenes() == []
    assert store.settings_of(job, ManifestCache().get(job)) == {"prompt": "a knight", "steps": 33, "width": 1216,
                                                                  "height": 832, "seed": 5}
    (root / "scenes").mkdir()
    (root / "scenes" / f"{sha}.blend").write_bytes(b"BLENDER-v500")  # one the dashboard took in
    assert store.path(sha) == (root / "scenes" / f"{sha}.blend").resolve()
    assert [scene.sha256 for scene in store.scenes()] == [sha]
    assert store.path("../" + sha) is None and store.path("ab" * 31) is None
    # Another host's job: its settings come from the manifest, and its scene is unknown here.
    make_job(root, "job-2", images=1, host="runpod", seed=8)
    other = JobIndex(root).get("job-2")
    assert store.scene_of(other) == ""
    settings = store.settings_of(other, ManifestCache().get(other))
    assert settings["seed"] == 8 and settings["width"] == 1024 and settings["backend"] == "stability"


def test_the_command_serves_on_loopback_only_by_default(tmp_path):
    import socket
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from tests.fixtures import free_port

    port = free_port()
    env = {**os.environ, "POSEFACTORY_DATA_DIR": str(tmp_path / "data"), "POSEFACTORY_PRESETS_DIR": str(tmp_path / "p")}
    env.pop("POSEFACTORY_DASHBOARD_TOKEN", None)
    server = subprocess.Popen([sys.executable, "-m", "remote.dashboard", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = [server.stdout.readline() for _ in range(2)]
        assert any(f"on http://127.0.0.1:{port}/" in line for line in banner), banner
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    assert response.status == 200
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the dashboard did not answer"
                time.sleep(0.2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outward address
            outward = probe.getsockname()[0]
        if not outward.startswith("127."):
            with pytest.raises(OSError):
                socket.create_connection((outward, port), timeout=5).close()
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.slow
def test_cancel_reaches_a_job_another_process_runs(tmp_path, monkeypatch, sample_scene):
    """A CLI job on the local host, cancelled from the dashboard: the pod stops it, the CLI ends it."""
    import subprocess
    import sys
    import time

    root = tmp_path / "data"
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(root))
    monkeypatch.setenv("POSEFACTORY_BPY_PYTHON", sys.executable)
    cli = subprocess.Popen([sys.executable, "-m", "remote.cli", "render", str(sample_scene), "--prompt", "slow",
                            "--backend", "none", "--samples", "20000"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        app = create_app(root, presets_folder=tmp_path / "presets")
        client = app.test_client()
        deadline = time.monotonic() + 240
        job_id = None
        while time.monotonic() < deadline:
            running = client.get("/api/jobs").get_json()["running"]
            if running and running[0]["stage"] == "rendering":
                job_id = running[0]["job_id"]
                break
            time.sleep(0.5)
        assert job_id, "the CLI job never reached rendering"
        page = client.get(post(client, app, f"/jobs/{job_id}/cancel").headers["Location"]).get_data(as_text=True)
        assert f"cancel sent to local for {job_id}" in page
        output, _ = cli.communicate(timeout=120)
        assert cli.returncode != 0 and "cancelled by the user" in output, output
        status = client.get(f"/api/jobs/{job_id}").get_json()
        assert status["status"] in ("failed", "cancelled") and "cancelled" in status["error"]
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)


def test_job_page_shows_each_items_skeleton_warning_and_control_images(root, client):
    skeleton = [{"armature": "Body", "convention": "Mixamo", "mapped": 18, "on_screen": 16, "hands": ["left", "right"],
                 "missing": ["left_ear", "right_ear"]}]
    make_job(root, "20261120-110000-cccccc", images=0, backend="none", items=[
        {"name": "Wave--Camera", "status": "done", "render": "Wave--Camera/render.png", "images": [],
         "skeletons": skeleton, "control_images": {"openpose": "Wave--Camera/control-openpose.png",
                                                   "depth": "../../etc/passwd", "x": "Wave--Camera/render.png"}},
        {"name": "Kick--Camera", "status": "failed", "images": [], "skeletons": [{**skeleton[0], "on_screen": 3}],
         "error": "openpose control: armature 'Body' (Mixamo) has 3 of 18 body joints on screen, fewer than 12"}])
    item = root / "output" / "20261120-110000-cccccc" / "Wave--Camera"
    item.mkdir()
    (item / "control-openpose.png").write_bytes(png_bytes(64, (255, 0, 0)))
    page = client.get("/jobs/20261120-110000-cccccc").get_data(as_text=True)
    assert "Body (Mixamo): 16 of 18 joints on screen, 18 mapped, hands: left right" in page
    assert "Body (Mixamo): 3 of 18 joints on screen" in page and "fewer than 12" in page
    assert "/files/20261120-110000-cccccc/Wave--Camera/control-openpose.png" in page
    assert "passwd" not in page and page.count("control-") == page.count("control-openpose.png")
    image = client.get("/files/20261120-110000-cccccc/Wave--Camera/control-openpose.png")
    assert image.status_code == 200 and image.data == png_bytes(64, (255, 0, 0))

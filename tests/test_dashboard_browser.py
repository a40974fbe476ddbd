"""The dashboard in a real headless Chromium (Debian's package, driven by
Playwright through ``executable_path``): a finished job's images, a job
submitted on the ``local`` host watched until done, a preset saved in the
browser and found in Blender's preset menu, a look deleted and restored,
and the cost chart's totals against the ledger."""
from __future__ import annotations

import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from remote.dashboard.app import create_app
from tests.fixtures import free_port
from tests.fixtures.dashboard_data import ledger_total, make_job

pytestmark = pytest.mark.slow


class LiveDashboard:
    def __init__(self, root: Path, presets: Path) -> None:
        self.root = root
        self.app = create_app(root, presets_folder=presets)
        port = free_port()
        self.server = make_server("127.0.0.1", port, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


@pytest.fixture
def live(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    presets = tmp_path / "presets"
    # The pipeline's local host keeps its workspace under the data dir and renders with this bpy.
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(root))
    monkeypatch.setenv("POSEFACTORY_PRESETS_DIR", str(presets))
    monkeypatch.setenv("POSEFACTORY_BPY_PYTHON", sys.executable)
    monkeypatch.delenv("STABILITY_API_KEY", raising=False)
    server = LiveDashboard(root, presets)
    yield server
    server.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    assert not errors, errors  # no script errors, no CSP violations, nothing fetched from elsewhere


def images_loaded(page) -> list[int]:
    return page.eval_on_selector_all("img.full", "els => els.map(e => e.complete ? e.naturalWidth : -1)")


def test_a_finished_job_shows_its_images(live, page):
    make_job(live.root, "20261120-100000-aaaaaa", prompt="a knight <b>bold</b>", images=2, cost="0.08", seed=5)
    page.goto(live.url + "/")
    page.wait_for_selector("img.thumb")
    assert page.eval_on_selector("img.thumb", "e => e.complete && e.naturalWidth") > 0
    page.click("a.job-id")
    page.wait_for_load_state("load")
    assert page.locator("td.prompt").inner_text() == "a knight <b>bold</b>"  # shown as text, not markup
    assert images_loaded(page) == [64, 64, 64]  # two AI images and the render
    assert page.locator("td.cost").inner_text() == "$0.08"


def test_generate_on_the_local_host_is_watched_until_done(live, page, sample_scene):
    page.goto(live.url + "/generate")
    page.fill("textarea[name=prompt]", "a cube knight")
    page.set_input_files("input[name=blend]", str(sample_scene))
    page.select_option("select[name=backend]", "none")
    page.select_option("select[name=host]", "local")
    page.wait_for_selector("#estimate:has-text('$')")
    assert page.locator("#estimate").inner_text().startswith("$0.0000")  # local costs nothing, no AI step
    page.click("#submit-job")
    page.wait_for_url("**/jobs/*")
    job_id = page.url.rsplit("/", 1)[-1]
    # The page polls the job's JSON and reloads when it ends.
    page.wait_for_selector(".live-status:text-is('done')", timeout=240_000)
    assert images_loaded(page) == [1024]  # the render (no AI step without a key)
    assert (live.root / "output" / job_id / "render.png").is_file()
    assert (live.root / "jobs" / f"{job_id}.json").is_file()
    # Re-run with the same settings: a new job on the same host from the same scene.
    page.click("text=Re-run with the same settings")
    page.wait_for_url(lambda url: url.rsplit("/", 1)[-1] not in (job_id, "rerun"))
    rerun_id = page.url.rsplit("/", 1)[-1]
    page.wait_for_selector(".live-status:text-is('done')", timeout=240_000)
    assert images_loaded(page) == [1024]
    assert page.locator("td.prompt").inner_text() == "a cube knight"
    assert rerun_id != job_id and (live.root / "output" / rerun_id / "render.png").is_file()
    # The uploaded scene is offered again, with the job's render as its thumbnail.
    page.goto(live.url + "/generate")
    assert page.locator("ul.scenes img.thumb").count() == 1
    assert "sample.blend" in page.locator("ul.scenes").inner_text()


def test_a_running_job_is_cancelled_from_its_page(live, page, sample_scene):
    page.goto(live.url + "/generate")
    page.fill("textarea[name=prompt]", "a slow render")
    page.set_input_files("input[name=blend]", str(sample_scene))
    page.select_option("select[name=backend]", "none")
    page.fill("input[name=render_samples]", "20000")  # minutes on this CPU: it is still rendering when cancelled
    page.click("#submit-job")
    page.wait_for_url("**/jobs/*")
    job_id = page.url.rsplit("/", 1)[-1]
    page.wait_for_selector(".live-stage:text-is('rendering')", timeout=240_000)
    page.wait_for_selector(".live-message:has-text('on local for')")  # the pipeline's own progress line
    assert page.locator(".live-progress").evaluate("e => e.value") > 0.5  # past connect, set-up and upload
    page.click("text=Cancel job")
    page.wait_for_selector(".live-status:text-is('cancelled')", timeout=120_000)
    record = (live.root / "jobs" / f"{job_id}.json").read_text()
    assert '"status": "cancelled"' in record
    page.goto(live.url + "/")
    assert page.locator("section.running").count() == 0


def test_a_preset_saved_in_the_browser_is_in_blenders_preset_menu(live, page, blender):
    page.goto(live.url + "/presets")
    page.fill(".preset-form input[name=name]", "Rainy knight")
    page.fill(".preset-form textarea[name=prompt]", "a knight in the rain")
    page.fill(".preset-form input[name=steps]", "44")
    page.click(".preset-form button")
    page.wait_for_selector("li.preset[data-name='Rainy knight']")
    page.click("li.preset[data-name='Rainy knight'] a.button")  # apply: Generate with the preset's settings
    page.wait_for_url("**/generate?preset=*")
    assert page.input_value("textarea[name=prompt]") == "a knight in the rain"
    assert page.input_value("input[name=steps]") == "44"
    result = blender.run(textwrap.dedent("""
        import bpy
        from pathlib import Path
        from bl_ext.user_default.posefactory import presets as menu
        listed = []
        class Layout:
            def __getattr__(self, name):
                def call(*args, **kwargs):
                    if name == "operator" and args[0] == "posefactory.apply_prompt_preset":
                        listed.append(kwargs.get("text"))
                    return self
                return call
        fake = type("Fake", (), {})()
        fake.layout, fake.bl_idname = Layout(), menu.POSEFACTORY_MT_prompt_presets.bl_idname
        fake.preset_operator = menu.POSEFACTORY_MT_prompt_presets.preset_operator
        fake.preset_add_operator = menu.POSEFACTORY_MT_prompt_presets.preset_add_operator
        fake.preset_extensions = menu.POSEFACTORY_MT_prompt_presets.preset_extensions
        fake.path_menu = lambda *a, **k: bpy.types.Menu.path_menu(fake, *a, **k)
        menu.POSEFACTORY_MT_prompt_presets.draw(fake, bpy.context)
        path = str(menu.presets_dir() / "Rainy_knight.yaml")
        bpy.ops.posefactory.apply_prompt_preset(filepath=path)
        report(listed=listed, prompt=bpy.context.scene.posefactory.prompt, steps=bpy.context.scene.posefactory.steps)
    """), env={"POSEFACTORY_PRESETS_DIR": str(live.root.parent / "presets")})
    assert result == {"listed": ["Rainy knight"], "prompt": "a knight in the rain", "steps": 44}


def test_a_look_is_deleted_and_restored(live, page):
    make_job(live.root, "job-1", prompt="a knight", images=2, seed=3)
    page.goto(live.url + "/jobs/job-1")
    page.fill("input[name=character]", "Sir Cube")
    page.fill("input[name=look]", "Rainy")
    page.click("text=Save to library")
    page.wait_for_selector("h3.look-name:text-is('Rainy')")
    assert page.locator("li.look img.thumb").count() == 2
    page.click("button.delete-look")
    page.wait_for_selector("text=Look moved to the trash")
    assert page.locator("li.look").count() == 0
    page.click("text=Library")
    page.click("text=Trash (1)")
    page.click("li.trashed button.restore")
    page.wait_for_selector("h3.look-name:text-is('Rainy')")
    assert page.locator("h1.character-name").inner_text() == "Sir Cube"
    assert page.locator("li.look img.thumb").count() == 2


def test_the_cost_chart_totals_equal_the_ledger(live, page):
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    amounts = ["0.0133", "0.0267", "1.005", "0.3333", "0.0001", "2.4999", "0.125", "0.07"]
    for n, amount in enumerate(amounts):
        make_job(live.root, f"job-{n}", cost=amount, at=(today - timedelta(days=2 * n)).isoformat(), images=1,
                 host="local" if n % 2 else "runpod")
    expected = ledger_total(live.root)
    page.goto(live.url + "/costs")
    bars = page.eval_on_selector_all("svg.chart rect.bar", "els => els.map(e => e.dataset.usd)")
    assert len(bars) == 30
    assert sum((Decimal(v) for v in bars), Decimal(0)) == expected
    assert Decimal(page.get_attribute("svg.chart", "data-total")) == expected
    cents = f"${expected.quantize(Decimal('0.01'))}"
    assert page.locator("#chart-total").inner_text() == cents
    assert page.locator("#total-all").inner_text() == cents
    shown = dict(zip(page.eval_on_selector_all("#per-host th", "els => els.map(e => e.textContent)"),
                     page.eval_on_selector_all("#per-host td", "els => els.map(e => e.textContent)")))
    by_host = {"local": sum(Decimal(a) for n, a in enumerate(amounts) if n % 2),
               "runpod": sum(Decimal(a) for n, a in enumerate(amounts) if not n % 2)}
    assert shown == {host: f"${amount.quantize(Decimal('0.01'))}" for host, amount in by_host.items()}

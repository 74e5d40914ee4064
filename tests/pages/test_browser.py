"""The pages in a real browser (Debian's chromium driven by Playwright) against a live server
over the populated archive: search and open an exposure and its similar ones; log in as staff,
label a cell and see the label on a member's page; flag a node and meet the warning before the
download. Screenshots of each page go to test-artifacts/screenshots/."""
import io
import re
from pathlib import Path

import numpy as np
import pytest
from tests import factories

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API keeps an event loop on this thread; the ORM calls the test makes
    # between browser steps are plain synchronous calls, so Django's async guard is lifted.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(30_000)
    return context.new_page()


def images_loaded(page) -> bool:
    """Every <img> on the page has finished loading with real pixels (no broken image). Lazy
    thumbnails load when scrolled to, so the page is scrolled through first."""
    page.wait_for_load_state("load")
    page.evaluate("() => Array.from(document.images).forEach(i => { i.loading = 'eager'; })")
    try:
        page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=60_000)
    except Exception:
        return False
    broken = page.evaluate("() => Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src)")
    assert not broken, broken
    page.evaluate("() => window.scrollTo(0, 0)")
    return True


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_search_open_an_exposure_and_its_similar_ones(populated_archive, live_server, browser):
    from archive.models import CellAssignment

    _, desom2 = populated_archive
    cells = list(CellAssignment.objects.filter(model_version=desom2).values_list("cell", flat=True))
    cell = max(set(cells), key=cells.count)
    page = new_page(browser)

    page.goto(live_server.url + "/")
    assert page.locator("table.results tbody tr").count() == 25
    assert images_loaded(page)
    shot(page, "search")

    page.fill("input[name=cell]", str(cell))
    page.click("#filters button[type=submit]")
    page.wait_for_url(re.compile(rf"cell={cell}"))
    assert page.locator("table.results tbody tr").count() == cells.count(cell)

    page.locator("a.expnum").first.click()
    page.wait_for_url(re.compile(r"/exposures/\d+/$"))
    first_url = page.url
    assert page.locator("#similar figure.card").count() == 9
    assert images_loaded(page)  # preview, density map, histo-vector and nine thumbnails
    shot(page, "exposure")

    page.locator("#similar figure.card a").first.click()
    page.wait_for_url(re.compile(r"/exposures/\d+/$"))
    assert page.url != first_url and page.locator("#similar figure.card").count() == 9

    page.goto(live_server.url + "/maps/desom1/")
    assert images_loaded(page)
    # Each node shows its own tile of the one mosaic image, at a distinct offset.
    offsets = page.eval_on_selector_all("#desom1-map a.node", "els => els.map(e => getComputedStyle(e).backgroundPosition)")
    assert len(set(offsets)) == len(offsets) > 1
    shot(page, "desom1_map")
    page.locator("#desom1-map a.node").nth(7).click()
    page.wait_for_url(re.compile(r"/maps/desom1/nodes/7/$"))
    assert page.locator("#richest figure.card").count() > 0 and images_loaded(page)
    shot(page, "desom1_node")

    page.goto(live_server.url + "/maps/desom2/")
    page.click(f"#desom2-map a[data-cell='{cell}']")
    page.wait_for_url(re.compile(rf"/maps/desom2/cells/{cell}/$"))
    shown = page.locator("#members figure.card").count()
    assert shown == min(9, cells.count(cell)) and images_loaded(page)
    shot(page, "desom2_cell")

    y, x = np.indices((32, 32)) - 15.5
    buffer = io.BytesIO()
    np.save(buffer, (100 * np.exp(-0.5 * (x ** 2 + y ** 2) / 4.0) + 5).astype(np.float32))
    page.goto(live_server.url + "/search/upload/")
    page.set_input_files("input[name=file]", files=[{"name": "star.npy", "mimeType": "application/octet-stream",
                                                     "buffer": buffer.getvalue()}])
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#matches")
    assert page.locator("#matches figure.card").count() == 12 and images_loaded(page)
    shot(page, "upload")


def test_staff_labels_a_cell_and_flags_a_node(populated_archive, live_server, browser):

    from archive.models import CellAssignment, Exposure

    desom1, desom2 = populated_archive
    factories.user("curator", staff=True, password="curator-pw")
    cells = list(CellAssignment.objects.filter(model_version=desom2).values_list("cell", flat=True))
    by_size = sorted(set(cells), key=cells.count)
    cell, other_cell = by_size[-1], by_size[-2]
    page = new_page(browser)

    page.goto(live_server.url + "/accounts/login/")
    shot(page, "login")
    page.fill("input[name=username]", "curator")
    page.fill("input[name=password]", "curator-pw")
    page.click("main button[type=submit]")
    page.wait_for_url(live_server.url + "/")
    assert "curator" in page.locator("header .user").inner_text()

    page.goto(f"{live_server.url}/maps/desom2/cells/{cell}/")
    assert not page.locator("input[name=other]").is_visible()  # shown only for "other"
    page.select_option("#label-form select[name=label]", "RBT")
    page.fill("#label-form textarea[name=note]", "trailed stars in every member")
    page.click("#label-form button[type=submit]")
    page.wait_for_selector(".messages")
    assert page.locator("#cell-label").inner_text() == "RBT"
    shot(page, "desom2_cell_staff")
    page.locator("#members figure.card a").first.click()
    page.wait_for_url(re.compile(r"/exposures/\d+/$"))
    assert page.locator("#quality-label").inner_text() == "RBT"

    # A second cell labelled Good, with the "other" box left hidden.
    page.goto(f"{live_server.url}/maps/desom2/cells/{other_cell}/")
    page.select_option("#label-form select[name=label]", "Good")
    page.click("#label-form button[type=submit]")
    page.wait_for_selector(".messages")

    page.goto(live_server.url + "/maps/desom2/")
    assert page.locator(f"#desom2-map a[data-cell='{cell}']").get_attribute("data-label") == "RBT"
    assert page.locator(f"#desom2-map a[data-cell='{other_cell}']").get_attribute("data-label") == "Good"
    colours = {page.locator(f"#desom2-map a[data-cell='{c}']").evaluate("e => getComputedStyle(e).backgroundColor")
               for c in (cell, other_cell)}
    assert len(colours) == 2 and "rgb(255, 255, 255)" not in colours
    shot(page, "desom2_map")

    # Flag the node where one exposure outside that cell puts most of its sources.
    exposure = Exposure.objects.filter(is_science=True).exclude(cells__cell=cell).first()
    histo = exposure.vectors.get(model_version=desom1).histo_array
    node = int(np.argmax(histo))
    page.goto(f"{live_server.url}/maps/desom1/nodes/{node}/")
    page.fill("#flag-form input[name=name]", "streaky")
    page.fill("#flag-form input[name=threshold]", f"{0.9 * histo[node] / histo.sum():.4f}")
    page.click("#flag-form button[type=submit]")
    page.wait_for_selector(".messages")
    assert "streaky" in page.locator(".messages").inner_text()
    shot(page, "desom1_node_staff")

    page.goto(f"{live_server.url}/exposures/{exposure.pk}/")
    assert "streaky" in page.locator("#warnings").inner_text()
    dialogs = []

    def dismiss(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click("#download")
    page.wait_for_timeout(300)
    assert dialogs and "streaky" in dialogs[0]
    assert page.url.endswith(f"/exposures/{exposure.pk}/")  # dismissed: nothing downloaded
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == exposure.filename

    # Without JavaScript the same link is a page that lists the warnings first.
    page.goto(f"{live_server.url}/exposures/{exposure.pk}/download/confirm/")
    assert "streaky" in page.locator("#warnings").inner_text()
    shot(page, "download_confirm")

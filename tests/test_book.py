"""The course website (``make book``): built afresh, served on localhost and opened in headless Chromium.

Every HTML page must render (a title, a non-empty article, no Sphinx / MyST error, no unrendered notebook or directive
text), every ``<img>`` must load, every link inside the site must reach an existing page and, with a ``#fragment``, an
element with that id; the notebooks' exercise solutions must be folded. A negative control runs the same checks on a
tiny generated site with a broken image, link and fragment. A screenshot of 01_probing goes to
``build/book-screenshots/01_probing.png``.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make setup-browser``); the browser tests skip without them.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("DPT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DPT_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOT = ROOT / "build" / "book-screenshots" / "01_probing.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1000",
                  # offline, wherever it runs: no host but localhost resolves, so the CDN's MathJax never loads or
                  # typesets (a runner that reached it may spend a minute typesetting a long page on 2 cores)
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
# text that must never reach a page: a notebook's JSON, a MyST directive or marker that was not rendered
UNRENDERED = ['"cell_type":', '"nbformat":', "```{", "{toctree}", "{include}", "{dropdown}", "% toctree:"]


def _load_build():
    spec = importlib.util.spec_from_file_location("book_build", ROOT / "docs" / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


book = _load_build()


# ---------------------------------------------------------------- the checking functions


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def serve():
    """serve(folder) -> base URL of an http.server on localhost (threads stopped at the end)."""
    servers = []

    def start(folder: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through Debian's chromedriver, with a fresh profile; skips where either is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"headless Chromium not installed ({', '.join(missing)} missing): run `make setup-browser`")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed: run `make setup`")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    # generous: the longest lessons (hundreds of outputs) take seconds to lay out on a busy 2-core machine
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


# what one page holds, as the browser sees it once its images have settled (lazy ones made eager)
PAGE_SCRIPT = """
const done = arguments[arguments.length - 1];
const bodied = new Promise(r => { const wait = () => (document.body && document.readyState === 'complete') ? r() : setTimeout(wait, 50); wait(); });
bodied.then(() => {
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  const settled = Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  return Promise.race([settled, new Promise(r => setTimeout(r, 10000))]).then(() => imgs);
}).then(imgs => { try {
  const main = document.querySelector('article.bd-article, [role=main], main, article') || document.body;
  done({
    title: document.title,
    article: main.innerText.trim().length,
    text: main.innerText,
    errors: [...document.querySelectorAll('.system-message, .problematic, .admonition.error, .output.traceback')]
            .map(e => e.innerText.slice(0, 160)),
    images: imgs.map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id)
         .concat([...document.querySelectorAll('a[name]')].map(a => a.name)),
    folds: [...document.querySelectorAll('details.above-input, details.solution')].map(d => ({
      open: d.open,
      hidden: [...d.querySelectorAll('.cell_input, .sd-summary-content')].every(e => !e.checkVisibility()),
      label: d.querySelector('summary').innerText.trim().split('\\n')[0]})),
    nav: [...document.querySelectorAll('nav.bd-docs-nav a.reference.internal')].map(a => a.href),
  });
} catch (e) { done({fatal: String(e)}); } });
"""


def page_report(driver, url: str, tries: int = 2) -> dict:
    """What PAGE_SCRIPT reads from ``url``; a page that times out or whose script fails (on a loaded machine a page
    was once read before its body existed) is loaded once more, then fails naming itself and the error."""
    from selenium.common.exceptions import TimeoutException

    for attempt in range(1, tries + 1):
        try:
            driver.get(url)
            report = driver.execute_async_script(PAGE_SCRIPT)
        except TimeoutException as error:
            if attempt == tries:
                raise AssertionError(f"{url}: no report within {tries} tries ({error.msg.splitlines()[0]})") from None
            continue
        if "fatal" not in report:
            break
    assert "fatal" not in report, f"{url}: the page script failed {tries} times: {report.get('fatal')}"
    report["url"] = url
    return report


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def page_problems(report: dict) -> list[str]:
    """What is wrong with one page on its own: title, article, errors, unrendered text, images."""
    where = report["url"]
    out = []
    if not report["title"].strip():
        out.append(f"{where}: no title")
    if report["article"] < 20:
        out.append(f"{where}: empty article")
    out += [f"{where}: error shown: {e!r}" for e in report["errors"]]
    out += [f"{where}: unrendered text {m!r}" for m in UNRENDERED if m in report["text"]]
    out += [f"{where}: image did not load: {i['src']}" for i in report["images"] if not i["ok"]]
    return out


def link_problems(reports: dict[str, dict], base: str) -> list[str]:
    """Internal links (same host) that reach no page, or a page without the fragment's id."""
    out, statuses = [], {}
    host = urlsplit(base).netloc
    for url, report in reports.items():
        for href in report["links"]:
            parts = urlsplit(href)
            if parts.scheme not in ("http", "https") or parts.netloc != host:
                continue
            target, fragment = urldefrag(href)
            if target.endswith("/"):
                target += "index.html"
            if target not in reports:
                statuses.setdefault(target, _status(target))
                if statuses[target] != 200:
                    out.append(f"{url}: link to a missing file: {href} ({statuses[target]})")
                    continue
            if fragment and target.endswith(".html"):
                ids = reports[target]["ids"] if target in reports else None
                if ids is None:
                    out.append(f"{url}: link to a page not crawled: {href}")
                elif unquote(fragment) not in ids:
                    out.append(f"{url}: no id {fragment!r} on {target}")
    return sorted(set(out))


def crawl(driver, folder: Path, base: str) -> dict[str, dict]:
    """page_report of every HTML page under ``folder`` (the theme's template fragments in _static left out)."""
    pages = sorted(p for p in folder.rglob("*.html") if "_static" not in p.relative_to(folder).parts)
    return {base + p.relative_to(folder).as_posix(): page_report(driver, base + p.relative_to(folder).as_posix())
            for p in pages}


# ---------------------------------------------------------------- without a browser


def test_links_rewritten_for_the_site():
    text = "\n".join([
        "[a page](evidence.md#one), [root style](docs/cost.md), [notebook](../notebooks/01_probing.ipynb)",
        "[its pair](../notebooks/02_tuning.py), [code](../dptlib/config.py), ![fig](../figures/probe_loss.png)",
        "[web](https://example.org/x.md), [here](#d1), [nothing](no_such_file.md)",
        '<a id="d1"></a>**D1.** a deviation',
        "```", "[inside a fence](../dptlib/config.py)", "```"])
    out = book.rewrite_markdown(text, "docs/results.md").split("\n")
    assert out[0] == "[a page](evidence.md#one), [root style](cost.md), [notebook](../notebooks/01_probing.ipynb)"
    assert out[1] == "[its pair](../notebooks/02_tuning.ipynb), code, ![fig](../figures/probe_loss.png)"
    assert out[2] == "[web](https://example.org/x.md), [here](#d1), [nothing](no_such_file.md)"  # left to Sphinx / the crawl
    assert out[3:5] == ["(d1)=", "**D1.** a deviation"]
    assert out[6] == "[inside a fence](../dptlib/config.py)"
    from_notebook = book.rewrite_markdown("[x](../docs/ablations.md#a) [y](docs/gpu.md)", "notebooks/04_ablation_blocks.ipynb")
    assert from_notebook == "[x](../docs/ablations.md#a) [y](../docs/gpu.md)"
    from_index = book.rewrite_markdown("[c](claims.md) [d](../course.md) [n](../../notebooks/00_toy_world.ipynb)",
                                       "docs/book/index.md", "index.md")
    tables = book.rewrite_markdown('[t](../figures/seed_claims.md) <img src="../figures/probe_loss.png">', "docs/results.md")
    assert tables == '[t](path:../figures/seed_claims.md) <img src="../figures/probe_loss.png">'
    assert from_index == "[c](claims.md) [d](docs/course.md) [n](notebooks/00_toy_world.ipynb)"


def test_solutions_folded_in_the_staged_notebooks(tmp_path):
    staged = book.stage(tmp_path)
    assert staged["notebooks"][:5] == ["00_toy_world", "00b_base_model", "01_probing", "02_tuning", "03_self_correction"]
    assert staged["notebooks"][-1] == "09_results" and len(staged["notebooks"]) >= 11
    assert {f"{n}.md" for n in staged["docs"]} == {p.name for p in (ROOT / "docs").glob("*.md")}
    assert sum(staged["solutions"].values()) > 0
    import nbformat
    for name, count in staged["solutions"].items():
        cells = nbformat.read(tmp_path / "notebooks" / f"{name}.ipynb", as_version=4).cells
        hidden = [c for c in cells if "hide-input" in c.metadata.get("tags", [])]
        dropdowns = [c for c in cells if c.cell_type == "markdown" and "{dropdown} Solution" in c.source]
        assert len(hidden) + len(dropdowns) == count, name
        assert all(book.is_solution(c) for c in hidden), name
    folded = book.fold_markdown("## What we learned\n\n- a point\n### sub\ntext")
    assert folded.startswith("## What we learned\n") and "````{dropdown} Solution" in folded and "**sub**" in folded


# ---------------------------------------------------------------- in the browser


def test_checks_catch_a_broken_site(browser, serve, tmp_path):
    """Negative control: the same functions flag a missing image, link, fragment, error and empty page."""
    shutil.copy(ROOT / "figures" / "probe_loss.png", tmp_path / "ok.png")
    (tmp_path / "good.html").write_text('<html><head><title>Good</title></head><body><main id="top"><p>A page with '
                                        'enough text to count.</p><img src="ok.png"><a href="good.html#top">self</a>'
                                        '</main></body></html>')
    (tmp_path / "bad.html").write_text('<html><head><title>Bad</title></head><body><main><p>A page with enough text '
                                       'to count.</p><img src="missing.png"><a href="nowhere.html">x</a>'
                                       '<a href="good.html#no-such-id">y</a><a href="https://example.org/">ext</a>'
                                       '<div class="system-message">ERROR/3 something</div>'
                                       '<p>```{toctree}</p></main></body></html>')
    (tmp_path / "empty.html").write_text("<html><head><title></title></head><body><main></main></body></html>")
    base = serve(tmp_path)
    reports = crawl(browser, tmp_path, base)
    assert set(reports) == {base + "good.html", base + "bad.html", base + "empty.html"}
    assert page_problems(reports[base + "good.html"]) == []
    bad = "\n".join(page_problems(reports[base + "bad.html"]))
    assert "image did not load: " + base + "missing.png" in bad
    assert "error shown" in bad and "unrendered text '```{'" in bad
    empty = "\n".join(page_problems(reports[base + "empty.html"]))
    assert "no title" in empty and "empty article" in empty
    links = link_problems(reports, base)
    assert links == [f"{base}bad.html: link to a missing file: {base}nowhere.html (404)",
                     f"{base}bad.html: no id 'no-such-id' on {base}good.html"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A fresh build of the site (as ``make book`` does, into a temporary folder): (folder, what build() returned)."""
    out = tmp_path_factory.mktemp("book") / "book"
    start = time.monotonic()
    built = book.build(out, jobs="1")
    built["wall"] = time.monotonic() - start
    return out, built


def test_site_builds_without_warnings(site):
    out, built = site
    assert built["returncode"] == 0, "sphinx-build failed (see its output above)"
    assert built["wall"] < 120, f"the site took {built['wall']:.0f} s to build"
    assert (out / "index.html").is_file() and (out / "claims.html").is_file()
    assert all((out / "notebooks" / f"{n}.html").is_file() for n in built["notebooks"])
    assert all((out / "docs" / f"{n}.html").is_file() for n in built["docs"])
    assert built["warnings"] == [], f"{len(built['warnings'])} Sphinx warnings:\n" + "\n".join(built["warnings"])


def test_site_in_chromium(browser, serve, site):
    out, built = site
    assert built["returncode"] == 0, "sphinx-build failed (see its output above)"
    base = serve(out)
    start = time.monotonic()
    reports = crawl(browser, out, base)
    problems = [p for r in reports.values() for p in page_problems(r)] + link_problems(reports, base)
    assert not problems, f"{len(problems)} problems in the site:\n" + "\n".join(problems)

    expected = (["index.html"] + [f"notebooks/{n}.html" for n in built["notebooks"]] + ["claims.html"]
                + [f"docs/{n}.html" for n in built["docs"]])
    assert set(base + p for p in expected) <= set(reports)
    # the sidebar lists the course in its reading order
    nav = [urldefrag(h)[0] for h in reports[base + "index.html"]["nav"]]
    order = [base + p for p in expected if p != "index.html"]
    assert [h for h in nav if h in order] == [h for h in order if h in nav] and set(order) <= set(nav)
    # every notebook page shows its outputs and folds each solution, closed
    for name, count in built["solutions"].items():
        report = reports[f"{base}notebooks/{name}.html"]
        assert len(report["folds"]) == count, f"{name}: {len(report['folds'])} folds, {count} solutions"
        assert all(not f["open"] and f["hidden"] for f in report["folds"]), name
        assert all(f["label"] in ("Show the solution", "Solution") for f in report["folds"]), report["folds"]
    images = sum(len(r["images"]) for r in reports.values())
    assert images >= 20 and reports[base + "notebooks/01_probing.html"]["images"]
    claims = reports[base + "claims.html"]["text"]
    assert "verdict" in claims and "holds" in claims

    browser.get(base + "notebooks/01_probing.html")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    print(f"\nbook: built in {built['wall']:.1f} s, {len(reports)} pages and {images} images checked in the browser in "
          f"{time.monotonic() - start:.1f} s, {sum(built['solutions'].values())} solutions folded; screenshot {SCREENSHOT}")

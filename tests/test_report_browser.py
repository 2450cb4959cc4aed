"""The report in a real browser: headless Chromium loads the page from disk (file://, no
server, no network) and a probe script injected into a copy of the page reports broken
images, blank figures, script/console errors and horizontal overflow into the DOM, which
``--dump-dom`` hands back (it opens the collapsed galleries first, so their tiles are
measured too, and records the page's height before and after). Also: a screenshot at laptop size and a printed PDF.

Skips when /usr/bin/chromium is absent (install: apt-get install -y chromium).
Set TRANSFERLENS_SCREENSHOTS=<folder> to keep the screenshot for a look.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures_report import make_study
from transferlens.report import build_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")

LAPTOP = (1366, 900)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

# Runs before anything else on the page; writes its findings as JSON into <pre id="tl-probe">.
PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (event) {
    var target = event.target || {};
    errors.push("error: " + (event.message || target.src || target.href || "unknown"));
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    errors.push("unhandled rejection: " + event.reason);
  });
  ["error", "warn"].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      errors.push("console." + level + ": " + Array.prototype.join.call(arguments, " "));
      return original.apply(console, arguments);
    };
  });
  function variance(img) {
    var canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    var context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    var data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    var n = 0, sum = 0, squares = 0;
    for (var i = 0; i < data.length; i += 4) {
      var grey = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      n += 1; sum += grey; squares += grey * grey;
    }
    var mean = sum / n;
    return squares / n - mean * mean;
  }
  window.addEventListener("load", function () {
    var report = {errors: errors, broken: [], blank: [], hidden: [], empty_figures: 0,
                  images: 0, figures: 0, sections: [], scroll_width: 0, collapsed: 0,
                  collapsed_height: 0, open_height: 0};
    // The galleries load collapsed; open them so that their images are measured too.
    var closed = document.querySelectorAll("details:not([open])");
    report.collapsed = closed.length;
    report.collapsed_height = document.documentElement.scrollHeight;
    closed.forEach(function (details) { details.open = true; });
    report.open_height = document.documentElement.scrollHeight;
    document.querySelectorAll("img").forEach(function (img) {
      var src = img.getAttribute("src");
      report.images += 1;
      if (!(img.complete && img.naturalWidth > 0)) { report.broken.push(src); return; }
      var box = img.getBoundingClientRect();
      if (box.width < 40 || box.height < 40) { report.hidden.push(src); }
      try {
        if (!(variance(img) > 0)) { report.blank.push(src); }
      } catch (error) { errors.push("canvas: " + error); }
    });
    document.querySelectorAll("figure").forEach(function (figure) {
      report.figures += 1;
      if (!figure.querySelector("img")) { report.empty_figures += 1; }
    });
    document.querySelectorAll("section").forEach(function (section) {
      report.sections.push(section.id);
    });
    report.scroll_width = document.documentElement.scrollWidth;
    var out = document.createElement("pre");
    out.id = "tl-probe";
    out.textContent = JSON.stringify(report);
    document.body.appendChild(out);
  });
})();
</script>"""


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess[str]:
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def probe(report_dir: Path, work: Path) -> tuple[dict, list[str]]:
    """Load a probed copy of the report; return the probe's findings and console lines."""
    copy = work / "probed"
    shutil.copytree(report_dir, copy)
    index = copy / "index.html"
    page = index.read_text(encoding="utf-8")
    index.write_text(page.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    result = chromium(
        "--enable-logging=stderr",
        "--v=0",
        "--allow-file-access-from-files",
        f"--window-size={LAPTOP[0]},{LAPTOP[1]}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        index.as_uri(),
        profile=work / "profile",
    )
    found = re.search(r'<pre id="tl-probe">(.*?)</pre>', result.stdout, re.S)
    assert found, f"no probe report (chromium rc {result.returncode}): {result.stderr[-2000:]}"
    console = re.findall(r":CONSOLE[^\]]*\] (.*)", result.stderr)
    return json.loads(html.unescape(found.group(1))), console


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    study = make_study(tmp_path_factory.mktemp("browser") / "study")
    return build_report(study).parent


def test_page_loads_without_errors_or_broken_images(report_dir: Path, tmp_path: Path) -> None:
    report, console = probe(report_dir, tmp_path)
    assert report["errors"] == [] and console == []
    assert report["broken"] == [] and report["blank"] == [] and report["hidden"] == []
    assert report["empty_figures"] == 0
    assert report["images"] == len(list(report_dir.glob("*.png"))) > 40
    assert report["figures"] > 10
    assert report["sections"][0] == "findings" and report["sections"][-1] == "provenance"
    assert report["scroll_width"] <= LAPTOP[0]  # nothing overflows a laptop screen sideways
    # One closed gallery per target and pair (the fixture's examples are PT-RIT only);
    # opening them makes the page longer.
    assert report["collapsed"] == 3
    assert report["open_height"] - report["collapsed_height"] > 3 * 100  # 96-pixel tiles


def test_probe_catches_broken_and_blank_images(report_dir: Path, tmp_path: Path) -> None:
    """The checks above can fail: a deleted figure and a uniform one are both reported."""
    broken = tmp_path / "broken"
    shutil.copytree(report_dir, broken)
    (broken / "kappa.png").unlink()
    Image.new("RGB", (300, 200), "white").save(broken / "cka_layers.png")
    report, _ = probe(broken, tmp_path)
    assert report["broken"] == ["kappa.png"]
    assert report["blank"] == ["cka_layers.png"]
    assert any("kappa.png" in error for error in report["errors"])


def test_screenshot_at_laptop_size_and_print(report_dir: Path, tmp_path: Path) -> None:
    shot, pdf = tmp_path / "report.png", tmp_path / "report.pdf"
    size = f"--window-size={LAPTOP[0]},{LAPTOP[1]}"
    result = chromium(
        size,
        f"--screenshot={shot}",
        report_dir.joinpath("index.html").as_uri(),
        profile=tmp_path / "profile",
    )
    assert shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == LAPTOP
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.var() > 0 and (pixels < 128).mean() > 0.005  # text and figures, not a blank page
    result = chromium(
        "--no-pdf-header-footer",
        f"--print-to-pdf={pdf}",
        report_dir.joinpath("index.html").as_uri(),
        profile=tmp_path / "profile",
    )
    assert pdf.is_file() and pdf.read_bytes().startswith(b"%PDF"), result.stderr[-2000:]
    assert pdf.stat().st_size > 50_000  # the figures made it into the printout
    keep = os.environ.get("TRANSFERLENS_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report-laptop.png")
        shutil.copy(pdf, Path(keep) / "report-print.pdf")

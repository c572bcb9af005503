"""The page at GET /, in a real browser: Debian's chromium driven by Playwright, against a real
server (`python -m service`, with an API key) serving a model really trained on MNIST.

Chromium comes from `make browser` (part of `make test`); without it these tests fail, never skip.
Screenshots land in each test's tmp_path; with DROPSERVE_SCREENSHOTS=DIR the desktop one is also
copied to DIR/page.png (the README's: DROPSERVE_SCREENSHOTS=docs/screenshots)."""

from __future__ import annotations

import base64
import io
import math
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Response, ViewportSize, expect, sync_playwright

from tests.server import running_server
from training.datasets import load_dataset

pytestmark = pytest.mark.integration

API_KEY = "page-test-key-0123456789"
DESKTOP = ViewportSize(width=1280, height=900)
PHONE = ViewportSize(width=390, height=844)
MNIST_INDEX = 0  # the first MNIST test digit, a 7
FASHION_INDEX = 2  # a Fashion-MNIST trouser: MI about twice the OOD threshold on seed-recipe models
MEASURED: dict[str, float] = {}  # printed at the end of the module, for the record


def chromium_executable() -> str:
    found = os.environ.get("DROPSERVE_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail("Debian's chromium is not installed: run `make browser` (part of `make test`)")
    return found


@pytest.fixture(scope="module")
def page_server(trained_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m service` on a free port, with an API key, so the page must send it."""
    log = tmp_path_factory.mktemp("page-server") / "server.log"
    with running_server(trained_repository, log, api_key=API_KEY) as server:
        yield server.url


@pytest.fixture(scope="module")
def metadata(page_server: str) -> dict[str, Any]:
    return httpx.get(f"{page_server}/v1/models/mnist-mlp").json()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_executable(), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()
    if MEASURED:
        print("\nmeasured mutual information:", {k: round(v, 4) for k, v in MEASURED.items()})


class DemoPage:
    """The page in one tab, seen through what a person sees: its controls and what it shows."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.errors: list[str] = []  # uncaught exceptions and CSP violations
        self.answers: list[Response] = []  # the uncertainty calls, in order
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console",
            lambda m: self.errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.on("response", lambda r: self.answers.append(r) if "/uncertainty" in r.url else None)
        # Playwright turns file-chooser interception on without waiting for it: listen from the
        # start, so that a later expect_file_chooser cannot race a native dialog.
        page.on("filechooser", lambda chooser: None)
        self.document = page.goto(url)
        expect(page.locator("body")).to_have_attribute("data-ready", "true")

    def stroke(self, points: list[tuple[float, float]]) -> None:
        """One pointer stroke with the mouse; points in [0, 1] of the drawing pad."""
        box = self.page.locator("#pad").bounding_box()
        assert box is not None
        xy = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in points]
        self.page.mouse.move(*xy[0])
        self.page.mouse.down()
        for x, y in xy[1:]:
            self.page.mouse.move(x, y, steps=3)
        self.page.mouse.up()

    def answered(self) -> dict[str, Any]:
        """Wait for the answer to the last input, then read it off the page (and the API body it
        rendered, the last one received)."""
        expect(self.page.locator("#answer")).to_have_attribute("data-state", "done", timeout=20_000)
        answer = self.page.locator("#answer")
        read: dict[str, Any] = {
            "body": self.answers[-1].json(),
            "label": int(self.page.locator("#label").inner_text()),
            "ood": answer.get_attribute("data-ood") == "true",
        }
        for name in ("predictive_entropy", "expected_entropy", "mutual_information"):
            shown = self.page.locator(f"#{name.replace('_', '-')}").get_attribute("data-value")
            read[name] = float(shown or "nan")
        return read

    def problem(self, kind: str) -> str:
        problem = self.page.locator(f"#problem[data-kind={kind}]")
        expect(problem).to_be_visible()
        return problem.inner_text()


@pytest.fixture
def demo(browser: Browser, page_server: str) -> Iterator[DemoPage]:
    context = browser.new_context(viewport=DESKTOP)
    yield DemoPage(context.new_page(), page_server)
    context.close()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def three() -> list[list[tuple[float, float]]]:
    """A clear 3 in two strokes: an upper bowl, then a lower one."""

    def arc(cx: float, cy: float, r: float, start: float, end: float) -> list[tuple[float, float]]:
        steps = 14
        angles = [math.radians(start + (end - start) * i / steps) for i in range(steps + 1)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]

    return [arc(0.5, 0.31, 0.16, -160, 90), arc(0.5, 0.65, 0.19, -90, 150)]


def scribble(seed: int = 0) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(0.1 + 0.8 * rng.random(), 0.1 + 0.8 * rng.random()) for _ in range(14)]


def check_rendering(demo: DemoPage, answer: dict[str, Any]) -> None:
    """The chart, the MC view, the 28x28 preview and the uncertainty fields show the API's answer."""
    prediction = answer["body"]["predictions"][0]
    bars = demo.page.locator("#bars rect.bar")
    expect(bars).to_have_count(10)
    shown = [float(bars.nth(c).get_attribute("data-probability") or "nan") for c in range(10)]
    np.testing.assert_allclose(shown, prediction["probabilities"], atol=1e-9)
    expect(demo.page.locator("#bars rect.bar.predicted")).to_have_attribute(
        "data-class", str(prediction["label"])
    )
    samples = answer["body"]["samples"]
    assert len(prediction["sample_probabilities"]) == samples
    expect(demo.page.locator("#spread circle.dot")).to_have_count(samples * 10)
    expect(demo.page.locator("#spread line.mean")).to_have_count(10)

    seen = np.array(prediction["input"])
    assert seen.shape == (28, 28) and seen.min() >= 0 and seen.max() <= 1 and seen.sum() > 10
    preview = demo.page.evaluate(
        "() => Array.from(document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data)"
    )
    red = np.array(preview).reshape(28, 28, 4)[..., 0]
    np.testing.assert_array_equal(red, np.round(seen * 255))

    for name in ("predictive_entropy", "expected_entropy", "mutual_information"):
        assert answer[name] == pytest.approx(prediction[name], abs=1e-12)
    assert answer["label"] == prediction["label"]
    assert answer["ood"] == prediction["ood"]
    expect(demo.page.locator("#ood-banner")).to_be_visible(visible=prediction["ood"])
    assert demo.errors == []


def test_a_drawn_three_is_a_three_the_model_is_sure_of(demo, metadata, tmp_path):
    """Drawn without the key first: the page says 401 plainly; with the key, the answer."""
    threshold = metadata["uncertainty"]["ood_threshold"]
    for points in three():
        demo.stroke(points)
    assert "401" in demo.problem("unauthorized")
    expect(demo.page.locator("#answer")).to_have_attribute("data-state", "error")

    demo.page.get_by_label("API key").fill(API_KEY)
    demo.page.get_by_label("API key").press("Enter")
    answer = demo.answered()
    check_rendering(demo, answer)
    MEASURED["drawn 3"] = answer["mutual_information"]
    assert answer["label"] == 3
    assert not answer["ood"]
    assert answer["mutual_information"] < threshold
    assert answer["body"]["samples"] == metadata["uncertainty"]["samples_default"]
    expect(demo.page.locator("#verdict-note")).to_have_attribute("data-kind", "sure")
    expect(demo.page.locator("#problem")).to_be_hidden()

    # the key lived in the tab's memory only
    storage = demo.page.evaluate(
        "() => [localStorage.length, sessionStorage.length, document.cookie, window.name]"
    )
    assert storage == [0, 0, "", ""]
    demo.page.screenshot(path=tmp_path / "page-desktop.png", full_page=True)
    if target := os.environ.get("DROPSERVE_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "page-desktop.png", Path(target) / "page.png")

    # clearing empties the pad and the answer
    demo.page.get_by_role("button", name="Clear").click()
    expect(demo.page.locator("#result")).to_be_hidden()
    expect(demo.page.locator("#answer")).to_have_attribute("data-state", "empty")


def test_scribbled_noise_is_less_certain_than_a_three(demo, metadata):
    """MC dropout's mutual information rises on a scribble, but not reliably past the OOD threshold
    (on the seed recipe's models, a few scribbles in ten cross it), so the test asserts the rise."""
    demo.page.get_by_label("API key").fill(API_KEY)
    for points in three():
        demo.stroke(points)
    clear_three = demo.answered()
    demo.page.get_by_role("button", name="Clear").click()
    demo.stroke(scribble())
    noise = demo.answered()
    check_rendering(demo, noise)
    MEASURED["scribble"] = noise["mutual_information"]
    MEASURED["scribble ood"] = float(noise["ood"])
    assert noise["mutual_information"] > 3 * clear_three["mutual_information"]
    assert noise["predictive_entropy"] > 3 * clear_three["predictive_entropy"]


def test_an_uploaded_mnist_digit_by_keyboard(demo, metadata):
    """Keyboard only: the upload button opens the file chooser, the slider's arrow key asks again."""
    mnist = load_dataset("mnist")
    demo.page.get_by_label("API key").fill(API_KEY)
    demo.page.get_by_role("button", name="Upload an image…").focus()
    with demo.page.expect_file_chooser() as chooser:
        demo.page.keyboard.press("Enter")
    digit = png(mnist.x_test[MNIST_INDEX])
    chooser.value.set_files({"name": "mnist-test-0.png", "mimeType": "image/png", "buffer": digit})
    answer = demo.answered()
    check_rendering(demo, answer)
    MEASURED["mnist test digit"] = answer["mutual_information"]
    assert answer["label"] == int(mnist.y_test[MNIST_INDEX])
    assert not answer["ood"]
    np.testing.assert_allclose(answer["body"]["predictions"][0]["input"], mnist.x_test[MNIST_INDEX] / 255)

    slider = demo.page.get_by_label("Samples (T)")
    before = int(slider.input_value())
    slider.focus()
    demo.page.keyboard.press("ArrowRight")
    answer = demo.answered()
    assert answer["body"]["samples"] == before + 10
    expect(demo.page.locator("#spread circle.dot")).to_have_count((before + 10) * 10)


def test_a_dropped_fashion_image_is_out_of_distribution(demo, metadata):
    fashion = load_dataset("fashion-mnist")
    threshold = metadata["uncertainty"]["ood_threshold"]
    demo.page.get_by_label("API key").fill(API_KEY)
    data = base64.b64encode(png(fashion.x_test[FASHION_INDEX])).decode()
    transfer = demo.page.evaluate_handle(
        """b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "trouser.png", {type: "image/png"}));
            return transfer;
        }""",
        data,
    )
    demo.page.locator("#drop-zone").dispatch_event("drop", {"dataTransfer": transfer})
    answer = demo.answered()
    check_rendering(demo, answer)
    MEASURED["fashion image"] = answer["mutual_information"]
    assert answer["ood"]
    assert answer["mutual_information"] > threshold
    banner = demo.page.locator("#ood-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Out of distribution — do not trust this answer")
    expect(demo.page.locator("#answer")).to_have_class("panel answer-panel ood")


def test_phone_sized_viewport(browser, page_server, tmp_path):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    demo = DemoPage(context.new_page(), page_server)
    demo.page.get_by_label("API key").fill(API_KEY)
    fashion = load_dataset("fashion-mnist")
    demo.page.locator("#file").set_input_files(
        {"name": "trouser.png", "mimeType": "image/png", "buffer": png(fashion.x_test[FASHION_INDEX])}
    )
    answer = demo.answered()
    assert answer["ood"]
    # nothing wider than the phone: no sideways scrolling
    assert demo.page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    demo.page.screenshot(path=tmp_path / "page-phone.png", full_page=True)
    assert demo.errors == []
    context.close()


def test_the_page_says_when_the_service_is_overloaded_and_tries_again(demo):
    """A 503 with Retry-After, as the engine answers under overload (the envelope and header the
    service sends), then the page retries by itself once the wait is over."""
    envelope = '{"error": {"code": "unavailable", "message": "server is at capacity; retry shortly"}}'
    demo.page.route(
        "**/uncertainty*",
        lambda route: route.fulfill(
            status=503, headers={"Retry-After": "1"}, content_type="application/json", body=envelope
        ),
        times=1,
    )
    demo.page.get_by_label("API key").fill(API_KEY)
    demo.stroke([point for bowl in three() for point in bowl])  # one stroke: one request, refused
    text = demo.problem("unavailable")
    assert "503" in text and "at capacity" in text and "1 s" in text
    assert demo.answered()["label"] == 3  # the retry, after Retry-After, reached the real server
    expect(demo.page.locator("#problem")).to_be_hidden()


def test_the_page_says_when_no_model_is_loaded(browser, page_server):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.route(
        "**/v1/models",
        lambda route: route.fulfill(json={"default_model": "mnist-mlp", "models": []}),
        times=1,
    )
    page.goto(page_server)
    expect(page.locator("#problem[data-kind=unavailable]")).to_contain_text("not ready")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=10_000)  # checked again
    expect(page.locator("#problem")).to_be_hidden()
    context.close()


def test_headers_labels_and_the_model_card(demo, metadata, page_server):
    headers = demo.document.headers if demo.document else {}
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"

    for label in ("Model", "Version", "Samples (T)", "API key"):
        expect(demo.page.get_by_label(label, exact=False).first).to_be_visible()
    focused = []
    for _ in range(8):
        demo.page.keyboard.press("Tab")
        focused.append(demo.page.evaluate("() => document.activeElement.id"))
    assert {"model", "version", "samples", "api-key", "card-link", "clear", "upload"} <= set(focused)

    metrics = metadata["metrics"]
    expect(demo.page.locator("#card-accuracy")).to_have_text(f"{metrics['test_accuracy_mc'] * 100:.2f}%")
    expect(demo.page.locator("#card-ece")).to_have_text(f"{metrics['test_ece_mc'] * 100:.2f}%")
    expect(demo.page.locator("#card-auroc")).to_contain_text(f"{metrics['ood_auroc_mutual_information']:.3f}")
    link = demo.page.locator("#card-link")
    card = demo.page.request.get(f"{page_server}{link.get_attribute('href')}")
    assert card.ok and card.text().startswith("# Model card")
    plot = demo.page.request.get(f"{page_server}/v1/models/mnist-mlp/versions/1/card/reliability.png")
    assert plot.ok and plot.body().startswith(b"\x89PNG")
    assert demo.errors == []

"""The page at GET / (its files, headers and the API it leans on: return_input, the model card).
What it does in a real browser is tests/integration/test_page_browser.py."""

import base64
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from service.http.routes.page import ASSETS
from tests.service.conftest import png_bytes
from tests.service.test_api import assert_error

PAGE_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def csp_directives(header: str) -> dict[str, str]:
    return {part.split()[0]: " ".join(part.split()[1:]) for part in header.split(";") if part.strip()}


def test_page_is_served_with_security_headers(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    for header, value in PAGE_HEADERS.items():
        assert response.headers[header] == value
    csp = csp_directives(response.headers["content-security-policy"])
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"  # no 'unsafe-inline', no other origin
    assert csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert "<canvas" in response.text


@pytest.mark.parametrize("name", sorted(set(ASSETS) - {"index.html"}))
def test_static_files_are_served_with_their_types(client, name):
    response = client.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == ASSETS[name]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content


@pytest.mark.parametrize("path", ["/static/../settings.py", "/static/%2e%2e%2fapp.py", "/static/missing.js"])
def test_only_the_page_files_are_served(client, path):
    assert client.get(path).status_code == 404


class InlineFinder(HTMLParser):
    """What CSP (script-src 'self', style-src 'self') would refuse to run."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.labelled: set[str] = set()
        self.controls: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in attributes:
            if name.startswith("on") or name == "style":
                self.problems.append(f"<{tag} {name}=...>")
        if tag == "script" and not attributes.get("src"):
            self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("inline <style>")
        if tag == "label" and attributes.get("for"):
            self.labelled.add(str(attributes["for"]))
        if tag in ("input", "select", "textarea", "button"):
            self.controls.append((tag, attributes))


def test_page_has_no_inline_script_or_style_and_every_control_is_labelled(client):
    finder = InlineFinder()
    finder.feed(client.get("/").text)
    assert finder.problems == []
    for tag, attributes in finder.controls:
        if tag == "button":
            continue  # named by their text
        named = attributes.get("id") in finder.labelled or attributes.get("aria-label")
        assert named, f"<{tag} id={attributes.get('id')}> has no label"


def test_script_never_stores_the_key():
    from service.http.routes.page import asset

    code = "\n".join(line.split("//")[0] for line in asset("app.js").decode().splitlines())  # no comments
    for storage in ("localStorage", "sessionStorage", "cookie", "indexedDB"):
        assert storage not in code
    assert re.search(r"Authorization = `Bearer \$\{key\}`", code)


# ---- return_input ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/predict", "/v1/uncertainty?samples=5"])
def test_return_input_gives_the_preprocessed_28x28_pixels(client, route):
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 13:16] = 255
    body = {"instances": [{"b64": base64.b64encode(png_bytes(pixels)).decode()}], "return_input": True}
    prediction = client.post(route, json=body).json()["predictions"][0]
    seen = np.array(prediction["input"])
    assert seen.shape == (28, 28)
    assert seen.min() >= 0.0 and seen.max() <= 1.0
    np.testing.assert_allclose(seen, pixels / 255, atol=1e-6)  # a 28x28 image is used as it is


def test_return_input_on_image_bodies_is_a_query_parameter(client, digit_png):
    files = {"file": ("digit.png", digit_png, "image/png")}
    with_input = client.post("/v1/uncertainty?samples=5&return_input=true", files=files).json()
    without = client.post("/v1/uncertainty?samples=5", files=files).json()
    assert np.array(with_input["predictions"][0]["input"]).shape == (28, 28)
    assert "input" not in without["predictions"][0]


def test_return_input_after_the_mnist_recipe_is_centred_in_28x28(client):
    paper = np.full((200, 120), 255, dtype=np.uint8)  # black ink on white paper, not 28x28
    paper[20:180, 50:70] = 0
    response = client.post(
        "/v1/predict?return_input=1", content=png_bytes(paper), headers={"content-type": "image/png"}
    )
    seen = np.array(response.json()["predictions"][0]["input"])
    assert seen.shape == (28, 28)
    rows = np.nonzero(seen > 0.5)[0]
    assert rows.max() - rows.min() + 1 <= 20  # fitted into the 20x20 box, light ink on dark
    assert abs(np.average(np.arange(28), weights=seen.sum(1)) - 13.5) < 1.5


@pytest.mark.parametrize("value", ["yes", 2, None])
def test_return_input_must_be_a_boolean(client, value):
    body = {"instances": [[0.0] * 784], "return_input": value}
    assert_error(client.post("/v1/predict", json=body), 422, "invalid_value")


def test_return_input_is_in_the_openapi_document(client):
    document = client.get("/openapi.json").json()
    body = document["paths"]["/v1/uncertainty"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["return_input"]["type"] == "boolean"


# ---- the model card ----------------------------------------------------------------------------


@pytest.fixture
def card_version(repository):
    version = repository / "mnist-mlp" / "1"
    (version / "card.md").write_text("# Model card: mnist-mlp\n\n![curves](training_curves.png)\n")
    (version / "training_curves.png").write_bytes(png_bytes(np.zeros((4, 4))))
    return version


def test_card_and_its_plots_are_served(client, card_version):
    card = client.get("/v1/models/mnist-mlp/versions/1/card")
    assert card.status_code == 200
    assert card.headers["content-type"] == "text/markdown; charset=utf-8"
    assert card.headers["x-content-type-options"] == "nosniff"
    assert card.text.startswith("# Model card")
    assert client.get("/v1/models/mnist-mlp/versions/1/card/card.md").text == card.text
    plot = client.get("/v1/models/mnist-mlp/versions/1/card/training_curves.png")
    assert plot.status_code == 200
    assert plot.headers["content-type"] == "image/png"
    assert plot.content == (card_version / "training_curves.png").read_bytes()


@pytest.mark.parametrize(
    "file",
    [
        "model.json",  # in the folder, but not a card file
        "model.safetensors",
        "missing.png",
        "..%2F..%2Fcard.md",
        "..%2Fsecret.png",
        ".hidden.png",
    ],
)
def test_card_serves_nothing_else(client, card_version, file):
    (card_version.parent / "secret.png").write_bytes(b"not for you")  # outside the version folder
    response = client.get(f"/v1/models/mnist-mlp/versions/1/card/{file}")
    assert response.status_code == 404
    assert b"not for you" not in response.content


def test_card_traversal_through_the_path_is_refused(client, card_version):
    (card_version.parent / "secret.png").write_bytes(b"not for you")
    card = "/v1/models/mnist-mlp/versions/1/card"
    for path in (f"{card}/../secret.png", f"{card}/%2e%2e/secret.png", f"{card}/..", f"{card}/../../2/card"):
        response = client.get(path)
        assert b"not for you" not in response.content


def test_card_of_an_unknown_version_is_404(client, card_version):
    assert_error(client.get("/v1/models/mnist-mlp/versions/9/card"), 404, "not_found")
    assert_error(client.get("/v1/models/mnist-mlp/versions/1/card/nothing.png"), 404, "not_found")

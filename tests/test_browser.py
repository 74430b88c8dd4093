"""The demo page at `/` in a real headless Chromium (Debian's), against the real server.

Each test saves a screenshot under test-artifacts/browser/ and prints its path.
"""

import json
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, Route, expect, sync_playwright

from .helpers import ROOT, start_server, tiny_model

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
API_KEY = "demo-key"
WAIT_MS = 15_000


def stop(process) -> None:
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def base(served_checkpoint):
    process, url = start_server("--model", str(served_checkpoint))
    yield url
    stop(process)


@pytest.fixture(scope="module")
def second_checkpoint(tmp_path_factory, tokenizer):
    from lyricist.model import save_checkpoint

    model = tiny_model(tokenizer.vocab_size, cell="gru", embedding_size=24, hidden_size=40, seed=5)
    return save_checkpoint(tmp_path_factory.mktemp("browser") / "tiny-gru", model, tokenizer, {"corpus": "none"})


@pytest.fixture(scope="module")
def keyed_two_model_base(served_checkpoint, second_checkpoint):
    process, url = start_server("--model", str(served_checkpoint), "--model", str(second_checkpoint),
                                env={"LYRICIST_API_KEYS": API_KEY})
    yield url
    stop(process)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    assert Path(CHROMIUM).exists(), f"the browser tests need Chromium at {CHROMIUM}: apt-get install chromium"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        yield context
        context.close()


@pytest.fixture
def page(browser):
    """A fresh tab that records every URL it asks for and fails the test on an uncaught script error."""
    tab = browser.new_page()
    tab.requested = []
    tab.on("request", lambda request: tab.requested.append(request.url))
    script_errors = []
    tab.on("pageerror", lambda error: script_errors.append(error))
    yield tab
    tab.close()
    assert not script_errors, script_errors


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")
    return path


def api(base: str, path: str, body: dict, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{base}{path}", json=body, headers=headers, timeout=30)


def chart(page: Page) -> list[list]:
    return page.eval_on_selector_all("#chart li", "items => items.map(li => [li.dataset.text, Number(li.dataset.prob)])")


def wait_for_chart_of(page: Page, prompt: str) -> None:
    page.wait_for_function("prompt => { const c = document.getElementById('chart');"
                           " return c.dataset.prompt === prompt && c.getAttribute('aria-busy') === 'false'; }",
                           arg=prompt, timeout=WAIT_MS)


def wait_until_generated(page: Page) -> None:
    expect(page.locator("#generate")).to_have_text("Generate", timeout=WAIT_MS)
    expect(page.locator("#reuse-seed")).to_be_visible(timeout=WAIT_MS)


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    wait_for_chart_of(page, page.input_value("#prompt"))


def predict_prompt(request) -> str | None:
    if not request.url.endswith("/v1/predict"):
        return None
    return json.loads(request.post_data)["prompt"]


def test_chart_shows_the_distribution_of_the_last_prompt_even_when_an_older_answer_comes_late(page, base):
    first, final = "ROMEO", "ROMEO:\nBut soft"
    held: list[Route] = []

    def hold_the_first_prompt(route: Route) -> None:
        if predict_prompt(route.request) == first:
            held.append(route)  # answered only after the newer prompt's answer is on screen
        else:
            route.continue_()

    page.route("**/v1/predict", hold_the_first_prompt)
    open_page(page, base)
    expect(page.locator("#model-picker")).to_be_hidden()  # one model: nothing to pick
    page.click("#prompt")
    page.keyboard.press("Control+A")
    with page.expect_request(lambda r: predict_prompt(r) == first):
        page.keyboard.type(first)
    with page.expect_request(lambda r: predict_prompt(r) == final):
        page.keyboard.type(final[len(first):])
    wait_for_chart_of(page, final)

    (late,) = held
    late.continue_()  # the stale answer is let through only now, after the newer one is on screen
    assert late.request.failure == "net::ERR_ABORTED"  # the page gave up on it when it sent the newer prompt
    expected = api(base, "/v1/predict", {"prompt": final, "top_k": 10, "unit": "word", "temperature": 0.8}).json()
    assert len(expected["distribution"]) == 10
    assert chart(page) == [[c["text"], c["prob"]] for c in expected["distribution"]]
    assert page.get_attribute("#chart", "data-prompt") == final
    rows = page.get_by_role("list", name="Next word").get_by_role("listitem")
    expect(rows).to_have_count(10)  # the chart reads as a list, each bar a button named by its word and share
    first_bar = rows.first.get_by_role("button")
    name = first_bar.get_attribute("aria-label")
    assert first_bar.text_content().startswith(name.split(":")[0]) and first_bar.locator(".value").text_content() in name
    screenshot(page, "chart")


def generated_text(page: Page) -> str:
    return page.text_content("#completion")


def record_completion_states(page: Page) -> None:
    """Keep every distinct text the completion shows, as the page renders it."""
    page.evaluate("""() => {
        window.completionStates = [];
        const completion = document.getElementById('completion');
        new MutationObserver(() => {
            const text = completion.textContent;
            if (text !== window.completionStates.at(-1)) window.completionStates.push(text);
        }).observe(completion, {childList: true, characterData: true, subtree: true});
    }""")


def test_generation_streams_in_and_ends_with_the_plain_answer_for_the_seed_shown(page, base):
    open_page(page, base)
    page.fill("#prompt", "ROMEO:\n")
    page.fill("#max_new_tokens", "120")
    record_completion_states(page)
    page.click("#generate")
    wait_until_generated(page)

    text, seed = generated_text(page), int(page.get_attribute("#reuse-seed", "data-seed"))
    states = page.evaluate("window.completionStates")
    partial = [state for state in states[:-1] if state]
    assert len(partial) >= 2, states  # it was seen growing, not only when done
    assert all(text.startswith(state) for state in partial)
    plain = api(base, "/v1/generate", {"prompt": "ROMEO:\n", "max_new_tokens": 120, "temperature": 0.8,
                                       "seed": seed}).json()
    assert text == plain["text"] and len(text) > 0
    assert page.text_content("#output-prompt") == "ROMEO:\n"
    assert str(seed) in page.text_content("#generate-status")
    screenshot(page, "generate")


def test_the_seed_shown_replays_the_same_text(page, base):
    open_page(page, base)
    page.fill("#prompt", "JULIET:\n")
    page.fill("#max_new_tokens", "40")
    page.click("#generate")
    wait_until_generated(page)
    first_text, seed = generated_text(page), page.get_attribute("#reuse-seed", "data-seed")
    assert seed in page.text_content("#reuse-seed")

    page.click("#reuse-seed")
    assert page.input_value("#seed") == seed
    page.click("#generate")
    wait_until_generated(page)
    assert generated_text(page) == first_text
    another_seed = api(base, "/v1/generate", {"prompt": "JULIET:\n", "max_new_tokens": 40, "temperature": 0.8,
                                              "seed": int(seed) + 1}).json()
    assert another_seed["text"] != first_text  # the seed, not luck, made the two texts equal
    screenshot(page, "seed-replay")


def test_a_value_out_of_range_shows_the_servers_message(page, base):
    open_page(page, base)
    page.fill("#temperature", "9")
    assert page.get_attribute("#temperature", "aria-invalid") == "true"
    page.click("#generate")

    generate_error = api(base, "/v1/generate", {"prompt": page.input_value("#prompt"), "max_new_tokens": 80,
                                                "temperature": 9, "stream": True})
    predict_error = api(base, "/v1/predict", {"prompt": page.input_value("#prompt"), "top_k": 10, "unit": "word",
                                              "temperature": 9})
    assert generate_error.status_code == predict_error.status_code == 400
    expect(page.locator("#generate-error")).to_have_text(generate_error.json()["error"]["message"])
    expect(page.locator("#predict-error")).to_have_text(predict_error.json()["error"]["message"])
    assert "temperature" in page.text_content("#generate-error")
    assert page.get_attribute("#generate-error", "role") == "alert"
    expect(page.locator("#chart li")).to_have_count(0)  # no bars left over from another temperature
    expect(page.locator("#prompt")).to_be_visible()
    screenshot(page, "error")

    page.fill("#temperature", "0.8")  # a good value clears the messages
    page.click("#generate")
    wait_until_generated(page)
    expect(page.locator("#generate-error")).to_be_hidden()
    expect(page.locator("#predict-error")).to_be_hidden()


def focused(page: Page) -> dict:
    return page.evaluate("""() => { const e = document.activeElement, style = getComputedStyle(e);
        return {id: e.id, tag: e.tagName, text: e.closest('li')?.dataset.text ?? null,
                outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0}; }""")


def test_keyboard_alone_drives_the_page(page, base):
    open_page(page, base)
    unlabelled = page.eval_on_selector_all("input, select, textarea", "controls => controls"
                                           ".filter(c => c.labels.length === 0).map(c => c.id || c.outerHTML)")
    assert not unlabelled
    page.keyboard.press("Tab")
    assert focused(page) == {"id": "prompt", "tag": "TEXTAREA", "text": None, "outline": True}
    page.keyboard.press("Control+A")
    page.keyboard.type("ROMEO:")
    wait_for_chart_of(page, "ROMEO:")

    page.keyboard.press("Control+Enter")  # generates from anywhere on the page
    wait_until_generated(page)
    assert generated_text(page)

    stops = []
    for _ in range(3):
        page.keyboard.press("Tab")
        stops.append(focused(page))
    assert [stop["id"] for stop in stops[:2]] == ["generate", "unit-word"]
    first_bar = stops[2]
    assert first_bar["tag"] == "BUTTON" and first_bar["text"] == chart(page)[0][0]
    assert all(stop["outline"] for stop in stops[1:]), stops  # the focus is always visible
    page.keyboard.press("Enter")  # a bar adds its word to the prompt
    prompt = page.input_value("#prompt")
    assert prompt.startswith("ROMEO:") and prompt.endswith(first_bar["text"]) and len(prompt) > len("ROMEO:")
    wait_for_chart_of(page, prompt)
    assert focused(page)["text"] == chart(page)[0][0]  # the focus stays on the first bar as the chart changes
    screenshot(page, "keyboard")

    page.fill("#max_new_tokens", "1024")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("() => document.getElementById('completion').textContent.length > 0", timeout=WAIT_MS)
    page.keyboard.press("Escape")  # stops the generation
    expect(page.locator("#generate-status")).to_contain_text("Stopped after", timeout=WAIT_MS)
    expect(page.locator("#generate")).to_have_text("Generate")


def test_narrow_screen_has_no_horizontal_scroll(page, base):
    page.set_viewport_size({"width": 360, "height": 740})
    open_page(page, base)
    page.fill("#prompt", "Anunbrokenwordmuchwiderthananyphonescreencouldeverholdonasingleline" * 2 + "\n")
    page.click("#generate")
    wait_until_generated(page)
    wait_for_chart_of(page, page.input_value("#prompt"))
    widths = page.evaluate("({page: document.documentElement.scrollWidth, body: document.body.scrollWidth,"
                           "  view: document.documentElement.clientWidth})")
    assert widths["view"] == 360 and widths["page"] <= 360 and widths["body"] <= 360, widths
    bar = page.locator("#chart li .bar").first.bounding_box()
    assert bar["x"] >= 0 and bar["x"] + bar["width"] <= 360 and bar["width"] > 0
    screenshot(page, "narrow")


def test_the_page_asks_nothing_of_any_other_origin(page, base):
    open_page(page, base)
    page.fill("#prompt", "KING:\n")
    page.click("#generate")
    wait_until_generated(page)
    page.click("#reuse-seed")
    page.click("#chart li button")
    paths = {urlsplit(url).path for url in page.requested}
    assert {"/", "/static/app.js", "/static/style.css", "/v1/models", "/v1/predict", "/v1/generate"} <= paths
    origin = urlsplit(base)
    foreign = [url for url in page.requested if urlsplit(url)[:2] != origin[:2]]
    assert not foreign
    screenshot(page, "own-origin-only")


def test_api_key_then_model_picker_with_two_models(page, keyed_two_model_base):
    base = keyed_two_model_base
    page.goto(base)
    refusal = httpx.get(f"{base}/v1/models").json()["error"]["message"]
    expect(page.locator("#models-error")).to_have_text(refusal)
    expect(page.locator("#api-key")).to_be_visible()  # a 401 opens the key field
    expect(page.locator("#model-picker")).to_be_hidden()

    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Tab")
    expect(page.locator("#model-picker")).to_be_visible()
    expect(page.locator("#models-error")).to_be_hidden()
    assert page.eval_on_selector_all("#model option", "options => options.map(o => o.value)") == \
        ["tiny-lstm", "tiny-gru"]
    prompt = page.input_value("#prompt")
    wait_for_chart_of(page, prompt)

    page.select_option("#model", "tiny-gru")
    expect(page.locator("#model-facts")).to_contain_text("tiny-gru: GRU")
    expected = api(base, "/v1/predict", {"prompt": prompt, "top_k": 10, "unit": "word", "temperature": 0.8,
                                         "model": "tiny-gru"}, key=API_KEY).json()
    page.wait_for_function("want => document.querySelector('#chart li')?.dataset.prob === want",
                           arg=str(expected["distribution"][0]["prob"]), timeout=WAIT_MS)
    assert chart(page) == [[c["text"], c["prob"]] for c in expected["distribution"]]

    page.fill("#seed", "7")
    page.fill("#max_new_tokens", "30")
    page.click("#generate")
    wait_until_generated(page)
    plain = api(base, "/v1/generate", {"prompt": prompt, "max_new_tokens": 30, "temperature": 0.8, "seed": 7,
                                       "model": "tiny-gru"}, key=API_KEY).json()
    default_model = api(base, "/v1/generate", {"prompt": prompt, "max_new_tokens": 30, "temperature": 0.8,
                                               "seed": 7}, key=API_KEY).json()
    assert generated_text(page) == plain["text"] != default_model["text"]
    screenshot(page, "model-picker")

"""The demo page at `/` in a real headless Chromium (Debian's), against the real server.

The page opens in songwriter mode (lyrics, line counts, filtered next words, next lines); the free
writing tests switch to "Free writing" first. Each test saves a screenshot under
test-artifacts/browser/ and prints its path.
"""

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, Route, expect, sync_playwright

from .helpers import ROOT, start_server, tiny_model

# Debian's Chromium (`apt-get install chromium`), or the one LYRICIST_CHROMIUM names.
CHROMIUM = os.environ.get("LYRICIST_CHROMIUM") or shutil.which("chromium") or ""
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
API_KEY = "demo-key"
WAIT_MS = 15_000
LINES_WAIT_MS = 120_000  # a constrained line search on a busy machine


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
    if not (CHROMIUM and Path(CHROMIUM).exists()):
        where = f"LYRICIST_CHROMIUM={CHROMIUM!r} does not exist" if CHROMIUM else "no chromium on PATH"
        missing = f"the browser tests need Chromium ({where}): apt-get install chromium, or set LYRICIST_CHROMIUM"
        if os.environ.get("CI") == "true":  # CI installs it (.ci/run): its absence there is a failure
            pytest.fail(missing)
        pytest.skip(missing)
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


def free_writing(page: Page) -> None:
    """Switch the page to its free writing mode (prompt, chart, generation)."""
    page.click("label[for=mode-free]")
    expect(page.locator("#prompt")).to_be_visible()


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    free_writing(page)
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
    page.goto(base)
    wait_for_chart_of(page, page.input_value("#lyrics"))  # songwriter mode: the chart continues the lyrics
    unlabelled = page.eval_on_selector_all("input, select, textarea", "controls => controls"
                                           ".filter(c => c.labels.length === 0).map(c => c.id || c.outerHTML)")
    assert not unlabelled
    page.keyboard.press("Tab")
    assert focused(page)["id"] == "mode-songwriter"  # the mode switch comes first; arrows change the mode
    page.keyboard.press("ArrowRight")
    expect(page.locator("#prompt")).to_be_visible()
    wait_for_chart_of(page, page.input_value("#prompt"))
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
    page.click("label[for=mode-songwriter]")
    with page.expect_response("**/v1/lines", timeout=LINES_WAIT_MS):
        page.click("#suggest-lines")
    paths = {urlsplit(url).path for url in page.requested}
    assert {"/", "/static/app.js", "/static/style.css", "/v1/models", "/v1/predict", "/v1/generate",
            "/v1/analyze", "/v1/lines"} <= paths
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
    free_writing(page)
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


# -- songwriter mode ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def songs_base():
    """`lyricist serve` as shipped: songs-lstm (the default model), then shakespeare-lstm."""
    process, url = start_server()
    yield url
    stop(process)


def percent(prob: float) -> str:
    """A probability as the page writes it (JavaScript's toFixed(1) from 10%, else toPrecision(2))."""
    value = prob * 100
    return f"{value:.1f}%" if value >= 10 else f"{value:#.2g}".rstrip(".") + "%"


def lyric_rows(page: Page) -> list[dict]:
    """Each counted line beside the editor: its line number in the lyrics and what it shows."""
    return page.eval_on_selector_all("#lyrics-lines .line[data-syllables]", """rows => rows.map(row => ({
        line: Number(row.dataset.line), syllables: Number(row.dataset.syllables), rhyme: row.dataset.rhyme,
        count: row.querySelector('.count').textContent, letter: row.querySelector('.letter').textContent}))""")


def wait_for_counts_of(page: Page, text: str) -> None:
    page.wait_for_function("text => { const l = document.getElementById('lyrics-lines');"
                           " return l.dataset.text === text && l.getAttribute('aria-busy') === 'false'; }",
                           arg=text, timeout=WAIT_MS)


def wait_for_filtered_chart(page: Page, prompt: str, constraints: dict) -> None:
    """The chart drawn for `prompt` under `constraints` (in the order the page writes them)."""
    want = json.dumps(constraints, separators=(",", ":"), ensure_ascii=False)
    page.wait_for_function("([prompt, want]) => { const c = document.getElementById('chart');"
                           " return c.dataset.prompt === prompt && c.dataset.constraints === want"
                           " && c.getAttribute('aria-busy') === 'false'; }", arg=[prompt, want], timeout=WAIT_MS)


def expected_rows(text: str, analysis: dict) -> list[dict]:
    """What the editor should show beside `text`, from /v1/analyze's answer for it."""
    counted = [line for stanza in analysis["stanzas"] for line in stanza["lines"]]
    written = [index for index, line in enumerate(text.split("\n")) if line.strip()]
    assert len(counted) == len(written), (counted, written)
    return [{"line": index, "syllables": line["syllables"], "rhyme": line["rhyme"],
             "count": ("≈" if line["unknown_words"] else "") + str(line["syllables"]),
             "letter": "x" if line["rhyme"] == "-" else line["rhyme"]}  # x: an unrhymed line, as in xAxA
            for index, line in zip(written, counted)]


def analyze_text(request) -> str | None:
    if not request.url.endswith("/v1/analyze"):
        return None
    return json.loads(request.post_data)["text"]


LYRICS = ("Twinkle, twinkle, little star,\nHow I wonder what you are.\nUp above the world so high,\n"
          "Like a diamond in the sky.\n\nThe river runs beside the road,\nAnd I have carried all my load,\n"
          "While zorblaxes sing")


def test_songwriter_mode_counts_each_line_as_analyze_does(page, songs_base):
    first = LYRICS[:LYRICS.index("\n\n")]
    held: list[Route] = []

    def hold_the_first_stanza(route: Route) -> None:
        if analyze_text(route.request) == first:
            held.append(route)  # answered only after the whole text's counts are on screen
        else:
            route.continue_()

    page.route("**/v1/analyze", hold_the_first_stanza)
    page.goto(songs_base)
    expect(page.locator("#mode-songwriter")).to_be_checked()  # the page opens for songwriters ...
    expect(page.locator("#lyrics")).to_be_visible()
    expect(page.locator("#prompt")).to_be_hidden()
    expect(page.locator("#model-picker")).to_be_visible()  # ... on the default model, the songs model
    assert page.eval_on_selector_all("#model option", "options => options.map(o => o.value)") == \
        ["songs-lstm", "shakespeare-lstm"]
    assert page.input_value("#model") == "songs-lstm"

    page.click("#lyrics")
    page.keyboard.press("Control+A")
    with page.expect_request(lambda r: analyze_text(r) == first):
        page.keyboard.type(first)
    with page.expect_request(lambda r: analyze_text(r) == LYRICS):
        page.keyboard.type(LYRICS[len(first):])
    assert page.input_value("#lyrics") == LYRICS
    wait_for_counts_of(page, LYRICS)
    (late,) = held
    late.continue_()  # the stale answer comes only now, after the newer one is on screen
    assert late.request.failure == "net::ERR_ABORTED"

    analysis = api(songs_base, "/v1/analyze", {"text": LYRICS}).json()
    assert analysis["model"] == "songs-lstm"
    assert lyric_rows(page) == expected_rows(LYRICS, analysis)
    unknown = [word for stanza in analysis["stanzas"] for line in stanza["lines"] for word in line["unknown_words"]]
    assert unknown  # "zorblaxes" is no dictionary word: its count is estimated, and the word is marked
    assert [word.lower() for word in page.eval_on_selector_all("#lyrics-lines mark.unknown",
                                                               "marks => marks.map(m => m.textContent)")] == \
        [word.lower() for word in unknown]
    summary = page.text_content("#lyrics-summary")
    for stanza in analysis["stanzas"]:
        assert stanza["scheme"].replace("-", "x") in summary
    for word in unknown:
        assert word in summary
    for stanza in analysis["stanzas"]:  # each stanza's meter, "free" where none fits
        meter = stanza["meter"]
        assert (f"{meter['name']} ({round(meter['fit'] * 100)}%)" if meter else "free") in summary
    counted = [line for stanza in analysis["stanzas"] for line in stanza["lines"]]
    marks = page.eval_on_selector_all("#lyrics-lines .line[data-syllables] .stress", "s => s.map(e => e.textContent)")
    assert marks == [line["stress"].replace("1", "/").replace("0", "˘") for line in counted]  # a mark a syllable
    rows = page.get_by_role("list", name="Syllables and rhyme of each line").get_by_role("listitem")
    expect(rows).to_have_count(len(expected_rows(LYRICS, analysis)))  # read as a list, a line an item
    first_line = analysis["stanzas"][0]["lines"][0]
    expect(rows.first).to_contain_text(f"Line 1: {first_line['syllables']} syllables, stress {first_line['stress']}")

    geometry = page.evaluate("""() => { const t = document.getElementById('lyrics');
        const rows = [...document.querySelectorAll('#lyrics-lines .line')];
        return {hidden: t.scrollHeight - t.clientHeight, scrolled: t.scrollTop,
                facts: rows.map(r => r.querySelector('.facts').getBoundingClientRect().right),
                editor: t.getBoundingClientRect().right}; }""")
    assert geometry["hidden"] <= 1 and geometry["scrolled"] == 0, geometry  # the editor grows with the lyrics
    assert all(right > geometry["editor"] for right in geometry["facts"])  # the counts sit beside the text
    screenshot(page, "songwriter")

    page.fill("#lyrics", "")
    wait_for_counts_of(page, "")
    assert lyric_rows(page) == []


def test_the_rhyme_filter_keeps_only_rhyming_words_and_shows_their_share(page, songs_base):
    text = "I walked along the road tonight,\nAnd all the stars above were"
    page.goto(songs_base)
    page.fill("#lyrics", text)
    page.press("#lyrics", "End")  # the cursor at the end: the chart continues the whole text
    wait_for_filtered_chart(page, text, {})
    unfiltered = chart(page)
    expect(page.locator("#constraint-mass")).to_be_hidden()
    wait_for_counts_of(page, text)
    assert page.input_value("#rhymes-with") == "tonight"  # line 2 answers line 1, by the page's guess

    page.check("#rhyme-filter")
    wait_for_filtered_chart(page, text, {"rhymes_with": "tonight", "rhyme": "perfect"})
    expected = api(songs_base, "/v1/predict", {"prompt": text, "top_k": 20, "unit": "word", "temperature": 0.8,
                                               "rhymes_with": "tonight", "rhyme": "perfect"}).json()
    filtered = chart(page)
    assert filtered == merged_cases(expected) and filtered != unfiltered
    mass = page.locator("#constraint-mass")
    expect(mass).to_be_visible()
    assert float(page.get_attribute("#constraint-mass", "data-mass")) == expected["constraint_mass"]
    expect(mass).to_have_text(f"{percent(expected['constraint_mass'])} of the model's next-word probability"
                              " rhymes with “tonight”.")
    words = [word for word, _ in filtered]
    counted = api(songs_base, "/v1/analyze", {"text": "\n".join(["tonight", *words])}).json()
    letters = [line["rhyme"] for stanza in counted["stanzas"] for line in stanza["lines"]]
    assert letters[0] != "-" and set(letters) == {letters[0]}, list(zip(["tonight", *words], letters))
    screenshot(page, "rhyme-filter")

    page.fill("#word-syllables", "1")
    wait_for_filtered_chart(page, text, {"rhymes_with": "tonight", "rhyme": "perfect", "syllables": 1})
    expected = api(songs_base, "/v1/predict", {"prompt": text, "top_k": 20, "unit": "word", "temperature": 0.8,
                                               "rhymes_with": "tonight", "rhyme": "perfect", "syllables": 1}).json()
    assert chart(page) == merged_cases(expected)
    expect(mass).to_have_text(f"{percent(expected['constraint_mass'])} of the model's next-word probability"
                              " rhymes with “tonight” and has 1 syllable.")

    word = chart(page)[0][0]
    page.click("#chart li button")  # a bar puts its word at the cursor
    assert page.input_value("#lyrics") == f"{text} {word}"
    wait_for_filtered_chart(page, f"{text} {word}", {"rhymes_with": "tonight", "rhyme": "perfect", "syllables": 1})


def test_after_a_typed_space_the_chart_offers_the_next_word(page, songs_base):
    """A songwriter types a word and a space, then looks for the next word: the chart shows what follows that
    space (/v1/predict's words for that very text: no punctuation, which cannot follow a space here), and a
    bar writes its word after the space, adding none."""
    text = "O my love is like a red, red "
    page.goto(songs_base)
    page.fill("#lyrics", text)
    page.press("#lyrics", "Control+End")
    wait_for_filtered_chart(page, text, {})
    answer = api(songs_base, "/v1/predict", {"prompt": text, "top_k": 20, "unit": "word",
                                             "temperature": 0.8}).json()
    shown = chart(page)
    assert shown == merged_cases(answer)
    words = [word for word, _ in shown]
    assert "rose" in words and all(word.isalpha() for word in words), words
    page.click("#chart li button")
    assert page.input_value("#lyrics") == text + words[0]
    screenshot(page, "chart-after-a-space")


def merged_cases(answer: dict, size: int = 10) -> list[list]:
    """The chart of songwriter mode: case variants as one word (shares added, the likelier spelling), the
    `size` likeliest."""
    merged: dict[str, list] = {}
    for candidate in answer["distribution"]:
        key = candidate["text"].lower()
        if key in merged:
            merged[key][1] += candidate["prob"]
        else:
            merged[key] = [candidate["text"], candidate["prob"]]
    return sorted(merged.values(), key=lambda row: -row[1])[:size]


def lines_body(prompt: str, **fields) -> dict:
    """The /v1/lines request the page sends with the sampling fields at their defaults."""
    return {"prompt": prompt, "n": 3, **fields, "temperature": 0.8, "top_k": 0, "top_p": 1, "min_p": 0,
            "repetition_penalty": 1, "noise": 0}


def test_next_line_inserts_a_candidate_with_the_syllables_asked_for(page, songs_base):
    first = "I left my home at break of day,"
    page.goto(songs_base)
    page.fill("#lyrics", first + "\n")
    page.press("#lyrics", "Control+End")  # on the new, empty second line
    wait_for_counts_of(page, first + "\n")
    assert page.input_value("#line-rhymes-with") == "day"  # the scheme's guess: line 2 answers line 1
    (counted,) = lyric_rows(page)
    assert page.input_value("#line-syllables") == str(counted["syllables"])  # and is as long
    page.fill("#line-syllables", "6")
    page.fill("#seed", "7")

    page.focus("#lyrics")
    with page.expect_response("**/v1/lines", timeout=LINES_WAIT_MS) as answered:
        page.keyboard.press("Control+Enter")  # Ctrl+Enter asks for lines in songwriter mode
    assert answered.value.status == 200, answered.value.text()
    expect(page.locator("#lines li")).to_have_count(3, timeout=WAIT_MS)
    expected = api(songs_base, "/v1/lines", lines_body(first + "\n", syllables=6, rhymes_with="day",
                                                       rhyme="perfect", seed=7)).json()
    candidates = page.eval_on_selector_all("#lines li", "items => items.map(li => [li.dataset.text,"
                                           " Number(li.dataset.syllables), li.querySelector('.count').textContent])")
    assert candidates == [[line["text"], 6, "6 syl."] for line in expected["lines"]]  # same seed, same lines
    screenshot(page, "next-line")

    chosen = candidates[0][0]
    page.focus("#lines li button")
    page.keyboard.press("Enter")  # a candidate is a button: the keyboard inserts it too
    lyrics = page.input_value("#lyrics")
    assert lyrics == f"{first}\n{chosen}\n"
    assert focused(page)["id"] == "lyrics"  # writing goes on, on the line after it
    wait_for_counts_of(page, lyrics)
    analysis = api(songs_base, "/v1/analyze", {"text": lyrics}).json()
    (stanza,) = analysis["stanzas"]
    assert stanza["lines"][1]["syllables"] == 6  # the line has the syllables asked for ...
    assert stanza["lines"][0]["rhyme"] == stanza["lines"][1]["rhyme"] != "-"  # ... and rhymes with "day"
    assert lyric_rows(page) == expected_rows(lyrics, analysis)
    screenshot(page, "next-line-inserted")


def test_at_a_line_start_the_rhyme_filter_shows_the_words_the_line_may_end_on(page, songs_base):
    first = "I walked along the road tonight,"
    page.goto(songs_base)
    page.fill("#lyrics", first + "\n")
    page.press("#lyrics", "Control+End")  # on the new, empty second line, which answers line 1
    wait_for_counts_of(page, first + "\n")
    page.fill("#line-syllables", "8")
    page.fill("#seed", "11")
    page.check("#rhyme-filter")
    wait_for_filtered_chart(page, first + "\n", {"end_words": True, "rhymes_with": "tonight", "rhyme": "perfect"})
    expected = api(songs_base, "/v1/lines", lines_body(first + "\n", syllables=8, rhymes_with="tonight",
                                                       rhyme="perfect", seed=11)).json()
    bars = page.eval_on_selector_all("#chart li", "items => items.map(li => [li.dataset.text, Number(li.dataset.prob),"
                                     " li.querySelector('.example').textContent])")
    assert bars == [[end["word"], end["prob"], end["line"]] for end in expected["end_words"]]  # same seed, same lines
    assert len(bars) >= 3 and bars[0][1] < 0.9  # a choice of end words, not one line's
    expect(page.locator("#chart-heading")).to_have_text("Words to end the line")
    expect(page.locator("#chart-source-ends")).to_be_visible()
    expect(page.locator("#chart-source")).to_be_hidden()
    expect(page.locator("#chart-summary")).to_contain_text(
        "How line 2 may end, rhyming with “tonight”, 8 syllables: the share of the model's lines that end on each word")
    counted = api(songs_base, "/v1/analyze", {"text": "\n".join(["tonight", *[w for w, _, _ in bars]])}).json()
    letters = [line["rhyme"] for stanza in counted["stanzas"] for line in stanza["lines"]]
    assert letters[0] != "-" and set(letters) == {letters[0]}  # every end word rhymes with "tonight"
    screenshot(page, "line-end-words")

    page.click("#chart li button")  # a bar writes the likeliest line that ends on its word
    assert page.input_value("#lyrics") == f"{first}\n{bars[0][2]}\n"
    typed = f"{first}\n{bars[0][2]}\nAnd"
    page.keyboard.type("And")  # a word on the line: the chart is the next word's again
    wait_for_chart_of(page, typed)
    expect(page.locator("#chart-heading")).to_have_text("Next word")
    expect(page.locator("#chart-source")).to_be_visible()


def open_a_line_nothing_can_meet(page: Page, songs_base: str):
    """The page on a blank line 2 asked to be 1 syllable, after a line ending in "celebrity" (nothing of 1
    syllable rhymes with it); /v1/lines' own refusal of that request."""
    page.goto(songs_base)
    page.fill("#lyrics", "We sang about a celebrity,\n")
    page.press("#lyrics", "Control+End")
    page.fill("#line-syllables", "1")
    refusal = api(songs_base, "/v1/lines", lines_body("We sang about a celebrity,\n", syllables=1,
                                                      rhymes_with="celebrity", rhyme="perfect"))
    assert refusal.status_code == 422, refusal.text
    return refusal


def test_line_ends_nothing_can_meet_are_explained_not_dumped(page, songs_base):
    refusal = open_a_line_nothing_can_meet(page, songs_base)
    page.fill("#rhymes-with", "celebrity")  # typing a word turns the filter on: the chart asks for line ends
    reason = refusal.json()["error"]["message"].strip()
    reason += "" if reason.endswith((".", "!", "?", "…")) else "."
    expect(page.locator("#predict-notice")).to_have_text(f"No line ending in a rhyme could be found here. {reason}",
                                                         timeout=LINES_WAIT_MS)
    expect(page.locator("#predict-error")).to_be_hidden()
    expect(page.locator("#chart li")).to_have_count(0)


def test_a_next_line_nothing_can_meet_is_explained_not_dumped(page, songs_base):
    refusal = open_a_line_nothing_can_meet(page, songs_base)
    page.fill("#line-rhymes-with", "celebrity")
    page.click("#suggest-lines")
    notice = page.locator("#lines-notice")
    expect(notice).to_be_visible(timeout=LINES_WAIT_MS)
    expect(notice).to_contain_text("No line could be found with 1 syllable and a rhyme for “celebrity”")
    expect(notice).to_contain_text(refusal.json()["error"]["message"])
    expect(notice).to_contain_text("Try another rhyme word or another length")
    assert page.get_attribute("#lines-notice", "role") == "status"
    expect(page.locator("#lines-error")).to_be_hidden()  # a fact about the request, not a fault
    expect(page.locator("#lines li")).to_have_count(0)
    screenshot(page, "next-line-impossible")


def test_songwriter_mode_fits_a_narrow_screen(page, songs_base):
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(songs_base)
    text = "Anunbrokenwordmuchwiderthananyphonescreencouldeverhold\nAnd here the river bends away,\nAnd there"
    page.fill("#lyrics", text)
    wait_for_counts_of(page, text)
    wait_for_chart_of(page, page.evaluate("() => { const t = document.getElementById('lyrics');"
                                          " return t.value.slice(0, t.selectionStart); }"))
    widths = page.evaluate("({page: document.documentElement.scrollWidth, body: document.body.scrollWidth,"
                           "  view: document.documentElement.clientWidth})")
    assert widths["view"] == 360 and widths["page"] <= 360 and widths["body"] <= 360, widths
    for box in page.locator("#lyrics-lines .facts .letter").all():
        place = box.bounding_box()
        assert place["x"] >= 0 and place["x"] + place["width"] <= 360
    screenshot(page, "songwriter-narrow")


def select_in_lyrics(page: Page, start: int, end: int) -> None:
    page.evaluate("([s, e]) => { const t = document.getElementById('lyrics'); t.focus(); t.setSelectionRange(s, e); }",
                  [start, end])


def alternatives_on_selecting(page: Page, base: str, lyrics: str, start: int, end: int):
    """The page opened on `lyrics` and `start`..`end` selected: the `/v1/alternatives` response it asked for."""
    page.goto(base)
    page.fill("#lyrics", lyrics)
    wait_for_counts_of(page, lyrics)
    with page.expect_response("**/v1/alternatives", timeout=LINES_WAIT_MS) as answered:
        select_in_lyrics(page, start, end)
    assert answered.value.status == 200, answered.value.text()
    return answered.value


def test_selecting_words_offers_alternatives_and_one_click_puts_one_in(page, songs_base):
    lyrics = "Drink to me only with thine eyes,\nAnd I will pledge with mine;"
    start = lyrics.index("eyes")
    # a part of the word: the page asks for the whole word
    answered = alternatives_on_selecting(page, songs_base, lyrics, start + 1, start + 3)
    sent = json.loads(answered.request.post_data)
    assert (sent["text"], sent["start"], sent["end"], sent["syllables"]) == (lyrics, start, start + 4, 1)
    assert page.input_value("#alternative-syllables") == "1"  # the word's own count, unless one is typed
    expected = api(songs_base, "/v1/alternatives", {"text": lyrics, "start": start, "end": start + 4,
                                                     "n": sent["n"], "syllables": 1}).json()
    expect(page.locator("#alternatives li")).to_have_count(len(expected["alternatives"]), timeout=WAIT_MS)
    shown = page.eval_on_selector_all("#alternatives li", "items => items.map(li => [li.dataset.text,"
                                      " li.querySelector('.count').textContent,"
                                      " li.querySelector('.rhymes')?.textContent ?? null])")
    # "eyes" ends its line: a candidate that rhymes with "mine", the other line's end, says so
    assert shown == [[a["text"], percent(a["prob"]), a["rhymes_with"] and f"~ {a['rhymes_with']}"]
                     for a in expected["alternatives"]]
    assert any(a["rhymes_with"] == "mine" for a in expected["alternatives"])
    neighbours = api(songs_base, "/v1/neighbours", {"word": "eyes", "n": 8}).json()["neighbours"]
    expect(page.locator("#neighbours li")).to_have_count(len(neighbours), timeout=WAIT_MS)
    assert page.eval_on_selector_all("#neighbours li", "items => items.map(li => li.textContent)") == [
        n["word"] for n in neighbours]
    screenshot(page, "alternatives")

    chosen = next(text for text, *_ in shown if text != "eyes")
    page.locator("#alternatives li", has_text=chosen).first.locator("button").click()
    revised = lyrics[:start] + chosen + lyrics[start + 4:]
    assert page.input_value("#lyrics") == revised
    assert page.evaluate("() => { const t = document.getElementById('lyrics');"
                         " return t.value.slice(t.selectionStart, t.selectionEnd); }") == chosen  # still selected
    wait_for_counts_of(page, revised)
    screenshot(page, "alternatives-replaced")


def test_a_selected_phrase_keeps_its_length_until_the_field_is_cleared(page, songs_base):
    """A selection's own syllable count is asked for (a phrase is not crowded out by single words); a cleared
    field asks for any length; the next selection brings its own count again."""
    from .cmudict_reading import syllable_sums

    lyrics = "The wind blew cold across the moor,\nMy true love waited by the door"
    start = lyrics.index("across the moor")
    answered = alternatives_on_selecting(page, songs_base, lyrics, start, start + len("across the moor"))
    sent = json.loads(answered.request.post_data)
    assert (sent["start"], sent["end"], sent["syllables"]) == (start, start + len("across the moor"), 4)
    assert page.input_value("#alternative-syllables") == "4"
    candidates = answered.json()["alternatives"]
    expect(page.locator("#alternatives li")).to_have_count(len(candidates), timeout=WAIT_MS)
    assert any(len(c["text"].split()) > 1 for c in candidates)
    assert all(4 in syllable_sums(c["text"]) for c in candidates)
    expect(page.locator("#alternatives-status")).to_contain_text("in 4 syllables, as it has")
    screenshot(page, "alternatives-phrase")

    with page.expect_response("**/v1/alternatives", timeout=LINES_WAIT_MS) as answered:
        page.fill("#alternative-syllables", "")
    assert "syllables" not in json.loads(answered.value.request.post_data)
    expect(page.locator("#alternatives-status")).to_contain_text("any length", timeout=WAIT_MS)

    waited = lyrics.index("waited")
    with page.expect_response("**/v1/alternatives", timeout=LINES_WAIT_MS) as answered:
        select_in_lyrics(page, waited, waited + len("waited"))
    assert json.loads(answered.value.request.post_data)["syllables"] == 2
    assert page.input_value("#alternative-syllables") == "2"


def test_alternatives_of_a_given_length_or_none_say_so(page, songs_base):
    lyrics = "The wind blew cold across the moor,"
    start = lyrics.index("cold")
    page.goto(songs_base)
    page.fill("#lyrics", lyrics)
    page.fill("#alternative-syllables", "2")
    with page.expect_response("**/v1/alternatives", timeout=LINES_WAIT_MS) as answered:
        select_in_lyrics(page, start, start + 4)
    assert answered.value.status == 200 and json.loads(answered.value.request.post_data)["syllables"] == 2
    expect(page.locator("#alternatives li")).not_to_have_count(0, timeout=WAIT_MS)
    for candidate in answered.value.json()["alternatives"]:
        if candidate["text"] != "cold":
            assert candidate["syllables"] == 2
    expect(page.locator("#alternatives-status")).to_contain_text("2 syllables")
    page.fill("#alternative-syllables", "30")  # past the allowed range: the server's message, not a stack trace
    expect(page.locator("#alternatives-error")).to_contain_text("syllables", timeout=WAIT_MS)
    screenshot(page, "alternatives-error")


def test_a_meter_for_next_lines_asks_for_its_stresses(page, songs_base):
    from .cmudict_reading import meets_stress

    first = "I left my home at break of day,"
    page.goto(songs_base)
    page.fill("#lyrics", first + "\n")
    page.press("#lyrics", "Control+End")
    wait_for_counts_of(page, first + "\n")
    page.fill("#line-rhymes-with", "")
    page.fill("#line-syllables", "")
    page.select_option("#line-meter", "01")
    page.click("#suggest-lines")  # a meter without a length: said on the page, nothing sent
    expect(page.locator("#lines-error")).to_contain_text("Syllables")
    page.fill("#line-syllables", "6")
    page.fill("#seed", "5")
    with page.expect_response("**/v1/lines", timeout=LINES_WAIT_MS) as answered:
        page.click("#suggest-lines")
    assert answered.value.status == 200, answered.value.text()
    assert json.loads(answered.value.request.post_data)["stress"] == "010101"
    expect(page.locator("#lines li")).to_have_count(3, timeout=WAIT_MS)
    for text in page.eval_on_selector_all("#lines li", "items => items.map(li => li.dataset.text)"):
        assert meets_stress(text, "010101"), text
    expect(page.locator("#lines-status")).to_contain_text("010101")
    screenshot(page, "next-line-meter")


def test_the_chart_shows_a_word_once_whatever_its_case(page, songs_base):
    """Rhymes for "tonight" after "And saw the": "night" and "Night" are both likely; songwriter mode shows the
    word once, with both shares added and the likelier spelling."""
    text = "I walked along the road tonight,\nAnd saw the"
    page.goto(songs_base)
    page.fill("#lyrics", text)
    page.press("#lyrics", "Control+End")
    page.fill("#rhymes-with", "tonight")  # typing a word turns the filter on
    wait_for_filtered_chart(page, text, {"rhymes_with": "tonight", "rhyme": "perfect"})
    answer = api(songs_base, "/v1/predict", {"prompt": text, "top_k": 20, "unit": "word", "temperature": 0.8,
                                             "rhymes_with": "tonight", "rhyme": "perfect"}).json()
    spelled = [c["text"] for c in answer["distribution"]]
    assert len({word.lower() for word in spelled}) < len(spelled)  # the case this test is about
    shown = chart(page)
    assert shown == merged_cases(answer)
    assert len({word.lower() for word, _ in shown}) == len(shown) > 0
    screenshot(page, "chart-cases-merged")

"""The heatmap widget and the examples in the real ComfyUI frontend, in Debian's headless chromium (Playwright, no
download), in both renderers: the classic LiteGraph canvas and the Vue "Nodes 2.0" renderer (the frontend setting
``Comfy.VueNodes.Enabled``)."""
from __future__ import annotations

import json
import re
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.comfyui.host import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
EXAMPLES = REPO_ROOT / "examples"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--headless=new"]
RENDERERS = {"classic": False, "vue": True}
# The test server runs with --disable-api-nodes, which makes ComfyUI send a Content-Security-Policy with
# connect-src 'self'; the frontend's look-ups of node packs on the public registry (api.comfy.org) are then
# blocked and logged as console errors. They come from the server's flag, not from a workflow.
CSP_REGISTRY = re.compile(r"^Connecting to 'https://api\.comfy\.org/[^']*' violates the following Content Security")
# Every toast the frontend shows (validation alerts are toasts) is kept, even after it is closed.
WATCH_TOASTS = """
window.__esToasts = [];
new MutationObserver((changes) => {
  for (const change of changes) for (const added of change.addedNodes) {
    if (added.nodeType !== 1) continue;
    const found = added.matches?.('.p-toast-message') ? [added]
      : Array.from(added.querySelectorAll('.p-toast-message'));
    for (const toast of found) window.__esToasts.push(toast.textContent);
  }
}).observe(document, {childList: true, subtree: true});
"""
WORDS_40 = ("naked woman on a beach with blood , a quiet harbour town at dusk with fishing boats , warm lanterns , "
            "old stone houses , seagulls over the water , soft film grain , wide angle photo by a famous artist")


def _need_chromium() -> None:
    if not CHROMIUM.exists():
        __import__("tests.support.require", fromlist=["require"]).require(CHROMIUM.exists, "run bash tools/bootstrap.sh --test (installs Debian chromium at /usr/bin/chromium)")


def _set_user_setting(server, name: str, value) -> None:
    request = urllib.request.Request(f"{server.url}/settings/{name}", data=json.dumps(value).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=30).close()


class Problems:
    """Alerts, toasts, dialogs, page errors and console errors seen since the last ``take``."""

    def __init__(self, page) -> None:
        self.page = page
        self.seen: list[str] = []
        self._toasts = 0
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.seen.append(f"page error: {error}"))
        page.on("dialog", self._dialog)

    def _console(self, message) -> None:
        if message.type == "error" and not CSP_REGISTRY.match(message.text):
            self.seen.append(f"console error: {message.text}")

    def _dialog(self, dialog) -> None:
        self.seen.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def take(self) -> list[str]:
        toasts = self.page.evaluate("() => window.__esToasts || []")
        found = self.seen + [f"toast: {t}" for t in toasts[self._toasts:]]
        dialogs = self.page.evaluate(
            "() => Array.from(document.querySelectorAll('.p-dialog')).filter(d => d.offsetParent !== null)"
            ".map(d => d.textContent.slice(0, 300))")
        found += [f"dialog open: {d}" for d in dialogs]
        self._toasts = len(toasts)
        self.seen = []
        return found


@contextmanager
def frontend(server, vue: bool):
    """A page on the real ComfyUI frontend with the renderer chosen; yields (page, problems)."""
    from playwright.sync_api import sync_playwright

    _set_user_setting(server, "Comfy.TutorialCompleted", True)  # skip the first-run templates dialog
    _set_user_setting(server, "Comfy.VueNodes.Enabled", vue)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1900, "height": 1300})
            page.add_init_script(WATCH_TOASTS)
            problems = Problems(page)
            page.goto(server.url, wait_until="domcontentloaded")
            page.wait_for_function("() => window.app && window.app.graph && window.comfyAPI", timeout=90_000)
            page.wait_for_function(
                "() => window.app.extensions?.some?.(e => e.name === 'embedding_sanitizer.heatmap')", timeout=30_000)
            assert page.evaluate("() => window.app.ui.settings.getSettingValue('Comfy.VueNodes.Enabled')") is vue
            page.wait_for_timeout(1500)
            problems.take()  # start-up of a fresh user profile (404s for user.css and empty user folders)
            yield page, problems
        finally:
            browser.close()


def _load_workflow(page, workflow: dict) -> None:
    page.evaluate("async (g) => { await window.app.loadGraphData(g); }", workflow)
    page.wait_for_timeout(1500)


def _set_widgets(page, values: dict) -> None:
    """``{node id: {widget name: value}}`` through the LiteGraph widgets (what the queue serializes)."""
    page.evaluate("""(values) => {
        for (const [id, widgets] of Object.entries(values)) {
            const node = window.app.graph.getNodeById(Number(id));
            for (const [name, value] of Object.entries(widgets)) {
                const w = node.widgets.find(x => x.name === name);
                if (!w) throw new Error(`node ${id} has no widget ${name}`);
                w.value = value;
                w.callback?.(value);
            }
        }
    }""", values)


def _missing_node_types(page) -> list[str]:
    return page.evaluate("() => window.app.graph._nodes.filter(n => !LiteGraph.registered_node_types[n.type])"
                         ".map(n => n.type)")


@pytest.mark.browser
@pytest.mark.parametrize("renderer", list(RENDERERS))
def test_examples_load_without_alerts(server, renderer):
    """Every example (UI workflow and API json) loads in the current frontend with no alert, validation toast,
    dialog or console error, and every node type it uses exists on the real server."""
    _need_chromium()
    workflows = sorted(EXAMPLES.glob("*_workflow.json"))
    apis = sorted(EXAMPLES.glob("*_api.json"))
    assert {p.name.split("_")[0] for p in workflows} == {"sd15", "sdxl", "flux"} == {p.name.split("_")[0] for p in apis}
    failures = {}
    with frontend(server, RENDERERS[renderer]) as (page, problems):
        for path in workflows:
            workflow = json.loads(path.read_text())
            assert workflow["version"] == 0.4, path.name
            _load_workflow(page, workflow)
            found = problems.take() + [f"unknown node type {t}" for t in _missing_node_types(page)]
            if page.evaluate("() => window.app.graph._nodes.length") != len(workflow["nodes"]):
                found.append("not every node was loaded")
            if found:
                failures[path.name] = found
        for path in apis:
            page.evaluate("async (g) => { await window.app.loadApiJson(g[0], g[1]); }",
                          [json.loads(path.read_text()), path.name])
            page.wait_for_timeout(1500)
            found = problems.take() + [f"unknown node type {t}" for t in _missing_node_types(page)]
            if page.evaluate("() => window.app.graph._nodes.length") != len(json.loads(path.read_text())):
                found.append("not every node was loaded")
            if found:
                failures[path.name] = found
        # the check can fail: the old export (nulls where the schema wants lists and objects) raises the alert
        broken = json.loads((EXAMPLES / "sd15_embedding_sanitizer_workflow.json").read_text())
        broken.update(floatingLinks=None, definitions=None)
        _load_workflow(page, broken)
        assert any("Invalid workflow against zod schema" in p for p in problems.take())
    assert not failures, json.dumps(failures, indent=1)[:6000]


def _layout(page) -> None:
    """The view the checks read: the sanitizer node and Sanitize Conditioning side by side at zoom 1."""
    page.keyboard.press("Escape")
    page.evaluate("""() => { const c = window.app.canvas; c.ds.scale = 1.0; c.ds.offset = [-300, 30];
                             c.setDirty(true, true); }""")
    page.wait_for_timeout(1200)


def _visibility(page, node_id: int, vue: bool) -> dict:
    """Chips and text lines of a node's heatmap that are cut off, covered, or outside the node."""
    return page.evaluate("""([id, vue]) => {
        const node = window.app.graph.getNodeById(id), root = node.esHeatmapEl;
        let box;
        if (vue) box = document.querySelector(`[data-node-id="${id}"]`).getBoundingClientRect();
        else {
            const c = window.app.canvas, r = c.canvas.getBoundingClientRect(), s = c.ds.scale, o = c.ds.offset;
            box = {left: r.left + (node.pos[0] + o[0]) * s, top: r.top + (node.pos[1] + o[1]) * s,
                   right: r.left + (node.pos[0] + node.size[0] + o[0]) * s,
                   bottom: r.top + (node.pos[1] + node.size[1] + o[1]) * s};
        }
        const rootBox = root.getBoundingClientRect();
        const parts = Array.from(root.querySelectorAll('.es-word, .es-summary, .es-line, .es-notes > div, '
                                                       + '.es-not-covered > div'));
        const hidden = [];
        for (const part of parts) {
            const b = part.getBoundingClientRect();
            const inside = (outer) => b.left >= outer.left - 1 && b.right <= outer.right + 1 &&
                                      b.top >= outer.top - 1 && b.bottom <= outer.bottom + 1;
            const hit = document.elementFromPoint((b.left + b.right) / 2, (b.top + b.bottom) / 2);
            if (!(b.width > 0 && b.height > 0) || !inside(rootBox) || !inside(box) || !root.contains(hit))
                hidden.push(part.className + ':' + part.textContent.slice(0, 40));
        }
        return {parts: parts.length, chips: root.querySelectorAll('.es-word').length, hidden,
                summary: root.querySelector('.es-summary')?.textContent || ''};
    }""", [node_id, vue])


def _drag_intensity(page, vue: bool, to_max: bool) -> None:
    """Move node 2's intensity slider to an end the way a user does: the Vue slider by keyboard (Home/End on its
    thumb), the canvas slider by dragging it with the mouse past its end."""
    if vue:
        thumb = page.locator('[data-node-id="2"] [aria-label="intensity"] [role="slider"]')
        thumb.focus()
        page.keyboard.press("End" if to_max else "Home")
        return
    start, end = page.evaluate("""(toMax) => {
        const c = window.app.canvas, node = window.app.graph.getNodeById(2);
        const w = node.widgets.find(x => x.name === 'intensity');
        const r = c.canvas.getBoundingClientRect(), s = c.ds.scale, o = c.ds.offset;
        const y = r.top + (node.pos[1] + (w.last_y ?? w.y) + 10 + o[1]) * s;
        const x = (dx) => r.left + (node.pos[0] + dx + o[0]) * s;
        return [[x(node.size[0] / 2), y], [x(toMax ? node.size[0] + 40 : -40), y]];
    }""", to_max)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=12)  # dragged past the end: the slider stops at its min or max
    page.mouse.up()


def _wait_preview(page, check: str) -> dict:
    """The latest live preview answer for node 2, once its body passes ``check`` (a JS expression over ``b``)."""
    last = "() => (window.__embeddingSanitizerPreview || {})['2']"
    try:
        page.wait_for_function(f"() => {{ const p = ({last})(); const b = p && p.body;"
                               f" return !!(b && b.preview && ({check})); }}", timeout=60_000)
    except Exception as exc:  # noqa: BLE001 - say what the page had instead
        widgets = page.evaluate("() => window.app.graph.getNodeById(2).widgets.map(w => [w.name, w.value])")
        raise AssertionError(f"no live preview with {check}: last answer {page.evaluate(last)}, "
                             f"widgets {widgets}") from exc
    page.wait_for_timeout(600)  # the widget re-renders and the node grows
    return page.evaluate(last)["body"]


def _wait_queue_empty(page, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        queue = page.evaluate("async () => (await window.app.api.fetchApi('/queue')).json()")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"the queue did not empty in {timeout} s")


def _history_length(page) -> int:
    return len(page.evaluate("async () => Object.keys(await (await window.app.api.fetchApi('/history')).json())"))


def _chips(page, node_id: int) -> list[dict]:
    return page.evaluate(f"""() => Array.from(window.app.graph.getNodeById({node_id}).esHeatmapEl
        .querySelectorAll('.es-word')).map(e => ({{word: e.dataset.word, score: Number(e.dataset.score),
        edit: Number(e.dataset.edit), title: e.title, text: e.textContent}}))""")


@pytest.mark.browser
@pytest.mark.parametrize("renderer", list(RENDERERS))
def test_heatmap_widget_follows_the_slider(server, tiny_checkpoint, renderer):
    _need_chromium()
    vue = RENDERERS[renderer]
    workflow = json.loads((EXAMPLES / "sd15_embedding_sanitizer_workflow.json").read_text())
    ARTIFACTS.mkdir(exist_ok=True)
    words = WORDS_40.split()
    assert len(words) >= 40
    with frontend(server, vue) as (page, problems):
        _load_workflow(page, workflow)
        # An intensity no other test uses, so that ComfyUI's cache cannot skip the encode (the CLIP patch pushes
        # on encode); the shipped example with the tiny checkpoint, made fast for CPU.
        _set_widgets(page, {1: {"ckpt_name": tiny_checkpoint.name}, 3: {"text": WORDS_40},
                            6: {"width": 64, "height": 64}, 7: {"steps": 2},
                            2: {"preset": "custom", "intensity": 0.91 if vue else 0.93}})
        page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
        page.wait_for_function(
            "() => { const s = window.__embeddingSanitizerRuns || {};"
            " return s['5'] && s['2'] && document.querySelectorAll('.es-word').length > 0; }", timeout=180_000)
        _layout(page)
        state = page.evaluate("() => window.__embeddingSanitizerRuns")
        assert [w for w, _, _ in state["2"][0]["heatmap"][0]["words"]] == words  # pushed by the CLIP patch
        assert [w for w, _, _ in state["5"][0]["heatmap"][0]["words"]] == words  # Sanitize Conditioning's ui
        page.screenshot(path=str(ARTIFACTS / f"comfyui-heatmap-{renderer}.png"))
        for node_id in (2, 5):
            seen = _visibility(page, node_id, vue)
            assert seen["chips"] == len(words) and not seen["hidden"], (node_id, seen)
            assert "flagged" in seen["summary"] and "edited" in seen["summary"], seen
        # Policy notes and what was not covered, in both nodes (SD1: the pooled output is not used, not cleaned)
        for node_id in (2, 5):
            shown = page.evaluate(f"() => window.app.graph.getNodeById({node_id}).esHeatmapEl"
                                  ".querySelector('.es-not-covered')?.textContent || ''")
            assert "Not sanitized" in shown and "pooled" in shown, (node_id, shown)
        chips = _chips(page, 2)
        assert all(c["text"].endswith(f"{c['score']:.2f}") for c in chips), "each chip shows its score"
        assert any(c["edit"] > 0 for c in chips), chips
        _wait_queue_empty(page)
        history = _history_length(page)

        _drag_intensity(page, vue, to_max=False)
        body = _wait_preview(page, "b.intensity === 0")
        zero = _chips(page, 2)
        assert [c["word"] for c in zero] == words
        assert all(c["edit"] == 0 for c in zero), [c for c in zero if c["edit"]]
        assert page.evaluate("() => window.app.graph.getNodeById(2).esHeatmapEl.querySelectorAll('.es-edited')"
                             ".length") == 0
        assert not any("removed" in c["title"] for c in zero)
        assert [c["score"] for c in zero] == [c["score"] for c in chips], "scores do not follow the intensity"
        assert "0 edited" in body["summary"]
        seen = _visibility(page, 2, vue)
        assert not seen["hidden"], seen
        page.screenshot(path=str(ARTIFACTS / f"comfyui-heatmap-{renderer}-intensity-0.png"))

        _drag_intensity(page, vue, to_max=True)
        _wait_preview(page, "b.intensity === 3")
        full = {c["word"]: c for c in _chips(page, 2)}
        assert full["naked"]["edit"] > 0 and "edited at this intensity" in full["naked"]["title"]

        _set_widgets(page, {3: {"text": "a swimmer at sea"}})  # typing in the prompt re-scores too
        _wait_preview(page, "b.heatmap.length && b.heatmap[0].words.length === 4")
        assert [c["word"] for c in _chips(page, 2)] == ["a", "swimmer", "at", "sea"]
        assert _history_length(page) == history, "the live preview queued a prompt"
        page.screenshot(path=str(ARTIFACTS / f"comfyui-heatmap-{renderer}-preview.png"))
        (ARTIFACTS / f"comfyui-workflow-{renderer}.json").write_text(
            json.dumps(page.evaluate("() => JSON.parse(JSON.stringify(window.app.graph.serialize()))"), indent=1))
        found = problems.take()
        assert not found, found

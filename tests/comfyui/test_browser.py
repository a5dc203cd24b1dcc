"""The heatmap widget in the real ComfyUI frontend, in Debian's headless chromium (Playwright, no download)."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.comfyui.host import REPO_ROOT
from tests.comfyui.test_server import tiny_graph

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--headless=new"]


@pytest.mark.browser
def test_heatmap_widget_is_drawn(server, tiny_checkpoint):
    if not CHROMIUM.exists():
        __import__("tests.support.require", fromlist=["require"]).require(CHROMIUM.exists, "run bash tools/bootstrap.sh --test (installs Debian chromium at /usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    graph = tiny_graph(tiny_checkpoint.name)
    # Inputs no other test uses, so that ComfyUI's cache cannot skip the encode (the CLIP patch pushes on encode).
    graph["2"]["inputs"]["intensity"] = 0.95
    graph["5"]["inputs"]["intensity"] = 0.95
    ARTIFACTS.mkdir(exist_ok=True)
    # Skip the first-run templates dialog (a user setting of the ComfyUI frontend).
    request = urllib.request.Request(server.url + "/settings/Comfy.TutorialCompleted", data=b"true",
                                     headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=30).close()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(server.url, wait_until="domcontentloaded")
            page.wait_for_function("() => window.app && window.app.graph && window.comfyAPI", timeout=90_000)
            page.wait_for_function(
                "() => window.app.extensions?.some?.(e => e.name === 'embedding_sanitizer.heatmap')"
                " ?? true", timeout=30_000)
            page.evaluate("async (g) => { await window.app.loadApiJson(g); }", graph)
            page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
            page.wait_for_function(
                "() => { const s = window.__embeddingSanitizer || {};"
                " return s['5'] && s['2'] && document.querySelectorAll('.es-word').length > 0; }",
                timeout=180_000)
            state = page.evaluate("() => window.__embeddingSanitizer")
            drawn = page.evaluate("() => Array.from(document.querySelectorAll('.es-heatmap .es-word'))"
                                  ".map(e => e.dataset.word)")
            workflow = page.evaluate("() => window.app.graph.serialize()")
            page.keyboard.press("Escape")
            page.evaluate("""() => {
                const g = window.app.graph, c = window.app.canvas;
                const clipNode = g.getNodeById(2), condNode = g.getNodeById(5);
                for (const n of g._nodes) if (n !== clipNode && n !== condNode) n.pos = [n.pos[0] + 1600, n.pos[1]];
                clipNode.pos = [40, 40]; condNode.pos = [520, 40];
                clipNode.setSize([440, Math.max(clipNode.size[1], 520)]);
                condNode.setSize([460, Math.max(condNode.size[1], 560)]);
                c.ds.scale = 1.0; c.ds.offset = [60, 60];
                c.setDirty(true, true);
            }""")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "comfyui-heatmap.png"))
        finally:
            browser.close()
    (ARTIFACTS / "comfyui-workflow.json").write_text(json.dumps(workflow, indent=1))
    expected = ["a", "naked", "woman", "on", "a", "beach", ",", "photo"]
    conditioning_words = [w for w, _, _ in state["5"][0]["heatmap"][0]["words"]]
    assert conditioning_words == expected
    pushed_words = [w for w, _, _ in state["2"][0]["heatmap"][0]["words"]]  # from the CLIP patch's push
    assert pushed_words == expected
    for word in expected:
        assert word in drawn

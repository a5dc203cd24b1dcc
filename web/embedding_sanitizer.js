// Embedding Sanitizer: token heatmap drawn inside the sanitizer nodes.
// Data arrives three ways: the Sanitize Conditioning node's `ui.es_heatmap` (onExecuted),
// "embedding_sanitizer.heatmap" events pushed by the CLIP patch whenever a prompt is encoded, and the live
// preview (POST /embedding_sanitizer/preview) that re-scores the prompt when a setting or the prompt text
// changes, without queueing the graph.
// Each chip shows its word and harm score (fill colour); its edit weight at the current intensity is the
// outline and the bar under the word (no outline, no bar: not edited).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPES = ["EmbeddingSanitizerCLIP", "EmbeddingSanitizerConditioning"];
const EVENT = "embedding_sanitizer.heatmap";
const CALIBRATE_NODE = "EmbeddingSanitizerCalibrate";
const PREVIEW_ROUTE = "/embedding_sanitizer/preview";
const WIDGET = "es_heatmap";
const PROMPT_WIDGETS = ["text", "text_g", "text_l", "clip_l", "t5xxl", "prompt"];
const DEBOUNCE_MS = 350;
const POLL_MS = 250;
const BUSY_RETRY_MS = 1000;
const MAX_TEXTS = 8;

// The Calibrate node shows the saved file name(s) and the calibration quality (its `ui.text`) under its inputs.
function addCalibrationText(nodeType) {
  const created = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const result = created?.apply(this, arguments);
    const el = document.createElement("div");
    el.className = "es-calibration";
    el.style.cssText = "font:12px system-ui,sans-serif;white-space:pre-wrap;overflow:auto;max-height:160px;" +
      "padding:4px;opacity:0.85";
    el.textContent = "Run the node to calibrate; the file and its quality appear here.";
    this.esCalibrationEl = el;
    this.addDOMWidget("es_calibration", "es_calibration", el, { serialize: false, hideOnZoom: false });
    return result;
  };
  const executed = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (output) {
    executed?.apply(this, arguments);
    const text = output?.text;
    if (this.esCalibrationEl && Array.isArray(text)) this.esCalibrationEl.textContent = text.join("\n");
  };
}
const MAX_ENTRIES = 4;
// Same colour ramp as embedding_sanitizer/heatmap/colors.py (score_color).
const STOPS = [
  [0.0, [236, 236, 236]], [0.25, [255, 232, 150]], [0.5, [253, 184, 76]],
  [0.75, [241, 112, 46]], [1.0, [211, 36, 40]],
];

// The edit mark (outline and bar), as the PNG's ring (embedding_sanitizer/heatmap/colors.py EDIT_COLOR).
const EDIT = "rgb(88,44,160)";

function scoreColor(score) {
  if (typeof score !== "number" || Number.isNaN(score)) return [200, 200, 200];
  const s = Math.min(1, Math.max(0, score));
  for (let i = 1; i < STOPS.length; i++) {
    const [t0, c0] = STOPS[i - 1];
    const [t1, c1] = STOPS[i];
    if (s <= t1) {
      const f = (s - t0) / (t1 - t0);
      return c0.map((a, k) => Math.round(a + (c1[k] - a) * f));
    }
  }
  return STOPS[STOPS.length - 1][1];
}

function textColor(rgb) {
  const lum = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255;
  return lum > 0.55 ? "#1a1a1a" : "#ffffff";
}

function el(tag, className, text, css) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  if (css) e.style.cssText = css;
  return e;
}

function chip(word, score, flagged, edit) {
  const bg = scoreColor(score);
  const weight = Math.max(0, Number(edit) || 0);
  const edited = weight > 0;
  const c = el("span", "es-word" + (edited ? " es-edited" : "") + (flagged ? " es-flagged" : ""), undefined,
    `background:rgb(${bg.join(",")});color:${textColor(bg)};padding:1px 4px 2px 4px;margin:2px;` +
    "border-radius:4px;display:inline-flex;flex-direction:column;align-items:center;line-height:1.2;" +
    "position:relative;vertical-align:top;" +
    (edited ? `outline:${1 + Math.round(Math.min(1, weight) * 2)}px solid ${EDIT};`
      : "outline:1px dashed transparent;"));
  c.dataset.word = word;
  c.dataset.score = String(score);
  c.dataset.edit = String(weight);
  c.dataset.flagged = flagged ? "1" : "0";
  const pct = Math.round(Math.min(1, weight) * 100);
  c.title = `harm score ${Number(score).toFixed(2)}` + (flagged ? ", flagged by the detector" : "") +
    (edited ? `; edited at this intensity (edit weight ${weight.toFixed(2)}: about ${pct}% of the concept removed)`
      : "; not edited at this intensity");
  c.appendChild(el("span", "es-word-text", word));
  c.appendChild(el("span", "es-score", Number(score).toFixed(2), "font-size:9px;opacity:0.8"));
  const bar = el("span", "es-edit-bar", undefined,
    `display:block;height:3px;width:${edited ? Math.max(8, pct) : 0}%;background:${EDIT};border-radius:2px`);
  c.appendChild(bar);
  return c;
}

function listBlock(className, title, items, colour) {
  const box = el("div", className, undefined, `font-size:10px;margin:2px 0;color:${colour}`);
  box.appendChild(el("div", undefined, title, "font-weight:600"));
  for (const item of items) box.appendChild(el("div", "es-line", "• " + item, "white-space:normal"));
  return box;
}

function render(node) {
  const root = node.esHeatmapEl;
  if (!root) return;
  root.replaceChildren();
  const entries = node.esEntries || [];
  const status = node.esStatus;
  if (!entries.length) {
    root.appendChild(el("div", "es-empty", "Run the graph to see the token heatmap; after one run, the slider " +
      "and the prompt text re-score it live.", "opacity:0.6"));
  }
  for (const entry of entries) {
    for (const stream of entry.heatmap || []) {
      const row = el("div", "es-heatmap-row", undefined, "display:flex;flex-wrap:wrap;align-items:flex-start");
      row.dataset.stream = stream.stream;
      row.appendChild(el("span", "es-stream", stream.stream + ":", "opacity:0.7;margin:4px 4px 0 0;font-size:10px"));
      const edits = stream.edits || [];
      (stream.words || []).forEach(([word, score, flagged], i) => {
        // Older payloads had no `edits`: the flag was the only mark (never shown as an edit).
        row.appendChild(chip(word, score, flagged, edits[i] ?? 0));
      });
      root.appendChild(row);
    }
    const head = [];
    if (typeof entry.intensity === "number") head.push(`intensity ${entry.intensity.toFixed(2)}`);
    if (entry.preview) head.push("live preview");
    const text = (head.length ? head.join(", ") + ": " : "") + (entry.summary || "");
    if (text) root.appendChild(el("div", "es-summary", text, "opacity:0.8;font-size:10px;margin:2px 0;" +
      "white-space:normal"));
    if (entry.notes?.length) root.appendChild(listBlock("es-notes", "Notes", entry.notes, "#33415c"));
    if (entry.not_covered?.length) {
      root.appendChild(listBlock("es-not-covered", "Not sanitized (passed through)", entry.not_covered, "#8a3b00"));
    }
  }
  if (status) root.appendChild(el("div", "es-status", status, "font-size:10px;opacity:0.7;margin-top:2px"));
  fit(node);
}

// The widget is as tall as its content; the node grows to fit it (it never shrinks a node the user made larger).
// Heights are layout pixels (offsetTop/offsetHeight ignore the canvas zoom); WIDGET_MARGIN is the room the
// frontend keeps around a DOM widget.
const WIDGET_MARGIN = 24;
function contentHeight(node) {
  const root = node.esHeatmapEl;
  if (!root) return 60;
  const last = root.lastElementChild;
  if (root.isConnected && root.offsetWidth > 0 && last) {
    return Math.max(root.scrollHeight, last.offsetTop + last.offsetHeight + 6) + WIDGET_MARGIN;
  }
  // not on screen yet: estimate from the chips (about 9 per line at the default width)
  const chips = root.querySelectorAll(".es-word").length;
  const lines = root.querySelectorAll(".es-line,.es-summary,.es-empty,.es-status,.es-stream").length;
  return 24 + Math.ceil(chips / 9) * 34 + lines * 16 + WIDGET_MARGIN;
}

function fit(node) {
  const want = contentHeight(node);
  node.esMinHeight = want;
  const grow = () => {
    if (!node.computeSize || !node.setSize) return;
    const min = node.computeSize();
    if (node.size[1] < min[1]) node.setSize([node.size[0], min[1]]);
    node.setDirtyCanvas?.(true, true);
  };
  grow();
  // measure again once the browser has laid the chips out at the node's width
  requestAnimationFrame(() => {
    const again = contentHeight(node);
    if (Math.abs(again - node.esMinHeight) > 2) {
      node.esMinHeight = again;
      grow();
    }
  });
}

function publish(node) {
  window.__embeddingSanitizer = window.__embeddingSanitizer || {};
  window.__embeddingSanitizer[String(node.id)] = node.esEntries;
}

function remember(node, payload, replace) {
  node.esEntries = replace ? [payload] : [...(node.esEntries || []), payload].slice(-MAX_ENTRIES);
  window.__embeddingSanitizerRuns = window.__embeddingSanitizerRuns || {};  // what the runs sent (not previews)
  window.__embeddingSanitizerRuns[String(node.id)] = node.esEntries;
  node.esStatus = "";
  // The run shows the current settings and texts: a preview waiting for it (busy) is no longer needed.
  node.esRuns = (node.esRuns || 0) + 1;
  node.esPending = null;
  node.esLastKey = previewKey(node);
  publish(node);
  render(node);
}

// --- live preview ------------------------------------------------------------------------------------------
function widgetValue(node, name) {
  const w = node?.widgets?.find((x) => x.name === name);
  return w ? w.value : undefined;
}

function linkById(graph, id) {
  return graph.getLink?.(id) ?? graph.links?.get?.(id) ?? graph.links?.[id];
}

function promptTexts(node) {
  const graph = node.graph || app.graph;
  const texts = [];
  const add = (n) => {
    for (const w of n?.widgets || []) {
      if (PROMPT_WIDGETS.includes(w.name) && typeof w.value === "string" && w.value.trim()) texts.push(w.value);
    }
  };
  if (node.comfyClass === "EmbeddingSanitizerConditioning" || node.type === "EmbeddingSanitizerConditioning") {
    const own = widgetValue(node, "text");
    if (typeof own === "string" && own.trim()) texts.push(own);
    else {
      const slot = node.inputs?.find((i) => i.name === "conditioning");
      const link = slot?.link != null ? linkById(graph, slot.link) : null;
      if (link) add(graph.getNodeById(link.origin_id));
    }
  } else {
    for (const id of node.outputs?.[0]?.links || []) {
      const link = linkById(graph, id);
      if (link) add(graph.getNodeById(link.target_id));
    }
  }
  return [...new Set(texts)].slice(0, MAX_TEXTS);
}

function settingsOf(node) {
  const out = {};
  for (const w of node.widgets || []) {
    if (w.name === WIDGET || w.name === "text" || w.value === undefined || typeof w.value === "object") continue;
    out[w.name] = w.value;
  }
  return out;
}

function previewKey(node) {
  return JSON.stringify({ node: String(node.id), texts: promptTexts(node), settings: settingsOf(node) });
}

async function sendPreview(node, request) {
  node.esInFlight = true;
  const runs = node.esRuns || 0;
  try {
    const response = await api.fetchApi(PREVIEW_ROUTE, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
    });
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    window.__embeddingSanitizerPreview = window.__embeddingSanitizerPreview || {};
    window.__embeddingSanitizerPreview[String(node.id)] = { status: response.status, body };
    if (body.busy) {  // a prompt is running: ask again later, unless that run brings this node's heatmap
      node.esStatus = "Live preview waits for the running prompt…";
      setTimeout(() => {
        if ((node.esRuns || 0) === runs) schedulePreview(node, true);
        else node.esStatus = "";
        render(node);
      }, BUSY_RETRY_MS);
    } else if (body.needs_run) {  // the node has not run yet: it does not know its CLIP
      node.esStatus = body.message;
    } else if (!response.ok) {
      node.esStatus = body.error || `Live preview failed (HTTP ${response.status})`;
    } else {
      node.esEntries = [body];
      node.esStatus = "";
      publish(node);
    }
  } catch (err) {
    node.esStatus = `Live preview failed: ${err}`;
  } finally {
    node.esInFlight = false;
    render(node);
  }
}

function schedulePreview(node, force) {
  const key = previewKey(node);
  const request = JSON.parse(key);
  if (!force && key === node.esLastKey) return;
  node.esLastKey = key;
  node.esDueAt = performance.now() + DEBOUNCE_MS;
  node.esPending = request;
}

function pollPreviews() {
  const graph = app.graph;
  if (!graph?._nodes) return;
  const now = performance.now();
  for (const node of graph._nodes) {
    if (!node.esHeatmapEl) continue;
    const key = previewKey(node);
    if (node.esLastKey === undefined) { node.esLastKey = key; continue; }  // the loaded state: nothing to redo
    if (key !== node.esLastKey) schedulePreview(node, false);
    if (node.esPending && !node.esInFlight && now >= node.esDueAt) {
      const request = node.esPending;
      node.esPending = null;
      sendPreview(node, request);
    }
  }
}

app.registerExtension({
  name: "embedding_sanitizer.heatmap",
  setup() {
    const fresh = new Set();
    api.addEventListener("execution_start", () => fresh.clear());
    api.addEventListener(EVENT, (event) => {
      const payload = event.detail || {};
      const node = app.graph?.getNodeById?.(Number(payload.node)) ?? app.graph?.getNodeById?.(payload.node);
      if (!node || !node.esHeatmapEl) return;
      const key = String(node.id);
      remember(node, payload, !fresh.has(key));
      fresh.add(key);
    });
    setInterval(pollPreviews, POLL_MS);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === CALIBRATE_NODE) {
      addCalibrationText(nodeType);
      return;
    }
    if (!NODE_TYPES.includes(nodeData.name)) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = created?.apply(this, arguments);
      const root = el("div", "es-heatmap", undefined,
        "font:12px system-ui,sans-serif;line-height:1.5;overflow:visible;padding:4px;background:#fff;" +
        "color:#222;border-radius:6px;box-sizing:border-box;position:relative");
      this.esHeatmapEl = root;
      const node = this;
      this.addDOMWidget(WIDGET, WIDGET, root, {
        serialize: false, hideOnZoom: false,
        getMinHeight: () => node.esMinHeight ?? 60,
      });
      render(this);
      return result;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      executed?.apply(this, arguments);
      const data = output?.es_heatmap;
      if (Array.isArray(data) && data.length) remember(this, data[0], true);
    };
  },
});

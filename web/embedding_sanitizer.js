// Embedding Sanitizer: token heatmap drawn inside the sanitizer nodes.
// Data arrives two ways: the Sanitize Conditioning node's `ui.es_heatmap` (onExecuted), and
// "embedding_sanitizer.heatmap" events pushed by the CLIP patch whenever a prompt is encoded.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPES = ["EmbeddingSanitizerCLIP", "EmbeddingSanitizerConditioning"];
const EVENT = "embedding_sanitizer.heatmap";
const CALIBRATE_NODE = "EmbeddingSanitizerCalibrate";

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
// Same colour ramp as embedding_sanitizer/heatmap.py (score_color).
const STOPS = [
  [0.0, [236, 236, 236]], [0.25, [255, 232, 150]], [0.5, [253, 184, 76]],
  [0.75, [241, 112, 46]], [1.0, [211, 36, 40]],
];

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

function render(node) {
  const root = node.esHeatmapEl;
  if (!root) return;
  root.replaceChildren();
  const entries = node.esEntries || [];
  if (!entries.length) {
    const empty = document.createElement("div");
    empty.textContent = "Run the graph to see the token heatmap.";
    empty.style.opacity = "0.6";
    root.appendChild(empty);
    return;
  }
  for (const entry of entries) {
    for (const stream of entry.heatmap || []) {
      const row = document.createElement("div");
      row.className = "es-heatmap-row";
      row.dataset.stream = stream.stream;
      const label = document.createElement("span");
      label.textContent = stream.stream + ":";
      label.style.cssText = "opacity:0.7;margin-right:4px;font-size:10px";
      row.appendChild(label);
      for (const [word, score, edited] of stream.words || []) {
        const chip = document.createElement("span");
        const bg = scoreColor(score);
        chip.className = "es-word" + (edited ? " es-edited" : "");
        chip.dataset.word = word;
        chip.dataset.score = String(score);
        chip.title = `harm score ${Number(score).toFixed(2)}${edited ? " (removed)" : ""}`;
        chip.textContent = word;
        chip.style.cssText = `background:rgb(${bg.join(",")});color:${textColor(bg)};` +
          "padding:1px 4px;margin:1px;border-radius:4px;display:inline-block;" +
          (edited ? "outline:2px solid #7a0010;" : "");
        row.appendChild(chip);
      }
      root.appendChild(row);
    }
    if (entry.summary) {
      const s = document.createElement("div");
      s.className = "es-summary";
      s.textContent = entry.summary;
      s.style.cssText = "opacity:0.75;font-size:10px;margin:2px 0 6px 0";
      root.appendChild(s);
    }
  }
  node.setDirtyCanvas?.(true, true);
}

function remember(node, payload, replace) {
  node.esEntries = replace ? [payload] : [...(node.esEntries || []), payload].slice(-MAX_ENTRIES);
  window.__embeddingSanitizer = window.__embeddingSanitizer || {};
  window.__embeddingSanitizer[String(node.id)] = node.esEntries;
  render(node);
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
      const el = document.createElement("div");
      el.className = "es-heatmap";
      el.style.cssText = "font:12px system-ui,sans-serif;line-height:1.7;overflow:auto;min-height:40px;" +
        "max-height:240px;padding:4px;background:#fff;color:#222;border-radius:6px";
      this.esHeatmapEl = el;
      this.addDOMWidget("es_heatmap", "es_heatmap", el, { serialize: false, hideOnZoom: false });
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

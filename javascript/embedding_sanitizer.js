// Embedding Sanitizer: live token heatmap under the prompt box, and the heatmap of the
// prompts actually used after each generation. Talks to the extension's routes
// (a1111/routes.py). Uses the webui's gradioApp/onUiLoaded/onAfterUiUpdate and `opts`.
(function () {
    "use strict";

    const SCORE_URL = "/embedding-sanitizer/v1/score";
    const LAST_URL = "/embedding-sanitizer/v1/last";
    const TABS = ["txt2img", "img2img"];
    const DELAY_MS = 350;
    const FIELDS = {
        enabled: "checkbox", preset: "text", mode: "text", intensity: "number", concepts: "text",
        weights: "text", detector: "text", eos_policy: "text", schedule: "text", sanitize_negative: "checkbox",
    };
    const timers = {};
    const sequence = {};
    const lastInfo = {};
    const lastReport = {};

    function app() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function liveEnabled() {
        return typeof opts === "undefined" || opts.embedding_sanitizer_live_heatmap !== false;
    }

    function fieldElement(tab, name) {
        return app().querySelector("#script_" + tab + "_embedding_sanitizer_" + name);
    }

    function readSettings(tab) {
        const settings = {};
        for (const [name, kind] of Object.entries(FIELDS)) {
            const root = fieldElement(tab, name);
            if (!root) continue;
            if (kind === "checkbox") {
                const box = root.querySelector("input[type=checkbox]");
                if (box) settings[name] = box.checked;
            } else if (kind === "number") {
                const input = root.querySelector("input[type=number]") || root.querySelector("input[type=range]");
                if (input && input.value !== "") settings[name] = parseFloat(input.value);
            } else {
                const input = root.querySelector("textarea") || root.querySelector("input");
                if (input) settings[name] = input.value;
            }
        }
        return settings;
    }

    function liveBox(tab) {
        let box = app().querySelector("#" + tab + "_es_live");
        if (box) return box;
        const prompt = app().querySelector("#" + tab + "_prompt");
        if (!prompt || !prompt.parentElement) return null;
        box = document.createElement("div");
        box.id = tab + "_es_live";
        box.className = "es-live";
        prompt.parentElement.insertBefore(box, prompt.nextSibling);
        return box;
    }

    function summary(body) {
        const edited = (body.words || []).filter((w) => w.weight > 0).length;
        const s = body.settings || {};
        if (!body.active) return "Embedding Sanitizer is off: scores only.";
        const strength = s.preset === "custom" ? "intensity " + s.intensity : "preset " + s.preset;
        const words = edited === 1 ? "1 word" : edited + " words";
        const whole = typeof body.prompt_score === "number"
            ? " Whole prompt: " + body.prompt_score.toFixed(2) + "." : "";
        return words + " will be sanitized (" + s.mode + ", " + strength + ")." + whole;
    }

    function render(box, body) {
        if (body.error) {
            box.innerHTML = "";
            const p = document.createElement("div");
            p.className = "es-live-error";
            p.textContent = "Embedding Sanitizer: " + body.error;
            box.appendChild(p);
            return;
        }
        if (!body.words || body.words.length === 0) {
            box.innerHTML = "";
            return;
        }
        // body.html is built server-side with every word HTML-escaped.
        box.innerHTML = body.html + '<div class="es-live-summary"></div>';
        box.querySelector(".es-live-summary").textContent = summary(body);
        (body.policy_notes || []).forEach((note) => {
            const n = document.createElement("div");
            n.className = "es-live-note";
            n.textContent = note;
            box.appendChild(n);
        });
    }

    async function scoreNow(tab) {
        const box = liveBox(tab);
        if (!box) return;
        if (!liveEnabled()) {
            box.innerHTML = "";
            return;
        }
        const textarea = app().querySelector("#" + tab + "_prompt textarea");
        const prompt = textarea ? textarea.value : "";
        const mine = (sequence[tab] = (sequence[tab] || 0) + 1);
        try {
            const response = await fetch(SCORE_URL, {
                method: "POST",
                headers: {"Content-Type": "application/json"},
                body: JSON.stringify({prompt: prompt, settings: readSettings(tab)}),
            });
            const body = await response.json();
            if (mine !== sequence[tab]) return; // a newer request was sent meanwhile
            if (body.busy) {
                schedule(tab, 1500);
                return;
            }
            if (!response.ok && !body.error) body.error = "HTTP " + response.status;
            render(box, body);
        } catch (err) {
            console.warn("Embedding Sanitizer: live heatmap request failed", err);
        }
    }

    function schedule(tab, delay) {
        clearTimeout(timers[tab]);
        timers[tab] = setTimeout(() => scoreNow(tab), delay === undefined ? DELAY_MS : delay);
    }

    async function refreshLast(tab) {
        const target = fieldElement(tab, "heatmap");
        if (!target) return;
        try {
            const response = await fetch(LAST_URL + "?tab=" + tab);
            const body = await response.json();
            if (!body.id || body.id === lastReport[tab]) return;
            lastReport[tab] = body.id;
            const parts = (body.prompts || []).map((item) => {
                const label = item.negative ? "Negative prompt" : "Prompt";
                return '<div class="es-last-item"><div class="es-last-label">' + label + "</div>" + item.html + "</div>";
            });
            target.innerHTML = parts.join("") || '<div class="es-heatmap-empty">Nothing was scored.</div>';
        } catch (err) {
            console.warn("Embedding Sanitizer: could not fetch the last heatmap", err);
        }
    }

    // The report held when the page loads belongs to an earlier generation (another page, the API):
    // remember its id so that only generations made after loading are shown.
    async function primeLast(tab) {
        try {
            const response = await fetch(LAST_URL + "?tab=" + tab);
            const body = await response.json();
            if (body.id && lastReport[tab] === undefined) lastReport[tab] = body.id;
        } catch (err) {
            console.warn("Embedding Sanitizer: could not fetch the last heatmap", err);
        }
    }

    function attach(tab) {
        const textarea = app().querySelector("#" + tab + "_prompt textarea");
        const accordion = fieldElement(tab, "accordion");
        if (!textarea || !accordion || textarea.dataset.esLive) return;
        textarea.dataset.esLive = "1";
        primeLast(tab);
        textarea.addEventListener("input", () => schedule(tab));
        for (const event of ["input", "change", "click", "keyup", "pointerup"]) {
            accordion.addEventListener(event, () => schedule(tab));
        }
        schedule(tab, 0);
    }

    onUiLoaded(() => TABS.forEach(attach));

    onAfterUiUpdate(() => {
        for (const tab of TABS) {
            attach(tab);
            const info = app().querySelector("#html_info_" + tab);
            const text = info ? info.textContent : "";
            if (text && text !== lastInfo[tab]) {
                lastInfo[tab] = text;
                refreshLast(tab);
            }
        }
    });
})();

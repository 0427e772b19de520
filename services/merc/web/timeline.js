// The conversation timeline: one lane per speaker, one stacked bar per utterance (its emotion
// distribution in fixed label colours), calibrated confidence, prediction set, modality weights and
// what each modality predicted alone, degraded and incongruence markers, and each speaker's mood
// (valence) line. The time axis fits the card's width (zoom and scroll for long calls); every bar
// is a button: click, Enter or Space opens its details, Escape closes them.
// Live (served by the gateway, merc.gateway.web): the stored timeline, then server-sent events.
// Static (`merc analyze --html`): the timelines embedded in the page, with what was said when the
// report carries it (merc.analyze.timeline.report; events and the live page never do). Same code for both.
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg"; // the SVG namespace name: an identifier, nothing is fetched
  // Fills only: several are under 3:1 on white (joy 1.7:1), so no text is ever drawn in them (timeline.css).
  var COLORS = { neutral: "#9aa5b1", joy: "#f4c20d", sadness: "#3b78d8", anger: "#d93025", fear: "#8e5bd1", disgust: "#3f9b3a", surprise: "#f08a24" };
  var MODALITY_COLORS = { text: "#455a64", audio: "#00796b", vision: "#c2185b" };
  var INCONGRUENT = 0.25; // incongruence at or above this is marked on the bar

  // Layout (px). GUTTER: the fixed column of speaker names and the mood scale, left of the scrolling chart.
  var GUTTER = 150, PAD = 8, RIGHT = 24, AXIS = 26;
  var LABEL_Y = 16, CONF_Y = 30, BAR_TOP = 38, BAR_H = 92;
  var WEIGHTS_Y = BAR_TOP + BAR_H + 5, WEIGHTS_H = 7, SET_Y = WEIGHTS_Y + WEIGHTS_H + 4, SET_BOX = 6;
  var MOOD_TOP = SET_Y + SET_BOX + 12, MOOD_H = 80, LANE = MOOD_TOP + MOOD_H + 10;
  // Bar widths the default zoom keeps a typical (median) utterance within; narrower means scrolling.
  var MIN_BAR = 14, MAX_BAR = 200, ZOOM_STEP = 1.5, MAX_ZOOM = 64;
  var TICKS_MS = [250, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000, 600000, 1200000, 1800000, 3600000];

  var data = JSON.parse(document.getElementById("merc-data").textContent);
  var LABELS = data.labels || Object.keys(COLORS);
  var $ = function (id) { return document.getElementById(id); };
  var views = []; // every drawn conversation: redrawn when the window's width changes

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }
  function html(name, attrs, text, parent) {
    var node = document.createElement(name);
    for (var k in attrs || {}) node.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (parent) parent.appendChild(node);
    return node;
  }
  // Through the CSSOM: the page's Content-Security-Policy allows no inline style attributes.
  function paint(node, color, width) {
    node.style.background = color;
    if (width) node.style.width = width;
    return node;
  }
  function place(node, top, height) {
    node.style.top = top + "px";
    if (height !== undefined) node.style.height = height + "px";
    return node;
  }
  function fmt(x, digits) { return Number(x).toFixed(digits === undefined ? 2 : digits); }
  function seconds(ms) { return (ms / 1000).toFixed(ms % 1000 ? 1 : 0) + " s"; }
  function clock(ms) {
    if (ms < 60000) return seconds(ms);
    var s = Math.round(ms / 1000);
    return Math.floor(s / 60) + ":" + ("0" + (s % 60)).slice(-2);
  }
  function clamp(x, lo, hi) { return Math.min(hi, Math.max(lo, x)); }
  function status(text, isError) { var s = $("status"); s.textContent = text || ""; s.className = isError ? "error" : ""; }

  // ---- one conversation ------------------------------------------------------------------------

  function View(conversation, container) {
    var self = this;
    this.conversation = conversation;
    this.utterances = {}; // sequence -> latest revision seen
    this.zoom = 1; // 1 = fit the card's width
    this.selected = null; // the sequence whose details are open
    this.section = html("section", { "class": "conversation", "data-conversation": conversation, "aria-label": "conversation " + conversation },
      null, container);
    var head = html("div", { "class": "head" }, null, this.section);
    html("h2", {}, conversation, head);
    this.meta = html("span", { "class": "meta" }, "", head);
    var bar = html("div", { "class": "zoom-bar", role: "group", "aria-label": "zoom the time axis" }, null, head);
    this.zoomText = html("span", { "aria-live": "polite" }, "", bar);
    [["−", "zoom out (−)", 1 / ZOOM_STEP], ["+", "zoom in (+)", ZOOM_STEP], ["fit", "fit to width (0)", 0]].forEach(function (z) {
      var b = html("button", { "class": "zoom", type: "button", "aria-label": z[1], title: z[1], "data-zoom": z[0] }, z[0], bar);
      b.addEventListener("click", function () { self.setZoom(z[2] ? self.zoom * z[2] : 1); });
    });
    this.chart = html("div", { "class": "chart" }, null, this.section);
    this.gutter = html("div", { "class": "gutter", "aria-hidden": "true" }, null, this.chart);
    this.gutter.style.width = GUTTER + "px";
    this.scroll = html("div", { "class": "scroll" }, null, this.chart);
    // + and - zoom wherever the focus is in this conversation (a bar, a zoom button).
    this.section.addEventListener("keydown", function (ev) {
      if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
      var factor = { "+": ZOOM_STEP, "=": ZOOM_STEP, "-": 1 / ZOOM_STEP, "_": 1 / ZOOM_STEP, "0": 0 }[ev.key];
      if (factor === undefined) return;
      ev.preventDefault();
      self.setZoom(factor ? self.zoom * factor : 1);
    });
    this.pending = false;
    this.width = 0;
    views.push(this);
  }

  // Revisions replace earlier ones; an older revision arriving late is ignored.
  View.prototype.upsert = function (u) {
    var seen = this.utterances[u.utterance];
    if (seen && seen.revision > u.revision) return;
    this.utterances[u.utterance] = u;
    this.redraw();
  };

  View.prototype.redraw = function () {
    var self = this;
    if (this.pending) return;
    this.pending = true;
    setTimeout(function () { self.pending = false; self.draw(); }, 30);
  };

  // Zooming keeps the middle of what is in view in the middle.
  View.prototype.setZoom = function (zoom) {
    zoom = clamp(zoom, 1, MAX_ZOOM);
    var s = this.scroll, centre = s.scrollWidth ? (s.scrollLeft + s.clientWidth / 2) / s.scrollWidth : 0;
    this.zoom = zoom;
    this.draw();
    s.scrollLeft = Math.max(0, centre * s.scrollWidth - s.clientWidth / 2);
  };

  View.prototype.draw = function () {
    var list = Object.keys(this.utterances).map(Number).sort(function (a, b) { return a - b; })
      .map(function (s) { return this.utterances[s]; }, this);
    var speakers = [];
    list.forEach(function (u) { if (speakers.indexOf(u.speaker) < 0) speakers.push(u.speaker); });
    var timed = list.length > 0 && list.every(function (u) { return u.end_ms > u.start_ms; });
    this.width = this.scroll.clientWidth;
    var avail = Math.max(this.width || 800, 200) - PAD - RIGHT;
    var at = placement(list, timed, avail, this.zoom);
    var width = Math.max(avail, at.extent) + PAD + RIGHT, height = Math.max(AXIS + speakers.length * LANE, AXIS + 40);
    var svg = el("svg", { "class": "timeline", width: width, height: height, role: "group",
      "aria-label": "emotion timeline of " + this.conversation + ": one button per utterance" });

    // Axis: seconds, or utterance numbers when the events carry no times.
    var axis = el("g", { "aria-hidden": "true" }, svg);
    el("line", { "class": "axis", x1: PAD, x2: width - RIGHT, y1: AXIS - 6, y2: AXIS - 6 }, axis);
    at.ticks.forEach(function (t) {
      el("line", { "class": "tick", x1: t.x, x2: t.x, y1: AXIS - 10, y2: height }, axis);
      el("text", { "class": "tick-label", x: t.x + 2, y: AXIS - 12 }, axis).textContent = t.label;
    });
    this.drawGutter(speakers, timed, height);

    var self = this;
    speakers.forEach(function (speaker, i) {
      var top = AXIS + i * LANE;
      var lane = el("g", { "class": "lane", "data-speaker": speaker, role: "group", "aria-label": speaker || "(no speaker)" }, svg);
      var back = el("g", { "aria-hidden": "true" }, lane);
      el("rect", { "class": "lane-bg", x: 0, y: top + 2, width: width, height: LANE - 4 }, back);
      var mine = list.filter(function (u) { return u.speaker === speaker; });
      drawMood(back, mine, at, top, width);
      mine.forEach(function (u) { self.drawUtterance(lane, u, at.x(u), at.w(u), top); });
    });

    // Redrawing replaces every bar: keep the keyboard focus and the selection where they were.
    var active = document.activeElement, focused = active && this.scroll.contains(active) ? active.getAttribute("data-seq") : null;
    this.scroll.textContent = "";
    this.scroll.appendChild(svg);
    if (this.selected !== null) {
      var sel = this.bar(this.selected);
      if (sel) sel.classList.add("selected");
    }
    if (focused !== null && this.bar(focused)) this.bar(focused).focus({ preventScroll: true });
    var revised = list.filter(function (u) { return u.revision > 0; }).length;
    this.meta.textContent = list.length + " utterance" + (list.length === 1 ? "" : "s") + " · " + speakers.length +
      " speaker" + (speakers.length === 1 ? "" : "s") + (revised ? " · " + revised + " revised" : "") +
      (list.length ? "" : " · waiting for events");
    this.zoomText.textContent = "zoom " + fmt(this.zoom, this.zoom % 1 ? 1 : 0) + "×";
    // Open details follow a new revision of their utterance (and only then: a rebuild would drop the focus in them).
    var current = shown && shown.view === this && this.utterances[shown.seq];
    if (current && current.revision !== shown.revision) details(this, current, false);
  };

  View.prototype.bar = function (seq) { return this.scroll.querySelector("svg .utt[data-seq='" + Number(seq) + "']"); };

  // Speaker names (cut with an ellipsis, the full name in the tooltip) and the mood scale, outside the scroll.
  View.prototype.drawGutter = function (speakers, timed, height) {
    var g = this.gutter;
    g.textContent = "";
    g.style.height = height + "px";
    place(html("span", { "class": "hint" }, timed ? "time" : "utterance #", g), 4).style.left = "6px";
    speakers.forEach(function (speaker, i) {
      var name = speaker || "(no speaker)";
      var head = place(html("div", { "class": "lane-head" }, null, g), AXIS + i * LANE + 2, LANE - 4);
      html("div", { "class": "lane-name", title: name }, name, head);
      var hint = function (text, y) { var h = place(html("span", { "class": "hint" }, text, head), y - 2 - 8); h.style.right = "6px"; return h; };
      hint("+1", MOOD_TOP + 4);
      hint("0", MOOD_TOP + MOOD_H / 2);
      hint("−1", MOOD_TOP + MOOD_H - 4);
      place(html("span", { "class": "hint" }, "mood (valence)", head), MOOD_TOP + MOOD_H / 2 - 10).style.left = "6px";
    });
  };

  View.prototype.drawUtterance = function (lane, u, x, w, top) {
    var incongruent = u.incongruence >= INCONGRUENT;
    var g = el("g", { "class": "utt" + (u.degraded ? " degraded" : "") + (incongruent ? " incongruent" : ""),
      "data-seq": u.utterance, "data-revision": u.revision, "data-label": u.label, tabindex: 0, role: "button",
      "aria-label": spoken(u), "aria-controls": "details" }, lane);
    el("title", {}, g).textContent = summary(u) + (typeof u.text === "string" && u.text ? "\n“" + u.text + "”" : "");
    // Stacked distribution, top label first so it sits on top.
    var y = top + BAR_TOP;
    order(u).forEach(function (label) {
      var h = (u.probs[label] || 0) * BAR_H;
      if (h <= 0) return;
      el("rect", { "class": "seg", "data-emotion": label, x: x, y: y, width: w, height: h, fill: COLORS[label] || "#ccc" }, g);
      y += h;
    });
    el("rect", { "class": "frame", x: x, y: top + BAR_TOP, width: w, height: BAR_H }, g);
    // The top label (a swatch of its colour, the name in dark text) and its calibrated confidence, where they fit.
    var labelWidth = 12 + 7 * String(u.label).length + (u.degraded ? 14 : 0);
    if (w >= labelWidth) {
      el("rect", { "class": "swatch", x: x, y: top + LABEL_Y - 9, width: 9, height: 9, fill: COLORS[u.label] || "#ccc" }, g);
      el("text", { "class": "label-text", x: x + 12, y: top + LABEL_Y }, g).textContent = u.label;
    }
    if (w >= 28) el("text", { "class": "conf-text", x: x, y: top + CONF_Y }, g).textContent = fmt(u.confidence);
    if (u.revision > 0 && w >= 58) el("text", { "class": "revision-mark", x: x + w, y: top + CONF_Y, "text-anchor": "end" }, g).textContent = "r" + u.revision;
    // Modality weights: one strip, each used modality's share of the width.
    var wx = x;
    u.modalities.forEach(function (m) {
      var ww = (u.weights[m] || 0) * w;
      el("rect", { "class": "weight", "data-modality": m, x: wx, y: top + WEIGHTS_Y, width: Math.max(ww, 0), height: WEIGHTS_H,
        fill: MODALITY_COLORS[m] || "#777" }, g);
      wx += ww;
    });
    // Prediction set: one small square per label in it (outlined: some colours are faint on the lane).
    u.prediction_set.forEach(function (label, k) {
      el("rect", { "class": "set", "data-emotion": label, x: x + k * (SET_BOX + 2), y: top + SET_Y, width: SET_BOX, height: SET_BOX,
        fill: COLORS[label] || "#ccc" }, g);
    });
    if (u.degraded) {
      var cx = x + w - 6, cy = top + LABEL_Y - 10;
      el("path", { "class": "degraded-mark", d: "M" + cx + " " + cy + " l6 11 h-12 z" }, g);
      el("text", { "class": "degraded-bang", x: cx, y: cy + 10, "text-anchor": "middle" }, g).textContent = "!";
    }
    if (incongruent) {
      // White under dark: whatever emotion colour is behind it, one of the two strokes stands out.
      var ring = { cx: x + w / 2, cy: top + BAR_TOP + BAR_H / 2, r: Math.min(4 + 6 * Math.min(u.incongruence, 1), Math.max(w / 2 - 2, 3)) };
      el("circle", Object.assign({ "class": "mark-halo" }, ring), g);
      el("circle", Object.assign({ "class": "incongruence-mark" }, ring), g);
    }
    // The focus ring: around the whole utterance, drawn last, white under dark (timeline.css).
    var box = { x: x - 3, y: top + 4, width: w + 6, height: SET_Y + SET_BOX + 3 - 4 };
    el("rect", Object.assign({ "class": "focus-ring halo", rx: 3 }, box), g);
    el("rect", Object.assign({ "class": "focus-ring ring", rx: 3 }, box), g);
    var self = this;
    var show = function () { details(self, u, true); };
    g.addEventListener("click", show);
    g.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); show(); } });
  };

  function order(u) {
    var rest = LABELS.filter(function (l) { return l !== u.label; });
    return [u.label].concat(rest);
  }

  // x position and width per utterance: by time when every utterance has one, else by sequence. Zoom 1
  // spreads the conversation over ``avail`` px, within a typical utterance's MIN_BAR..MAX_BAR.
  function placement(list, timed, avail, zoom) {
    if (!timed) {
      var maxSeq = list.reduce(function (m, u) { return Math.max(m, u.utterance); }, 0);
      var step = clamp(avail / (maxSeq + 1), 52, MAX_BAR) * zoom, width = Math.max(step * 0.75, 10);
      var every = Math.max(1, Math.ceil(60 / step));
      every = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000].filter(function (e) { return e >= every; })[0] || every;
      var ticks = list.filter(function (u) { return u.utterance % every === 0; }).map(function (u) { return { x: PAD + u.utterance * step, label: "#" + u.utterance }; });
      return { x: function (u) { return PAD + u.utterance * step; }, w: function () { return width; }, extent: (maxSeq + 1) * step, ticks: ticks };
    }
    var durations = list.map(function (u) { return u.end_ms - u.start_ms; }).sort(function (a, b) { return a - b; });
    var median = durations[Math.floor(durations.length / 2)] || 1000;
    var start = Math.min.apply(null, list.map(function (u) { return u.start_ms; }));
    var end = Math.max.apply(null, list.map(function (u) { return u.end_ms; }));
    var scale = clamp(avail / Math.max(end - start, 1), MIN_BAR / median, MAX_BAR / median) * zoom; // px per ms
    var tick = TICKS_MS.filter(function (s) { return s * scale >= 70; })[0] || 7200000;
    var t0 = Math.ceil(start / tick) * tick, out = [];
    for (var t = t0; t <= end; t += tick) out.push({ x: PAD + (t - start) * scale, label: clock(t) });
    return {
      x: function (u) { return PAD + (u.start_ms - start) * scale; },
      w: function (u) { return Math.max(6, (u.end_ms - u.start_ms) * scale - 2); },
      extent: (end - start) * scale,
      ticks: out
    };
  }

  function drawMood(lane, mine, at, top, width) {
    var mid = top + MOOD_TOP + MOOD_H / 2;
    el("rect", { "class": "mood-bg", x: PAD, y: top + MOOD_TOP, width: width - PAD - RIGHT, height: MOOD_H }, lane);
    [top + MOOD_TOP, top + MOOD_TOP + MOOD_H].forEach(function (yy) { el("line", { "class": "mood-grid", x1: PAD, x2: width - RIGHT, y1: yy, y2: yy }, lane); });
    el("line", { "class": "mood-zero", x1: PAD, x2: width - RIGHT, y1: mid, y2: mid }, lane);
    var points = mine.filter(function (u) { return u.mood && u.mood.speaker; }).map(function (u) {
      return [at.x(u) + at.w(u) / 2, mid - clamp(u.mood.speaker.valence, -1, 1) * (MOOD_H / 2 - 4)];
    });
    if (!points.length) return;
    el("polyline", { "class": "mood", points: points.map(function (p) { return fmt(p[0], 1) + "," + fmt(p[1], 1); }).join(" ") }, lane);
    points.forEach(function (p) { el("circle", { "class": "mood-dot", cx: p[0], cy: p[1], r: 3 }, lane); });
  }

  // What one modality predicted on its own (its calibrated posterior): [top label, its probability], or null.
  function alone(u, m) {
    var p = u.posteriors && u.posteriors[m];
    if (!p) return null;
    var top = LABELS.reduce(function (a, b) { return (p[b] || 0) > (p[a] || 0) ? b : a; });
    return [top, p[top] || 0];
  }

  function when(u) { return u.end_ms > u.start_ms ? seconds(u.start_ms) + "–" + seconds(u.end_ms) : ""; }

  // One line for a screen reader: the bar's accessible name.
  function spoken(u) {
    return "utterance " + u.utterance + ", " + (u.speaker || "no speaker") + (when(u) ? ", " + when(u) : "") + ": " + u.label +
      ", confidence " + fmt(u.confidence) + (u.degraded ? ", degraded" : "") +
      (u.incongruence >= INCONGRUENT ? ", modalities disagree (incongruence " + fmt(u.incongruence) + ")" : "") +
      (u.text_shift > 0 ? ", words unlike the training text" : "") +
      (u.revision ? ", revision " + u.revision : "");
  }

  function summary(u) {
    var lines = ["#" + u.utterance + " " + (u.speaker || "") + (when(u) ? " · " + when(u) : ""),
      u.label + " " + fmt(u.confidence) + " (calibrated)",
      "set {" + u.prediction_set.join(", ") + "} at " + Math.round(u.prediction_set_coverage * 100) + "% coverage",
      "modalities " + u.modalities.map(function (m) { return m + " " + fmt(u.weights[m]); }).join(", ") +
        (u.missing && u.missing.length ? " · missing " + u.missing.join(", ") : ""),
      "incongruence " + fmt(u.incongruence) + (u.degraded ? " · degraded" : "") + (u.revision ? " · revision " + u.revision : "")];
    var own = u.modalities.map(function (m) { var a = alone(u, m); return a ? m + " " + a[0] + " " + fmt(a[1]) : null; })
      .filter(Boolean);
    if (own.length) lines.push("alone: " + own.join(" · "));
    return lines.join("\n");
  }

  // ---- the details panel: one utterance, opened by click, Enter or Space; Escape or "Close" closes it --

  var shown = null; // { view, seq }: whose details are open

  function details(view, u, moveFocus) {
    views.forEach(function (v) {
      var old = v.selected !== null && v.bar(v.selected);
      if (old) old.classList.remove("selected");
      if (v !== view) v.selected = null;
    });
    view.selected = u.utterance;
    var g = view.bar(u.utterance);
    if (g) g.classList.add("selected");
    shown = { view: view, seq: u.utterance, revision: u.revision };
    var box = $("details");
    moveFocus = moveFocus || box.contains(document.activeElement);
    box.textContent = "";
    box.hidden = false;
    var head = html("div", { "class": "title" }, null, box);
    html("h2", { id: "details-title" }, view.conversation + " #" + u.utterance + " · " + (u.speaker || "(no speaker)"), head);
    var close = html("button", { "class": "link", type: "button", "aria-label": "close the details (Escape)" }, "close", head);
    close.addEventListener("click", closeDetails);
    // What was said: only a report made from the user's own files carries it (never the live page).
    if (typeof u.text === "string" && u.text) html("blockquote", { "class": "said", "aria-label": "what was said" }, u.text, box);
    var table = html("table", {}, null, box);
    function row(name, value, bar) {
      var tr = html("tr", {}, null, table);
      html("td", {}, name, tr);
      var td = html("td", {}, null, tr);
      if (bar) paint(html("span", { "class": "bar" }, null, td), bar.color, Math.round(bar.share * 120) + "px");
      html("span", {}, " " + value, td);
    }
    if (u.end_ms > u.start_ms) row("time", seconds(u.start_ms) + " – " + seconds(u.end_ms));
    row("emotion", u.label + " (confidence " + fmt(u.confidence) + ")");
    LABELS.forEach(function (l) { row(l, fmt(u.probs[l] || 0, 3), { share: u.probs[l] || 0, color: COLORS[l] }); });
    row("prediction set", "{" + u.prediction_set.join(", ") + "} · " + Math.round(u.prediction_set_coverage * 100) + "% coverage");
    row("sentiment", u.sentiment);
    u.modalities.forEach(function (m) { row("weight " + m, fmt(u.weights[m]), { share: u.weights[m] || 0, color: MODALITY_COLORS[m] }); });
    u.modalities.forEach(function (m) {
      var a = alone(u, m);
      if (a) row(m + " alone", a[0] + " " + fmt(a[1]) + " (calibrated)", { share: a[1], color: COLORS[a[0]] });
    });
    row("missing", (u.missing && u.missing.length) ? u.missing.join(", ") : "none");
    row("degraded", u.degraded ? "yes" : "no");
    row("incongruence", fmt(u.incongruence));
    // Words unlike the text the model learned from lose part of their say (merc.pipeline.text_shift).
    if (u.text_shift > 0) row("words unlike training text", Math.round(u.text_shift * 100) + "% of their say taken away");
    if (u.mood && u.mood.speaker) row("speaker mood", "valence " + fmt(u.mood.speaker.valence) + " · arousal " + fmt(u.mood.speaker.arousal));
    if (u.mood && u.mood.conversation) row("conversation mood", "valence " + fmt(u.mood.conversation.valence) + " · arousal " + fmt(u.mood.conversation.arousal));
    row("revision", u.revision);
    // Focus moves into the panel (a screen reader reads its title); Escape brings it back to the bar.
    if (moveFocus) box.focus();
  }

  function closeDetails() {
    var box = $("details");
    if (box.hidden) return;
    box.hidden = true;
    var back = shown && shown.view.bar(shown.seq);
    if (shown) {
      shown.view.selected = null;
      if (back) back.classList.remove("selected");
    }
    shown = null;
    if (back) back.focus();
  }

  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") closeDetails(); });

  // A wider or narrower window: the time axis follows the card's width.
  var resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () {
      views.forEach(function (v) { if (v.section.isConnected && v.scroll.clientWidth !== v.width) v.draw(); });
    }, 100);
  });

  function legend() {
    var box = $("legend");
    var emotions = html("span", { "class": "group" }, null, box);
    LABELS.forEach(function (l) {
      var item = html("span", {}, null, emotions);
      paint(html("span", { "class": "swatch" }, null, item), COLORS[l]);
      item.appendChild(document.createTextNode(l));
    });
    var mods = html("span", { "class": "group" }, null, box);
    Object.keys(MODALITY_COLORS).forEach(function (m) {
      var item = html("span", {}, null, mods);
      paint(html("span", { "class": "swatch" }, null, item), MODALITY_COLORS[m]);
      item.appendChild(document.createTextNode(m + " weight"));
    });
    html("span", {}, "bar = calibrated distribution (top label first, confidence above) · squares = prediction set · " +
      "▲! degraded · ○ incongruent modalities · line = speaker valence · click a bar, or Tab to it and press Enter, for details · " +
      "+ / − zoom the time axis", box);
  }

  // ---- static: the report of `merc analyze --html` ----------------------------------------------

  function runStatic() {
    document.body.classList.add("static");
    if (data.title) document.title = "MERC · " + data.title;
    var timelines = data.timelines || [];
    timelines.forEach(function (t) {
      var view = new View(t.conversation, $("timelines"));
      t.utterances.forEach(function (u) { view.upsert(u); });
      view.draw();
    });
    status(timelines.length + " conversation" + (timelines.length === 1 ? "" : "s") +
      (data.failed_lines ? " · " + data.failed_lines + " manifest line(s) produced no event" : ""));
  }

  // ---- live: the gateway's API and event stream ------------------------------------------------

  var live = { key: "", view: null, source: null, conversation: null, listed: false };

  function apiKey() { return live.key; }

  function fetchJSON(path) {
    var headers = {};
    if (apiKey()) headers["x-api-key"] = apiKey();
    return fetch(path, { headers: headers, cache: "no-store", credentials: "omit" }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) { return { status: r.status, body: body }; });
    });
  }

  function needKey(message) {
    $("key-field").hidden = false;
    status(message || "this gateway needs an API key", true);
  }

  function refreshRecent() {
    return fetchJSON("api/conversations").then(function (r) {
      if (r.status === 401) { needKey(); return; }
      if (r.status !== 200) return;
      var nav = $("recent"), list = $("recent-ids");
      nav.textContent = "";
      list.textContent = "";
      var items = r.body.conversations || [];
      live.listed = items.some(function (c) { return c.conversation === live.conversation; });
      html("span", {}, items.length ? "recent:" : "no conversations seen by this gateway yet", nav);
      items.forEach(function (c) {
        var a = html("a", { href: "#c=" + encodeURIComponent(c.conversation), "data-conversation": c.conversation }, c.conversation, nav);
        if (c.conversation === live.conversation) a.className = "current";
        html("option", { value: c.conversation }, null, list);
      });
    }).catch(function () { /* the next refresh will tell */ });
  }

  function open(conversation) {
    if (!conversation) return;
    if (live.source) { live.source.close(); live.source = null; }
    live.conversation = conversation;
    $("conversation").value = conversation;
    $("timelines").textContent = "";
    closeDetails();
    views.length = 0;
    live.view = new View(conversation, $("timelines"));
    live.view.draw();
    if (location.hash !== "#c=" + encodeURIComponent(conversation)) history.replaceState(null, "", "#c=" + encodeURIComponent(conversation));
    follow(conversation);
    refreshRecent();
  }

  // Stream first, then the stored timeline: whatever arrives in between is in one or the other.
  function follow(conversation) {
    var url = "api/conversations/" + encodeURIComponent(conversation) + "/events" + (apiKey() ? "?key=" + encodeURIComponent(apiKey()) : "");
    var source = new EventSource(url);
    live.source = source;
    var view = live.view;
    source.onopen = function () { status("live: following " + conversation); load(conversation, view); };
    source.onmessage = function (ev) {
      if (live.source !== source) return;
      view.upsert(JSON.parse(ev.data));
      if (!live.listed) { live.listed = true; refreshRecent(); } // a new conversation: into the recent list
      status("live: following " + conversation + " · last event " + new Date().toLocaleTimeString());
    };
    source.addEventListener("idle", function () {
      source.close();
      if (live.source !== source) return;
      live.source = null;
      status("paused: no event for a while. ");
      var resume = html("button", { "class": "link", type: "button" }, "Resume live updates", $("status"));
      resume.addEventListener("click", function () { follow(conversation); });
    });
    source.onerror = function () {
      if (live.source !== source) return;
      if (source.readyState === EventSource.CLOSED) {
        // A refused stream (401, 503) is not retried by the browser: find out why.
        fetchJSON("api/conversations").then(function (r) {
          if (r.status === 401) needKey("the API key was refused"); else status("event stream closed; reopen the conversation to retry", true);
        });
      } else {
        status("reconnecting…");
      }
    };
  }

  function load(conversation, view) {
    fetchJSON("api/conversations/" + encodeURIComponent(conversation)).then(function (r) {
      if (view !== live.view) return;
      if (r.status === 200) (r.body.utterances || []).forEach(function (u) { view.upsert(u); });
      else if (r.status === 404) status("live: following " + conversation + " · nothing stored yet, waiting for events");
      else if (r.status === 401) needKey("the API key was refused");
      else status((r.body && r.body.error) || "could not load the conversation (" + r.status + ")", true);
    });
  }

  function runLive() {
    try { live.key = sessionStorage.getItem("merc.key") || ""; } catch (e) { live.key = ""; }
    if (data.auth) $("key-field").hidden = false;
    $("key").value = live.key;
    $("pick").addEventListener("submit", function (ev) {
      ev.preventDefault();
      live.key = $("key").value.trim();
      try { sessionStorage.setItem("merc.key", live.key); } catch (e) { /* private mode */ }
      open($("conversation").value.trim());
    });
    window.addEventListener("hashchange", fromHash);
    refreshRecent();
    setInterval(refreshRecent, 10000);
    if (!fromHash()) status(data.auth ? "enter your API key and a conversation id" : "pick a conversation");
  }

  function fromHash() {
    var m = /^#c=(.+)$/.exec(location.hash);
    if (!m) return false;
    var conversation = decodeURIComponent(m[1]);
    if (conversation !== live.conversation) open(conversation);
    return true;
  }

  legend();
  if (data.mode === "static") runStatic(); else runLive();
})();

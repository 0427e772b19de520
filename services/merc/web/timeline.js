// The conversation timeline: one lane per speaker, one stacked bar per utterance (its emotion
// distribution in fixed label colours), calibrated confidence, prediction set, modality weights and
// what each modality predicted alone, degraded and incongruence markers, and each speaker's mood
// (valence) line.
// Live (served by the gateway, merc.gateway.web): the stored timeline, then server-sent events.
// Static (`merc analyze --html`): the timelines embedded in the page. Same code for both.
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg"; // the SVG namespace name: an identifier, nothing is fetched
  var COLORS = { neutral: "#9aa5b1", joy: "#f4c20d", sadness: "#3b78d8", anger: "#d93025", fear: "#8e5bd1", disgust: "#3f9b3a", surprise: "#f08a24" };
  var MODALITY_COLORS = { text: "#455a64", audio: "#00897b", vision: "#c2185b" };
  var INCONGRUENT = 0.25; // incongruence at or above this is marked on the bar

  // Layout (px).
  var LEFT = 104, RIGHT = 24, AXIS = 26, LANE = 214, BAR_TOP = 26, BAR_H = 104;
  var WEIGHTS_Y = BAR_TOP + BAR_H + 4, WEIGHTS_H = 7, SET_Y = WEIGHTS_Y + WEIGHTS_H + 4, SET_BOX = 5;
  var MOOD_TOP = SET_Y + SET_BOX + 8, MOOD_H = 52;

  var data = JSON.parse(document.getElementById("merc-data").textContent);
  var LABELS = data.labels || Object.keys(COLORS);
  var $ = function (id) { return document.getElementById(id); };

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
  function fmt(x, digits) { return Number(x).toFixed(digits === undefined ? 2 : digits); }
  function seconds(ms) { return (ms / 1000).toFixed(ms % 1000 ? 1 : 0) + " s"; }
  function status(text, isError) { var s = $("status"); s.textContent = text || ""; s.className = isError ? "error" : ""; }

  // ---- one conversation ------------------------------------------------------------------------

  function View(conversation, container) {
    this.conversation = conversation;
    this.utterances = {}; // sequence -> latest revision seen
    this.section = html("section", { "class": "conversation", "data-conversation": conversation }, null, container);
    html("h2", {}, conversation, this.section);
    this.meta = html("div", { "class": "meta" }, "", this.section);
    this.scroll = html("div", { "class": "scroll" }, null, this.section);
    this.pending = false;
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

  View.prototype.draw = function () {
    var list = Object.keys(this.utterances).map(Number).sort(function (a, b) { return a - b; })
      .map(function (s) { return this.utterances[s]; }, this);
    var speakers = [];
    list.forEach(function (u) { if (speakers.indexOf(u.speaker) < 0) speakers.push(u.speaker); });
    var timed = list.length > 0 && list.every(function (u) { return u.end_ms > u.start_ms; });
    var place = placement(list, timed);
    var width = LEFT + place.extent + RIGHT, height = AXIS + speakers.length * LANE;
    var svg = el("svg", { "class": "timeline", width: width, height: Math.max(height, AXIS + 40), role: "img",
      "aria-label": "emotion timeline of " + this.conversation });

    // Axis: seconds, or utterance numbers when the events carry no times.
    el("line", { "class": "axis", x1: LEFT, x2: width - RIGHT, y1: AXIS - 6, y2: AXIS - 6 }, svg);
    place.ticks.forEach(function (t) {
      el("line", { "class": "tick", x1: t.x, x2: t.x, y1: AXIS - 10, y2: height }, svg);
      el("text", { "class": "tick-label", x: t.x + 2, y: AXIS - 12 }, svg).textContent = t.label;
    });
    el("text", { "class": "hint", x: 4, y: AXIS - 12 }, svg).textContent = timed ? "time" : "utterance #";

    var self = this;
    speakers.forEach(function (speaker, i) {
      var top = AXIS + i * LANE;
      var lane = el("g", { "class": "lane", "data-speaker": speaker }, svg);
      el("rect", { "class": "lane-bg", x: 0, y: top + 2, width: width, height: LANE - 4 }, lane);
      el("text", { "class": "lane-name", x: 6, y: top + 18 }, lane).textContent = speaker || "(no speaker)";
      el("text", { "class": "hint", x: 6, y: top + MOOD_TOP + MOOD_H / 2 + 3 }, lane).textContent = "mood (valence)";
      el("text", { "class": "hint", x: LEFT - 16, y: top + MOOD_TOP + 8 }, lane).textContent = "+1";
      el("text", { "class": "hint", x: LEFT - 16, y: top + MOOD_TOP + MOOD_H }, lane).textContent = "−1";
      var mine = list.filter(function (u) { return u.speaker === speaker; });
      mine.forEach(function (u) { self.drawUtterance(lane, u, place.x(u), place.w(u), top); });
      drawMood(lane, mine, place, top, width);
    });

    this.scroll.textContent = "";
    this.scroll.appendChild(svg);
    var revised = list.filter(function (u) { return u.revision > 0; }).length;
    this.meta.textContent = list.length + " utterance" + (list.length === 1 ? "" : "s") + " · " + speakers.length +
      " speaker" + (speakers.length === 1 ? "" : "s") + (revised ? " · " + revised + " revised" : "") +
      (list.length ? "" : " · waiting for events");
  };

  View.prototype.drawUtterance = function (lane, u, x, w, top) {
    var g = el("g", { "class": "utt" + (u.degraded ? " degraded" : "") + (u.incongruence >= INCONGRUENT ? " incongruent" : ""),
      "data-seq": u.utterance, "data-revision": u.revision, "data-label": u.label, tabindex: 0 }, lane);
    el("title", {}, g).textContent = summary(u);
    // Stacked distribution, top label first so it sits on top.
    var y = top + BAR_TOP;
    order(u).forEach(function (label) {
      var h = (u.probs[label] || 0) * BAR_H;
      if (h <= 0) return;
      el("rect", { "class": "seg", "data-emotion": label, x: x, y: y, width: w, height: h, fill: COLORS[label] || "#ccc" }, g);
      y += h;
    });
    el("rect", { "class": "frame", x: x, y: top + BAR_TOP, width: w, height: BAR_H }, g);
    // The top label and its calibrated confidence above the bar.
    el("text", { "class": "label-text", x: x, y: top + BAR_TOP - 12, fill: COLORS[u.label] || "#333" }, g).textContent = u.label;
    el("text", { "class": "conf-text", x: x, y: top + BAR_TOP - 2 }, g).textContent = fmt(u.confidence);
    // Modality weights: one strip, each used modality's share of the width.
    var wx = x;
    u.modalities.forEach(function (m) {
      var ww = (u.weights[m] || 0) * w;
      el("rect", { "class": "weight", "data-modality": m, x: wx, y: top + WEIGHTS_Y, width: Math.max(ww, 0), height: WEIGHTS_H,
        fill: MODALITY_COLORS[m] || "#777" }, g);
      wx += ww;
    });
    // Prediction set: one small square per label in it.
    u.prediction_set.forEach(function (label, k) {
      el("rect", { "class": "set", "data-emotion": label, x: x + k * (SET_BOX + 1), y: top + SET_Y, width: SET_BOX, height: SET_BOX,
        fill: COLORS[label] || "#ccc" }, g);
    });
    if (u.degraded) {
      var cx = x + w - 4, cy = top + BAR_TOP - 8;
      el("path", { "class": "degraded-mark", d: "M" + cx + " " + (cy - 5) + " l5 9 h-10 z" }, g);
    }
    if (u.incongruence >= INCONGRUENT) {
      el("circle", { "class": "incongruence-mark", cx: x + w / 2, cy: top + BAR_TOP + BAR_H / 2, r: 3 + 6 * Math.min(u.incongruence, 1) }, g);
    }
    if (u.revision > 0) el("text", { "class": "revision-mark", x: x + w + 1, y: top + BAR_TOP + 8 }, g).textContent = "r" + u.revision;
    var self = this;
    var show = function () { select(g); details(self.conversation, u); };
    g.addEventListener("click", show);
    g.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); show(); } });
  };

  function order(u) {
    var rest = LABELS.filter(function (l) { return l !== u.label; });
    return [u.label].concat(rest);
  }

  // x position and width per utterance: by time when every utterance has one, else by sequence.
  function placement(list, timed) {
    if (!timed) {
      var step = 52, width = 38;
      var maxSeq = list.reduce(function (m, u) { return Math.max(m, u.utterance); }, 0);
      var ticks = list.filter(function (u) { return u.utterance % 5 === 0; }).map(function (u) { return { x: LEFT + u.utterance * step, label: "#" + u.utterance }; });
      return { x: function (u) { return LEFT + u.utterance * step; }, w: function () { return width; }, extent: (maxSeq + 1) * step, ticks: ticks };
    }
    var durations = list.map(function (u) { return u.end_ms - u.start_ms; }).sort(function (a, b) { return a - b; });
    var median = durations[Math.floor(durations.length / 2)] || 1000;
    var scale = Math.min(0.2, Math.max(0.004, 44 / median)); // px per ms: a typical utterance ~44 px wide
    var start = Math.min.apply(null, list.map(function (u) { return u.start_ms; }));
    var end = Math.max.apply(null, list.map(function (u) { return u.end_ms; }));
    var every = [1000, 2000, 5000, 10000, 30000, 60000, 120000, 300000].filter(function (s) { return s * scale >= 60; })[0] || 600000;
    var t0 = Math.floor(start / every) * every, out = [];
    for (var t = t0; t <= end; t += every) out.push({ x: LEFT + (t - start) * scale, label: seconds(t) });
    return {
      x: function (u) { return LEFT + (u.start_ms - start) * scale; },
      w: function (u) { return Math.max(10, (u.end_ms - u.start_ms) * scale - 2); },
      extent: (end - start) * scale + 12,
      ticks: out.filter(function (tk) { return tk.x >= LEFT; })
    };
  }

  function drawMood(lane, mine, place, top, width) {
    var mid = top + MOOD_TOP + MOOD_H / 2;
    el("line", { "class": "mood-zero", x1: LEFT, x2: width - RIGHT, y1: mid, y2: mid }, lane);
    var points = mine.filter(function (u) { return u.mood && u.mood.speaker; }).map(function (u) {
      return [place.x(u) + place.w(u) / 2, mid - u.mood.speaker.valence * MOOD_H / 2];
    });
    if (!points.length) return;
    el("polyline", { "class": "mood", points: points.map(function (p) { return fmt(p[0], 1) + "," + fmt(p[1], 1); }).join(" ") }, lane);
    points.forEach(function (p) { el("circle", { "class": "mood-dot", cx: p[0], cy: p[1], r: 2.2 }, lane); });
  }

  // What one modality predicted on its own (its calibrated posterior): [top label, its probability], or null.
  function alone(u, m) {
    var p = u.posteriors && u.posteriors[m];
    if (!p) return null;
    var top = LABELS.reduce(function (a, b) { return (p[b] || 0) > (p[a] || 0) ? b : a; });
    return [top, p[top] || 0];
  }

  function summary(u) {
    var lines = ["#" + u.utterance + " " + (u.speaker || "") + (u.end_ms > u.start_ms ? " · " + seconds(u.start_ms) + "–" + seconds(u.end_ms) : ""),
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

  function select(g) {
    var all = document.querySelectorAll("svg .utt.selected");
    for (var i = 0; i < all.length; i++) all[i].classList.remove("selected");
    g.classList.add("selected");
  }

  function details(conversation, u) {
    var box = $("details");
    box.textContent = "";
    box.hidden = false;
    var head = html("div", {}, null, box);
    html("strong", {}, conversation + " #" + u.utterance + " · " + (u.speaker || "(no speaker)"), head);
    html("span", {}, "  ", head);
    var close = html("button", { "class": "link", type: "button" }, "close", head);
    close.addEventListener("click", function () { box.hidden = true; });
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
    if (u.mood && u.mood.speaker) row("speaker mood", "valence " + fmt(u.mood.speaker.valence) + " · arousal " + fmt(u.mood.speaker.arousal));
    if (u.mood && u.mood.conversation) row("conversation mood", "valence " + fmt(u.mood.conversation.valence) + " · arousal " + fmt(u.mood.conversation.arousal));
    row("revision", u.revision);
  }

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
      "▲ degraded · ○ incongruent modalities · line = speaker valence", box);
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
    $("details").hidden = true;
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

"use strict";
// posestream live view: one WebSocket (/ws) carries the video (binary JPEG messages, pulled with
// "ready" credits), the per-frame JSON records and the "hud" statistics. No external code.
(() => {
  const COLORS = ["#4fc3f7", "#ffb74d", "#aed581", "#f06292", "#ba68c8", "#fff176", "#4db6ac", "#e57373"];
  const CHART_FRAMES = 300;
  const token = new URLSearchParams(location.search).get("token");
  const $ = (id) => document.getElementById(id);
  const state = {
    ws: null, sources: [], view: "all", tiles: new Map(), shown: 0, records: 0, people: new Map(),
    series: new Map(), backoff: 500, hud: null,
  };

  function wsUrl() {
    const u = new URL("/ws", location.href);
    u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    u.search = token ? "?token=" + encodeURIComponent(token) : "";
    u.hash = "";
    return u.href;
  }

  function setStatus(text, cls) {
    const s = $("status");
    s.textContent = text;
    s.className = "status " + (cls || "");
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function shownSources() {
    if (state.view === "all") return state.sources.slice();
    const s = Number(state.view);
    return state.sources.includes(s) ? [s] : state.sources.slice(0, 1);
  }

  // ---------------------------------------------------------------- sources, switcher, tiles
  function setSources(list) {
    list = list.map(Number).sort((a, b) => a - b);
    if (list.join() === state.sources.join()) return;
    state.sources = list;
    buildSwitcher();
    layout();
  }

  function buildSwitcher() {
    const nav = $("switcher");
    nav.textContent = "";
    const options = state.sources.length > 1 ? ["all", ...state.sources.map(String)] : state.sources.map(String);
    for (const v of options) {
      const b = el("button", v === state.view || (state.sources.length === 1) ? "on" : "", v === "all" ? "grid" : "source " + v);
      b.type = "button";
      b.dataset.view = v;
      b.addEventListener("click", () => { state.view = v; buildSwitcher(); layout(); });
      nav.appendChild(b);
    }
  }

  function layout() {
    const box = $("videos");
    const want = shownSources();
    box.classList.toggle("grid", want.length > 1);
    for (const [sid, t] of state.tiles) {
      if (!want.includes(sid)) { t.root.remove(); state.tiles.delete(sid); }
    }
    for (const sid of want) {
      if (state.tiles.has(sid)) continue;
      const root = el("div", "tile");
      root.dataset.src = String(sid);
      const canvas = el("canvas");
      canvas.width = 640; canvas.height = 360;
      canvas.id = "video-" + sid;
      const label = el("div", "label", "source " + sid);
      root.append(canvas, label);
      box.appendChild(root);
      state.tiles.set(sid, { root, canvas, ctx: canvas.getContext("2d"), label });
    }
    const empty = $("empty");
    if (empty) empty.hidden = want.length > 0;
    subscribe();
  }

  function subscribe() {
    const ws = state.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "subscribe", sources: shownSources(), credits: 2 }));
    }
  }

  // ---------------------------------------------------------------- video
  async function onJpeg(buf) {
    const view = new DataView(buf);
    const n = view.getUint32(0);
    const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
    const sid = head.source_id;
    try {
      const bmp = await createImageBitmap(new Blob([new Uint8Array(buf, 4 + n)], { type: "image/jpeg" }));
      const t = state.tiles.get(sid);
      if (t) {
        if (t.canvas.width !== bmp.width || t.canvas.height !== bmp.height) {
          t.canvas.width = bmp.width; t.canvas.height = bmp.height;
        }
        t.ctx.drawImage(bmp, 0, 0);
        t.label.textContent = `source ${sid} · frame ${head.frame_id} · ${head.age_ms.toFixed(0)} ms`;
        state.shown += 1;
        $("hud-shown").textContent = String(state.shown);
      }
      bmp.close();
    } finally {
      const ws = state.ws;
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ready", source_id: sid }));
    }
  }

  // ---------------------------------------------------------------- HUD
  const fmt = (x, d = 1) => (x === null || x === undefined) ? "–" : Number(x).toFixed(d);

  function row(table, key, label, value, sid) {
    const tr = el("tr");
    const v = el("td", "", value);
    v.id = `hud-${sid}-${key}`;
    tr.append(el("td", "", label), v);
    table.appendChild(tr);
  }

  function onHud(h) {
    state.hud = h;
    setSources(Object.keys(h.sources));
    $("hud-viewers").textContent = `${h.viewers}/${h.max_viewers}`;
    $("hud-you-drops").textContent = String(h.you.frames_dropped);
    const box = $("hud-sources");
    box.textContent = "";
    for (const sid of shownSources()) {
      const s = h.sources[String(sid)];
      if (!s) continue;
      const title = el("h3", "", `source ${sid}` + (s.name ? ` — ${s.name}` : "") + (s.ended ? " (ended)" : ""));
      const t = el("table", "kv");
      t.dataset.src = String(sid);
      row(t, "fps", "fps", fmt(s.fps), sid);
      row(t, "frames_out", "frames out", String(s.frames_out), sid);
      row(t, "frames_dropped", "dropped upstream", String(s.frames_dropped), sid);
      row(t, "reconnects", "reconnects", String(s.reconnects), sid);
      row(t, "people", "people", String(state.people.get(sid) ?? "–"), sid);
      for (const [stage, ms] of Object.entries(s.latency_ms)) {
        if (stage === "capture_to_output") continue;
        row(t, "stage-" + stage, stage + " ms", fmt(ms, 2), sid);
      }
      row(t, "c2o", "capture → output ms", fmt(s.latency_ms.capture_to_output), sid);
      row(t, "c2o_p95", "  p95 (all run) ms", fmt(s.capture_to_output_ms.p95), sid);
      row(t, "viewer_drops", "viewer skips (all viewers)", String(s.viewer_drops), sid);
      box.append(title, t);
      addPoints(sid, s.recent);
    }
    drawChart();
  }

  function addPoints(sid, recent) {
    let s = state.series.get(sid);
    if (!s) { s = []; state.series.set(sid, s); }
    const last = s.length ? s[s.length - 1][0] : -Infinity;
    for (const [fid, ms] of recent) {
      if (fid > last) s.push([fid, ms]);
      else if (fid < last - CHART_FRAMES) { s.length = 0; s.push([fid, ms]); }  // counter restarted
    }
    const lo = s.length ? s[s.length - 1][0] - CHART_FRAMES : 0;
    while (s.length && s[0][0] < lo) s.shift();
  }

  function drawChart() {
    const c = $("chart");
    const ctx = c.getContext("2d");
    const W = c.width, H = c.height, padL = 52, padB = 22, padT = 10, padR = 10;
    ctx.clearRect(0, 0, W, H);
    const shown = shownSources().filter((sid) => (state.series.get(sid) || []).length);
    let ymax = 1, xmax = 0;
    for (const sid of shown) for (const [fid, ms] of state.series.get(sid)) { ymax = Math.max(ymax, ms); xmax = Math.max(xmax, fid); }
    const step = niceStep(ymax / 4);
    ymax = Math.ceil(ymax / step) * step;
    const xmin = xmax - CHART_FRAMES;
    const X = (fid) => padL + (fid - xmin) / CHART_FRAMES * (W - padL - padR);
    const Y = (ms) => H - padB - ms / ymax * (H - padB - padT);
    ctx.font = "20px system-ui, sans-serif";
    ctx.fillStyle = "#8a94a3";
    ctx.strokeStyle = "#2a313b";
    ctx.lineWidth = 1;
    for (let v = 0; v <= ymax + 1e-9; v += step) {
      ctx.beginPath(); ctx.moveTo(padL, Y(v)); ctx.lineTo(W - padR, Y(v)); ctx.stroke();
      ctx.fillText(v >= 10 ? v.toFixed(0) : v.toFixed(1), 4, Y(v) + 6);
    }
    ctx.lineWidth = 3;
    const legend = $("legend");
    legend.textContent = "";
    for (const sid of shown) {
      ctx.strokeStyle = COLORS[sid % COLORS.length];
      ctx.beginPath();
      state.series.get(sid).forEach(([fid, ms], i) => (i ? ctx.lineTo(X(fid), Y(ms)) : ctx.moveTo(X(fid), Y(ms))));
      ctx.stroke();
      const item = el("span");
      item.append(el("i", "c" + (sid % COLORS.length)), document.createTextNode("source " + sid));
      legend.appendChild(item);
    }
  }

  function niceStep(x) {
    const p = Math.pow(10, Math.floor(Math.log10(Math.max(x, 1e-3))));
    for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
    return 10 * p;
  }

  // ---------------------------------------------------------------- connection
  function connect() {
    setStatus("connecting…");
    const ws = new WebSocket(wsUrl());
    ws.binaryType = "arraybuffer";
    state.ws = ws;
    ws.onopen = () => { state.backoff = 500; setStatus("live", "ok"); };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") { onJpeg(ev.data); return; }
      const m = JSON.parse(ev.data);
      if (m.type === undefined) {            // a frame record (the JSONL schema)
        state.records += 1;
        state.people.set(m.source_id, m.people.length);
        if (state.records % 10 === 1) $("hud-records").textContent = String(state.records);
      } else if (m.type === "hello") {
        setSources(m.sources);
        subscribe();
      } else if (m.type === "hud") {
        $("hud-records").textContent = String(state.records);
        onHud(m);
      }
    };
    ws.onclose = (ev) => {
      state.ws = null;
      setStatus(ev.code === 1001 ? "server stopped; retrying…" : "disconnected; retrying…", "bad");
      setTimeout(connect, state.backoff);
      state.backoff = Math.min(state.backoff * 2, 5000);
    };
  }

  connect();
})();

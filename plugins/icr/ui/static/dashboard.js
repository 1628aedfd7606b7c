/* The "ICR installations" page: reads the plugin's own endpoints (relative URLs, so the page
 * works under any Airflow base URL) and draws them with the vendored Chart.js. */
(function () {
  "use strict";
  const PALETTE = ["#0b7285", "#e8590c", "#5f3dc4", "#2b8a3e", "#c2255c", "#1971c2", "#f08c00", "#495057", "#862e9c", "#087f5b"];
  const TOP = 8;  // series shown per breakdown; the rest are summed as "Other"
  const charts = {};
  const state = { first: null, last: null };
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

  async function getJSON(url) {
    const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!resp.ok) {
      let detail = resp.statusText;
      try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(`${resp.status}: ${detail}`);
    }
    return resp.json();
  }

  function dataUrl(chart, start, end, format) {
    const q = new URLSearchParams({ start, end });
    if (format) q.set("format", format);
    return `api/data/${chart}?${q}`;
  }

  function draw(name, config) {
    if (charts[name]) charts[name].destroy();
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false,
      interaction: { mode: "index", intersect: false }, plugins: { legend: { position: "bottom" } } }, config.options || {});
    charts[name] = new Chart($(`chart-${name}`), config);
  }

  const series = (label, data, i, extra) => Object.assign({ label, data, borderColor: PALETTE[i % PALETTE.length],
    backgroundColor: PALETTE[i % PALETTE.length], pointRadius: data.length > 60 ? 0 : 2, tension: 0.2 }, extra || {});

  /* rows [date, key, value] -> one dataset per key over `dates` (missing = 0), the TOP largest
   * on the last date, the others summed as "Other" (or left out: shares do not add up). */
  function breakdown(dates, rows, keyOf, valueOf, withOther = true) {
    const byKey = new Map();
    for (const r of rows) {
      const key = keyOf(r);
      if (!byKey.has(key)) byKey.set(key, new Map());
      byKey.get(key).set(r[0], valueOf(r));
    }
    const last = dates[dates.length - 1];
    const keys = [...byKey.keys()].sort((a, b) => ((byKey.get(b).get(last) || 0) - (byKey.get(a).get(last) || 0)) || String(a).localeCompare(String(b)));
    const shown = keys.slice(0, TOP), rest = keys.slice(TOP);
    const sets = shown.map((k, i) => series(k, dates.map((d) => byKey.get(k).get(d) || 0), i));
    if (rest.length && withOther) sets.push(series(`Other (${rest.length})`, dates.map((d) => rest.reduce((s, k) => s + (byKey.get(k).get(d) || 0), 0)), shown.length));
    return sets;
  }

  function render(data, start, end) {
    const active = data.active.rows;  // [snapshot_date, active]
    const dates = active.map((r) => r[0]);
    const changes = data.changes.rows;  // [snapshot_date, compared_to, new, removed, uninstalled, suspended]

    draw("active", { type: "line", data: { labels: dates, datasets: [series("Active installations", active.map((r) => r[1]), 0, { fill: true, backgroundColor: "rgba(11,114,133,0.12)" })] },
      options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: false } } } });
    draw("changes", { type: "bar", data: { labels: changes.map((r) => r[0]), datasets: [
      series("New", changes.map((r) => r[2]), 3), series("Removed", changes.map((r) => r[3]), 4)] },
      options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } } });
    // Stacked areas: the bands add up to the day's active installations.
    const stacked = { scales: { y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } };
    const area = (sets) => sets.map((s) => Object.assign(s, { fill: true, backgroundColor: s.borderColor + "99" }));
    draw("by_type", { type: "line", data: { labels: dates, datasets: area(breakdown(dates, data.by_type.rows, (r) => r[1] ?? "(none)", (r) => r[2])) },
      options: stacked });
    draw("by_country", { type: "line", data: { labels: dates, datasets: area(breakdown(dates, data.by_country.rows, (r) => r[1] ?? "(none)", (r) => r[2])) },
      options: stacked });
    // permissions rows: [snapshot_date, permission, access, installations, active] -> % of active
    draw("permissions", { type: "line", data: { labels: dates, datasets: breakdown(dates, data.permissions.rows, (r) => `${r[1]}: ${r[2]}`,
      (r) => (r[4] ? Math.round((1000 * r[3]) / r[4]) / 10 : 0), false) },
      options: { scales: { y: { beginAtZero: true, suggestedMax: 100, ticks: { callback: (v) => `${v}%` } } },
        plugins: { legend: { position: "bottom" }, tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${c.parsed.y}%` } } } } });

    renderRuns(data.runs);
    const lastActive = active.length ? active[active.length - 1][1] : null;
    $("kpi-active").textContent = fmt(lastActive);
    $("kpi-active-sub").textContent = active.length ? `on ${dates[dates.length - 1]}` + (active.length > 1 ? ` (${signed(lastActive - active[0][1])} since ${dates[0]})` : "") : "no snapshot in range";
    $("kpi-new").textContent = fmt(changes.reduce((s, r) => s + (r[2] || 0), 0));
    $("kpi-removed").textContent = fmt(changes.reduce((s, r) => s + (r[3] || 0), 0));
    for (const a of document.querySelectorAll("a.csv")) a.href = dataUrl(a.dataset.chart, start, end, "csv");
  }

  const signed = (n) => (n > 0 ? "+" : n < 0 ? "−" : "±") + Math.abs(n).toLocaleString("en-US");

  function renderRuns(runs) {
    const col = Object.fromEntries(runs.columns.map((c, i) => [c, i]));
    const body = document.querySelector("#runs tbody");
    body.replaceChildren();
    for (const r of runs.rows) {
      const tr = document.createElement("tr");
      const cells = [r[col.run_id], r[col.snapshot_date], r[col.status], r[col.snapshot_source] || "", (r[col.started_at] || "").replace("T", " ").slice(0, 19),
        r[col.duration_seconds] === null ? "" : `${r[col.duration_seconds]} s`, fmt(r[col.records_fetched]), fmt(r[col.inserted]),
        fmt(r[col.updated]), fmt(r[col.removed]), fmt(r[col.rejected]), fmt(r[col.active_after])];
      cells.forEach((v, i) => {
        const td = document.createElement("td");
        td.textContent = v;
        if (i === 2) { td.className = `status-${v}`; if (r[col.error]) td.title = r[col.error]; }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
    const latest = runs.rows[0];
    $("kpi-run").textContent = latest ? latest[col.status] : "none yet";
    $("kpi-run-sub").textContent = latest ? `snapshot ${latest[col.snapshot_date]} · started ${(latest[col.started_at] || "").replace("T", " ").slice(0, 16)} UTC` : "";
  }

  async function load(start, end) {
    $("status").className = "";
    $("status").textContent = `Loading ${start} … ${end}`;
    try {
      const names = ["active", "changes", "by_type", "by_country", "permissions", "runs"];
      const got = await Promise.all(names.map((n) => getJSON(dataUrl(n, start, end))));
      const data = Object.fromEntries(names.map((n, i) => [n, got[i]]));
      render(data, start, end);
      $("status").textContent = `Snapshot dates ${start} … ${end} (the warehouse holds ${state.first} … ${state.last})`;
      document.body.dataset.loaded = `${start}..${end}`;
    } catch (err) {
      $("status").className = "error";
      $("status").textContent = `Could not load the data: ${err.message}`;
    }
  }

  function preset(days) {
    if (!state.last) return;
    let start = state.first;
    if (days !== "all") {
      const d = new Date(`${state.last}T00:00:00Z`);
      d.setUTCDate(d.getUTCDate() - (Number(days) - 1));
      start = d.toISOString().slice(0, 10) < state.first ? state.first : d.toISOString().slice(0, 10);
    }
    $("start").value = start;
    $("end").value = state.last;
    load(start, state.last);
  }

  async function init() {
    let range;
    try {
      range = await getJSON("api/range");
    } catch (err) {
      $("status").className = "error";
      $("status").textContent = `Could not load the data: ${err.message}`;
      return;
    }
    $("warehouse").textContent = range.warehouse;
    if (!range.last) {
      $("status").textContent = "No snapshot yet: the charts fill after the first successful run of icr_installations_sync.";
      return;
    }
    Object.assign(state, { first: range.first, last: range.last });
    for (const input of [$("start"), $("end")]) { input.min = range.first; input.max = range.last; }
    $("start").value = range.start;
    $("end").value = range.end;
    $("range").addEventListener("submit", (e) => { e.preventDefault(); load($("start").value, $("end").value); });
    for (const b of document.querySelectorAll(".presets button")) b.addEventListener("click", () => preset(b.dataset.days));
    load(range.start, range.end);
  }

  init();
})();

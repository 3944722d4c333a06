// edgeway's dashboard: polls the runtime API and /metrics, draws what they say.
//
// Rules this file keeps (docs/operations.md, "Dashboard"):
// - The token comes from the URL fragment (#token=..., which the browser never sends) or the
//   form; it is kept in sessionStorage (this tab only) and removed from the address bar at once.
// - Everything inserted into the page is text (textContent, setAttribute): a server address or
//   an event message can hold anything a config or a client wrote.
// - A metric family that is absent shows "no data"; nothing here may throw out of a poll (a
//   section that fails shows why and the others go on).
// - Rates and quantiles come from two scrapes: the newest and the oldest kept within WINDOW_MS.
"use strict";

(() => {
  const POLL_MS = 1000;            // a killed server shows down within interval x fall + 1 s
  const WINDOW_MS = 10000;          // rates and p50/p99 over about the last 10 s
  const KEY = "edgeway.dashboard.token";
  const MAX_EVENTS = 100;
  const METRICS_RETRY = 20;         // polls between two tries of a /metrics that was 404

  let token = null;
  let timer = null;
  let polling = false;
  let eventsSince = 0;
  const events = [];                // oldest first
  const scrapes = [];               // {time, samples} within WINDOW_MS, oldest first
  const upstreamHistory = [];       // {time, requests: Map key -> count}
  const workerHistory = [];         // {time, requests: Map "index pid" -> count}
  let groupSize = 1;                // status.workers: above 1, /api/v1/workers is polled too
  let metricsMissing = 0;           // polls left before /metrics is tried again
  let dnsRuns = false;              // status.services has DNS: /api/v1/dns/records is asked too
  const $ = (id) => document.getElementById(id);

  class AuthError extends Error {}

  // ------------------------------------------------------------------ token

  function tokenFromFragment() {
    const match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!match) return null;
    // out of the address bar (and so out of history, bookmarks, screen shares) before anything else
    history.replaceState(null, "", location.pathname + location.search);
    try {
      return decodeURIComponent(match[1]) || null;
    } catch (e) {
      return null;
    }
  }

  function showLogin(why) {
    clearTimeout(timer);
    token = null;
    sessionStorage.removeItem(KEY);
    $("main").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-why").textContent = why || "";
    setConnection("auth", why ? "token refused" : "no token");
    $("token").focus();
  }

  function start(newToken) {
    token = newToken;
    sessionStorage.setItem(KEY, token);
    $("login").hidden = true;
    $("main").hidden = false;
    $("forget").hidden = false;
    poll();
  }

  // ------------------------------------------------------------------ requests

  async function request(path, options) {
    const init = Object.assign({cache: "no-store", credentials: "omit", redirect: "error"}, options || {});
    init.headers = Object.assign({"Authorization": "Bearer " + token}, init.headers || {});
    const response = await fetch(path, init);
    if (response.status === 401) throw new AuthError("the admin token was refused (401)");
    return response;
  }

  async function getJson(path) {
    const response = await request(path);
    const body = await response.json();
    if (!response.ok) throw new Error(path + ": " + response.status + " " + (body.error || ""));
    return body;
  }

  async function getMetrics() {
    if (metricsMissing > 0) {
      metricsMissing -= 1;
      return null;
    }
    const response = await request("/metrics");
    if (response.status === 404) {          // an edgeway without /metrics: everything "no data"
      metricsMissing = METRICS_RETRY;
      return null;
    }
    if (!response.ok) throw new Error("/metrics: " + response.status);
    return parseMetrics(await response.text());
  }

  // The policy records (dns.records); null when this edgeway serves no DNS (asked only when
  // the last status listed a DNS service, so that no 404 is ever logged by the browser)
  async function getRecords() {
    if (!dnsRuns) return null;
    const response = await request("/api/v1/dns/records");
    if (response.status === 404) return null;     // the dns: section went away in a reload
    const body = await response.json();
    if (!response.ok) throw new Error("/api/v1/dns/records: " + response.status + " " + (body.error || ""));
    return body;
  }

  // ------------------------------------------------------------------ polling

  async function poll() {
    clearTimeout(timer);
    if (polling || token === null) return;
    polling = true;
    const now = Date.now();
    const askWorkers = groupSize > 1;
    const [status, upstreams, news, metrics, records, workers] = await Promise.allSettled([
      getJson("/api/v1/status"),
      getJson("/api/v1/upstreams"),
      getJson("/api/v1/events?since=" + eventsSince),
      getMetrics(),
      getRecords(),
      askWorkers ? getJson("/api/v1/workers") : Promise.resolve(null),
    ]);
    polling = false;
    const results = [status, upstreams, news, metrics, records].concat(askWorkers ? [workers] : []);
    if (results.some((r) => r.status === "rejected" && r.reason instanceof AuthError)) {
      showLogin("edgeway refused this token: type the current one (admin.token_file)");
      return;
    }
    const failed = results.filter((r) => r.status === "rejected");
    if (failed.length === results.length) {
      setConnection("error", "cannot reach edgeway: " + String(failed[0].reason.message || failed[0].reason));
    } else {
      setConnection("live", "live · " + new Date(now).toLocaleTimeString());
    }
    if (metrics.status === "fulfilled" && metrics.value !== null) {
      scrapes.push({time: now, samples: metrics.value});
      while (scrapes.length > 2 && now - scrapes[1].time >= WINDOW_MS) scrapes.shift();
    } else if (metrics.status === "fulfilled") {
      scrapes.length = 0;
    }
    guard("dns", () => drawDns());
    guard("listeners", () => drawListeners(status.status === "fulfilled" ? status.value : null));
    guard("tls", () => drawTls());
    if (status.status === "fulfilled") {
      guard("identity", () => drawIdentity(status.value));
      groupSize = status.value.workers || 1;
      dnsRuns = (status.value.services || []).some((service) => service.kind === "dns");
    }
    $("workers").hidden = groupSize <= 1;
    if (workers.status === "fulfilled" && workers.value !== null) guard("workers", () => drawWorkers(workers.value, now));
    if (upstreams.status === "fulfilled") guard("upstreams", () => drawUpstreams(upstreams.value, now));
    else guard("upstreams", () => { throw upstreams.reason; });
    if (news.status === "fulfilled") guard("events", () => drawEvents(news.value));
    if (records.status === "fulfilled") guard("records", () => drawRecords(records.value));
    else guard("records", () => { throw records.reason; });
    timer = setTimeout(poll, POLL_MS);
  }

  // A section that fails says so in place; the page goes on (never a console error).
  function guard(section, draw) {
    const node = $(section);
    let problem = node.querySelector(":scope > .problem");
    try {
      draw();
      if (problem) problem.remove();
    } catch (e) {
      if (!problem) {
        problem = el("p", {class: "problem"});
        node.appendChild(problem);
      }
      problem.textContent = "cannot show this: " + String((e && e.message) || e);
    }
  }

  function setConnection(state, text) {
    const node = $("connection");
    node.dataset.status = state;
    node.textContent = text;
  }

  // ------------------------------------------------------------------ Prometheus text format

  // name -> [{labels: {..}, value: number}]; lines it cannot read are skipped, never fatal.
  function parseMetrics(text) {
    const families = new Map();
    for (const line of text.split("\n")) {
      if (line === "" || line[0] === "#") continue;
      const sample = parseLine(line);
      if (sample === null) continue;
      if (!families.has(sample.name)) families.set(sample.name, []);
      families.get(sample.name).push(sample);
    }
    return families;
  }

  function parseLine(line) {
    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!nameMatch) return null;
    let i = nameMatch[0].length;
    const labels = {};
    if (line[i] === "{") {
      i += 1;
      for (;;) {
        while (line[i] === " " || line[i] === ",") i += 1;
        if (line[i] === "}") { i += 1; break; }
        const labelMatch = /^([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(line.slice(i));
        if (!labelMatch) return null;
        i += labelMatch[0].length;
        let value = "";
        for (;;) {
          if (i >= line.length) return null;
          const c = line[i];
          if (c === "\\") {
            const next = line[i + 1];
            value += next === "n" ? "\n" : next;
            i += 2;
          } else if (c === '"') {
            i += 1;
            break;
          } else {
            value += c;
            i += 1;
          }
        }
        labels[labelMatch[1]] = value;
      }
    }
    const rest = line.slice(i).trim().split(/\s+/);
    const value = parseValue(rest[0]);
    if (value === null) return null;
    return {name: nameMatch[0], labels, value};
  }

  function parseValue(text) {
    if (text === "+Inf" || text === "Inf") return Infinity;
    if (text === "-Inf") return -Infinity;
    if (text === "NaN") return NaN;
    const value = Number(text);
    return text !== "" && !Number.isNaN(value) ? value : null;
  }

  // ------------------------------------------------------------------ reading scrapes

  const latest = () => (scrapes.length ? scrapes[scrapes.length - 1] : null);
  const oldest = () => (scrapes.length > 1 ? scrapes[0] : null);

  function family(scrape, name) {
    return scrape ? scrape.samples.get(name) || null : null;
  }

  // Sum of the samples of `name`, per value of `label` (or "" for all) -> Map.
  function sumBy(scrape, name, label, filter) {
    const out = new Map();
    for (const s of family(scrape, name) || []) {
      if (filter && !filter(s.labels)) continue;
      const key = label ? s.labels[label] || "" : "";
      out.set(key, (out.get(key) || 0) + s.value);
    }
    return out;
  }

  // Per second between the oldest and the newest scrape of the window, per value of `label`;
  // a counter that went down was reset (a restart): its new value is all that happened.
  function ratesBy(name, label) {
    const now = latest(), then = oldest();
    if (!then) return null;
    const seconds = (now.time - then.time) / 1000;
    const before = sumBy(then, name, label);
    const out = new Map();
    for (const [key, value] of sumBy(now, name, label)) {
      const previous = before.get(key) || 0;
      out.set(key, (value >= previous ? value - previous : value) / seconds);
    }
    return out;
  }

  // Prometheus's histogram_quantile over the buckets' increase in the window:
  // linear inside the bucket the rank falls in; in +Inf, the highest finite bound.
  function quantile(q, buckets) {
    const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
    if (!sorted.length) return null;
    const total = sorted[sorted.length - 1][1];
    if (!(total > 0)) return null;
    const rank = q * total;
    let lowerBound = 0, lowerCount = 0;
    for (const [bound, count] of sorted) {
      if (count >= rank) {
        if (bound === Infinity) return lowerBound;
        if (count === lowerCount) return bound;
        return lowerBound + (bound - lowerBound) * ((rank - lowerCount) / (count - lowerCount));
      }
      lowerBound = bound;
      lowerCount = count;
    }
    return lowerBound;
  }

  // le -> increase of the cumulative count in the window, for the samples `filter` keeps
  function bucketIncrease(name, filter) {
    const now = latest(), then = oldest();
    if (!then || !family(now, name)) return null;
    const count = (scrape) => {
      const out = new Map();
      for (const s of family(scrape, name) || []) {
        if (!filter(s.labels)) continue;
        const le = parseValue(s.labels.le);
        if (le === null) continue;
        out.set(le, (out.get(le) || 0) + s.value);
      }
      return out;
    };
    const before = count(then);
    const out = new Map();
    for (const [le, value] of count(now)) {
      const previous = before.get(le) || 0;
      out.set(le, value >= previous ? value - previous : value);
    }
    return out;
  }

  // ------------------------------------------------------------------ formatting

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function number(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "no data";
    if (Math.abs(value) >= 1e6) return (value / 1e6).toFixed(2) + "M";
    if (Math.abs(value) >= 1e4) return (value / 1e3).toFixed(1) + "k";
    return Number.isInteger(value) ? String(value) : value.toFixed(1);
  }

  function perSecond(value) {
    if (value === null || value === undefined) return "…";   // one scrape so far
    return value < 10 ? value.toFixed(2) : value.toFixed(0);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 1e-3) return (seconds * 1e6).toFixed(0) + " µs";
    if (seconds < 1) return (seconds * 1e3).toFixed(1) + " ms";
    return seconds.toFixed(2) + " s";
  }

  function uptime(seconds) {
    if (seconds < 60) return seconds.toFixed(0) + "s";
    if (seconds < 3600) return (seconds / 60).toFixed(0) + "min";
    if (seconds < 86400) return (seconds / 3600).toFixed(1) + "h";
    return (seconds / 86400).toFixed(1) + "d";
  }

  function ago(wallSeconds) {
    if (wallSeconds === null || wallSeconds === undefined) return "never";
    const seconds = Math.max(0, Date.now() / 1000 - wallSeconds);
    if (seconds < 60) return seconds.toFixed(0) + " s ago";
    if (seconds < 3600) return (seconds / 60).toFixed(0) + " min ago";
    return (seconds / 3600).toFixed(1) + " h ago";
  }

  // Rows of `tbody` kept by key: updated in place, so that a button is never replaced under a
  // click and a selection survives a poll. make(key) -> tr, fill(tr, value).
  function syncRows(tbody, entries, make, fill) {
    const seen = new Set();
    for (const [key, value] of entries) {
      seen.add(key);
      let row = null;
      for (const candidate of tbody.children) {
        if (candidate.dataset.key === key) { row = candidate; break; }
      }
      if (row === null) {
        row = make(key, value);
        row.dataset.key = key;
      }
      tbody.appendChild(row);   // moves it into order
      fill(row, value);
    }
    for (const row of [...tbody.children]) if (!seen.has(row.dataset.key)) row.remove();
  }

  function cells(row, count) {
    while (row.children.length < count) row.appendChild(el("td"));
    return row.children;
  }

  // ------------------------------------------------------------------ sections

  function drawIdentity(status) {
    const parts = ["edgeway " + status.version, "pid " + status.pid, "up " + uptime(status.uptime)];
    if (status.workers > 1) parts.push(status.workers + " workers");
    if (status.config_hash) parts.push("config " + String(status.config_hash).slice(0, 12));
    const reload = status.last_reload;
    if (reload) parts.push("last reload " + (reload.ok ? "ok" : "FAILED") + (reload.time ? " " + ago(reload.time) : ""));
    setText($("identity"), parts.join(" · "));
  }

  function drawDns() {
    const now = latest();
    const requests = family(now, "edgeway_dns_requests_total");
    const rates = ratesBy("edgeway_dns_requests_total", "");
    setText($("dns-qps"), requests ? perSecond(rates && (rates.get("") || 0)) : "no data");
    setText($("dns-total"), requests ? number(sumBy(now, "edgeway_dns_requests_total").get("") || 0) : "no data");
    const hits = family(now, "edgeway_resolver_cache_hits_total");
    const misses = family(now, "edgeway_resolver_cache_misses_total");
    if (hits || misses) {
      const h = sumBy(now, "edgeway_resolver_cache_hits_total").get("") || 0;
      const m = sumBy(now, "edgeway_resolver_cache_misses_total").get("") || 0;
      setText($("dns-hit-ratio"), h + m > 0 ? (100 * h / (h + m)).toFixed(1) + " %" : "no lookups yet");
    } else {
      setText($("dns-hit-ratio"), "no data");
    }
    const entries = family(now, "edgeway_resolver_cache_entries");
    setText($("dns-cache-entries"), entries ? number(sumBy(now, "edgeway_resolver_cache_entries").get("") || 0) : "no data");

    const totals = sumBy(now, "edgeway_dns_responses_total", "rcode");
    const rcodeRates = ratesBy("edgeway_dns_responses_total", "rcode");
    const tbody = $("dns-rcodes").tBodies[0];
    syncRows(tbody, [...totals.entries()].sort((a, b) => b[1] - a[1]),
      () => el("tr"),
      (row, total) => {
        const [name, count, rate] = cells(row, 3);
        count.className = rate.className = "num";
        setText(name, row.dataset.key);
        setText(count, number(total));
        setText(rate, perSecond(rcodeRates && (rcodeRates.get(row.dataset.key) || 0)));
      });
    $("dns-rcodes").hidden = totals.size === 0;
    $("dns-rcodes-empty").hidden = totals.size !== 0;
  }

  function drawListeners(status) {
    const now = latest();
    const listeners = new Map();   // name -> {kind, address}
    for (const service of (status && status.services) || []) {
      if (service.kind === "admin" || service.kind === "dns") continue;
      listeners.set(service.name, {kind: service.kind, address: (service.addresses || []).join(", ")});
    }
    const httpTotals = sumBy(now, "edgeway_http_requests_total", "listener");
    const l4Totals = sumBy(now, "edgeway_l4_connections_total", "listener");
    for (const name of [...httpTotals.keys(), ...l4Totals.keys()]) {
      if (!listeners.has(name)) listeners.set(name, {kind: "", address: ""});
    }
    const httpRates = ratesBy("edgeway_http_requests_total", "listener");
    const l4Rates = ratesBy("edgeway_l4_connections_total", "listener");
    const httpActive = sumBy(now, "edgeway_http_active_connections", "listener");
    const l4Active = sumBy(now, "edgeway_l4_active_connections", "listener");
    const haveHttp = family(now, "edgeway_http_requests_total") !== null;
    const haveL4 = family(now, "edgeway_l4_connections_total") !== null;
    const haveHistogram = family(now, "edgeway_http_request_duration_seconds_bucket") !== null;

    syncRows($("listener-table").tBodies[0], [...listeners.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)),
      () => el("tr"),
      (row, info) => {
        const name = row.dataset.key;
        const c = cells(row, 9);
        for (const i of [3, 4, 6, 7, 8]) c[i].className = "num";
        setText(c[0], name);
        setText(c[1], info.kind);
        setText(c[2], info.address);
        const l4 = info.kind === "tcp" || info.kind === "udp" || (!httpTotals.has(name) && l4Totals.has(name));
        const have = l4 ? haveL4 : haveHttp;
        const totals = l4 ? l4Totals : httpTotals;
        const rates = l4 ? l4Rates : httpRates;
        setText(c[3], have ? perSecond(rates && (rates.get(name) || 0)) : "no data");
        setText(c[4], have ? number(totals.get(name) || 0) : "no data");
        if (l4) {
          setText(c[5], "");
          setText(c[6], "");
          setText(c[7], "");
        } else {
          const codes = sumBy(now, "edgeway_http_requests_total", "code", (l) => l.listener === name);
          setText(c[5], haveHttp ? [...codes.entries()].sort().map(([code, n]) => code + ": " + number(n)).join("  ") || "none yet" : "no data");
          const buckets = bucketIncrease("edgeway_http_request_duration_seconds_bucket", (l) => l.listener === name);
          const idle = buckets && ![...buckets.values()].some((v) => v > 0);
          setText(c[6], !haveHistogram ? "no data" : buckets === null ? "…" : idle ? "idle" : duration(quantile(0.5, buckets)));
          setText(c[7], !haveHistogram ? "no data" : buckets === null ? "…" : idle ? "idle" : duration(quantile(0.99, buckets)));
        }
        const active = l4 ? l4Active : httpActive;
        setText(c[8], active.has(name) ? number(active.get(name)) : "no data");
      });
    $("listeners-empty").hidden = listeners.size !== 0;
  }

  // The API's states onto the four the page shows. "checking" (a server a reload added, before
  // its first health check) takes no traffic yet, so it is shown as down, with its own label.
  const STATE = {up: "up", down: "down", drain: "drain", maint: "maint", checking: "down"};

  function drawUpstreams(body, now) {
    const list = $("upstream-list");
    const upstreams = body.upstreams || [];
    const requests = new Map();
    for (const u of upstreams) for (const s of u.servers) requests.set(u.name + " " + s.address, s.requests);
    upstreamHistory.push({time: now, requests});
    while (upstreamHistory.length > 2 && now - upstreamHistory[1].time >= WINDOW_MS) upstreamHistory.shift();
    const then = upstreamHistory.length > 1 ? upstreamHistory[0] : null;

    const seen = new Set();
    for (const upstream of upstreams) {
      seen.add(upstream.name);
      let block = [...list.children].find((b) => b.dataset.upstream === upstream.name);
      if (!block) {
        block = el("div", {class: "upstream"});
        block.dataset.upstream = upstream.name;
        const table = el("table", {},
          el("thead", {}, el("tr", {}, ...["server", "state", "weight", "in flight", "requests/s", "requests",
            "failures", "last check", ""].map((h) => el("th", {}, h)))),
          el("tbody"));
        block.append(el("h3"), table);
      }
      list.appendChild(block);
      setText(block.querySelector("h3"), upstream.name + " (" + upstream.balance + ", " + upstream.servers.length +
        " server" + (upstream.servers.length === 1 ? "" : "s") + ")");
      syncRows(block.querySelector("tbody"), upstream.servers.map((s) => [s.address, s]),
        (address) => makeServerRow(upstream.name, address),
        (row, server) => fillServerRow(row, upstream.name, server, then, now));
    }
    for (const block of [...list.children]) if (!seen.has(block.dataset.upstream)) block.remove();
    $("upstreams-empty").hidden = upstreams.length !== 0;
    if (upstreams.length === 0) setText($("upstreams-empty"), "no upstreams configured");
  }

  // With workers (status.workers > 1): one row per worker process; requests/s from the
  // previous polls of the same process (a restarted worker starts again from 0).
  function drawWorkers(body, now) {
    const workers = body.workers || [];
    const requests = new Map(workers.map((w) => [w.index + " " + w.pid, w.requests]));
    workerHistory.push({time: now, requests});
    while (workerHistory.length > 2 && now - workerHistory[1].time >= WINDOW_MS) workerHistory.shift();
    const then = workerHistory.length > 1 ? workerHistory[0] : null;
    syncRows($("worker-table").tBodies[0], workers.map((w) => [String(w.index), w]),
      () => el("tr"),
      (row, w) => {
        const c = cells(row, 8);
        for (const i of [0, 1, 4, 5, 6]) c[i].className = "num";
        c[2].className = "state-" + w.state;
        row.dataset.pid = String(w.pid);
        row.dataset.state = w.state;
        const key = w.index + " " + w.pid;
        let rate = null;
        if (then && then.requests.has(key)) rate = (w.requests - then.requests.get(key)) / ((now - then.time) / 1000);
        setText(c[0], String(w.index));
        setText(c[1], w.pid === null || w.pid === undefined ? "–" : String(w.pid));
        setText(c[2], w.state);
        setText(c[3], w.uptime === null || w.uptime === undefined ? "–" : uptime(w.uptime));
        setText(c[4], String(w.restarts));
        setText(c[5], perSecond(rate));
        setText(c[6], number(w.requests));
        setText(c[7], w.last_exit || "");
      });
  }

  // One row per record: its answer now and the rule that chose it; a record answering in
  // when_all_down mode is marked (data-mode="all_down"), its targets each with up or down.
  function drawRecords(body) {
    const section = $("records");
    const rows = body === null ? [] : body.records || [];
    section.hidden = rows.length === 0;
    syncRows($("record-table").tBodies[0], rows.map((r) => [r.name + " " + r.type, r]),
      () => el("tr"),
      (row, r) => {
        const c = cells(row, 7);
        row.dataset.mode = r.mode;
        c[3].className = r.mode === "normal" ? "state-up" : "state-down";
        let answer = (r.answer || []).join(", ") || "–";
        if (r.mode === "all_down" && r.when_all_down !== "all") answer = String(r.when_all_down).toUpperCase();
        const targets = (r.targets || []).map((t) => t.label + (t.healthy ? " up" : " down")).join(", ");
        setText(c[0], r.name);
        setText(c[1], r.type);
        setText(c[2], r.policy);
        setText(c[3], r.mode === "normal" ? "normal" : "when_all_down (" + r.when_all_down + ")");
        setText(c[4], answer);
        setText(c[5], targets);
        setText(c[6], r.rule || "");
      });
  }

  function makeServerRow(upstream, address) {
    const row = el("tr");
    const server = el("span", {class: "server", "data-upstream": upstream}, address);
    const actions = el("td", {class: "actions"});
    for (const [state, label] of [["ready", "Ready"], ["drain", "Drain"], ["maint", "Maint"]]) {
      const button = el("button", {type: "button", "data-action": state}, label);
      button.addEventListener("click", () => setState(upstream, address, state, button));
      actions.appendChild(button);
    }
    row.append(el("td", {}, server), el("td"), el("td", {class: "num"}), el("td", {class: "num"}),
      el("td", {class: "num"}), el("td", {class: "num"}), el("td", {class: "num"}), el("td"), actions);
    return row;
  }

  function fillServerRow(row, upstream, server, then, now) {
    const c = row.children;
    const shown = STATE[server.state] || "down";
    const span = c[0].firstChild;
    span.dataset.state = shown;
    span.dataset.apiState = server.state;
    // `why` names the state itself ("down (active health check: ...)") when there is one
    let state = server.why && server.state !== "up"
      ? (server.why.startsWith(server.state) ? server.why : server.state + " (" + server.why + ")")
      : server.state;
    if (server.backup) state += " · backup";
    c[1].className = "state-" + shown;
    setText(c[1], state);
    setText(c[2], String(server.weight));
    setText(c[3], String(server.in_flight));
    const key = upstream + " " + server.address;
    let rate = null;
    if (then && then.requests.has(key)) {
      const before = then.requests.get(key);
      rate = (server.requests >= before ? server.requests - before : server.requests) / ((now - then.time) / 1000);
    }
    setText(c[4], perSecond(rate));
    setText(c[5], number(server.requests));
    setText(c[6], number(server.failures));
    setText(c[7], ago(server.last_check) + (server.last_check_result ? " (" + server.last_check_result + ")" : ""));
    // the button of the admin state the server is in is the one that would change nothing
    const admin = server.state === "drain" || server.state === "maint" ? server.state : "ready";
    for (const button of c[8].children) button.disabled = button.dataset.action === admin;
  }

  async function setState(upstream, address, state, button) {
    const notice = $("action-result");
    button.disabled = true;
    try {
      const path = "/api/v1/upstreams/" + encodeURIComponent(upstream) + "/servers/" +
        encodeURIComponent(address) + "/state";
      const response = await request(path, {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({state}),
      });
      const body = await response.json();
      notice.className = response.ok ? "notice" : "notice problem";
      notice.textContent = response.ok
        ? upstream + ": " + address + " " + body.previous + " → " + body.state
        : upstream + ": " + address + ": " + (body.error || response.status);
    } catch (e) {
      if (e instanceof AuthError) return showLogin(e.message);
      notice.className = "notice problem";
      notice.textContent = upstream + ": " + address + ": " + String(e.message || e);
    }
    notice.hidden = false;
    poll();
  }

  function drawEvents(body) {
    if (body.last < eventsSince) {   // edgeway restarted: its numbering did too
      eventsSince = 0;
      events.length = 0;
    }
    for (const event of body.events || []) {
      events.push(event);
      eventsSince = Math.max(eventsSince, event.seq);
    }
    events.splice(0, Math.max(0, events.length - MAX_EVENTS));
    const list = $("event-list");
    const have = new Set([...list.children].map((li) => li.dataset.seq));
    for (const event of events) {
      if (have.has(String(event.seq))) continue;
      const when = new Date(event.time * 1000);
      const li = el("li", {"data-seq": String(event.seq), "data-kind": String(event.kind)},
        el("time", {datetime: when.toISOString()}, when.toLocaleTimeString()),
        el("span", {class: "kind"}, String(event.kind)), " ", String(event.message));
      if (event.to !== undefined) li.dataset.to = String(event.to);
      if (event.ok !== undefined) li.dataset.ok = String(event.ok);
      list.prepend(li);   // newest first
    }
    const keep = new Set(events.map((e) => String(e.seq)));
    for (const li of [...list.children]) if (!keep.has(li.dataset.seq)) li.remove();
    $("events-empty").hidden = events.length !== 0;
    setText($("events-empty"), "no health transition, reload or admin change yet");
  }

  function drawTls() {
    const now = latest();
    const samples = family(now, "edgeway_tls_certificate_not_after_seconds");
    const rows = (samples || []).map((s) => [s.labels.listener + " " + s.labels.file + " " + s.labels.subject, s]);
    syncRows($("tls-table").tBodies[0], rows.sort((a, b) => a[1].value - b[1].value),
      () => el("tr"),
      (row, sample) => {
        const c = cells(row, 5);
        c[4].className = "num";
        const days = (sample.value - Date.now() / 1000) / 86400;
        row.className = days < 0 ? "expired" : days < 14 ? "expiring" : "";
        setText(c[0], sample.labels.listener || "");
        setText(c[1], sample.labels.file || "");
        setText(c[2], sample.labels.subject || "");
        setText(c[3], new Date(sample.value * 1000).toISOString().slice(0, 10));
        setText(c[4], days < 0 ? "expired" : days.toFixed(0));
      });
    $("tls-table").hidden = rows.length === 0;
    $("tls-empty").hidden = rows.length !== 0;
    setText($("tls-empty"), samples === null ? "no data" : "no TLS listener");
  }

  // ------------------------------------------------------------------ start

  // The pure parts, for the browser test to hold them to prometheus-client's own output.
  window.edgewayDashboard = Object.freeze({parseMetrics, quantile});

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const typed = $("token").value.trim();
      $("token").value = "";
      if (typed) start(typed);
    });
    $("forget").addEventListener("click", () => showLogin(""));
    const initial = tokenFromFragment() || sessionStorage.getItem(KEY);
    if (initial) start(initial);
    else showLogin("");
  });
})();

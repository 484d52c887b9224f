// The access-graph page. It reads the JSON API with the org API token the user signs in with
// (kept in sessionStorage) and draws the graph as SVG with its own layered layout. A token in a
// link (`#token=...`) is never adopted silently: the page says which organisation it belongs to
// and asks first, so a link made by someone else cannot sign the user in to their organisation.
//
//
// - each node gets a column by longest path from the callers (cycles broken by a DFS), so calls
//   run left to right;
// - each namespace is a horizontal band inside its cluster's box, spanning the columns its
//   workloads use; a few barycentre sweeps order the nodes within a band's column;
// - internet and AWS targets sit in their own boxes to the right of all clusters.
//
// Everything is linear in nodes and edges (plus sorting), so thousands of edges draw at once.
//
// A large organisation (more than GROUP_ABOVE nodes) starts grouped: each namespace of each
// cluster is one box with its workload count, and the calls between boxes are drawn once per
// pair with their count. A click on a box opens it (its workloads take its place; calls to
// closed boxes stay aggregated); the search box finds a workload by name and opens its
// namespace. The layout runs once per change of the data or of which boxes are open; panning
// and zooming only change one transform.
//
// A very large organisation (more calls than LARGE_ABOVE, or than the server reads at once) is
// never read whole: the page draws the server's aggregated view (GET /access-graph/summary:
// namespaces with their counts, calls between them counted; read first, it says how large the
// graph is) and reads a namespace's own calls, in pages, when it is opened. A search asks the
// server for workloads of that exact name.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TOKEN_KEY = "intentmap.apiToken";
  const WINDOWS = ["1h", "24h", "7d", "all"];
  const WINDOW_TEXT = { "1h": "the last hour", "24h": "the last day", "7d": "the last week", all: "all time" };
  // "Changes since": the server marks each call new, seen or gone relative to that time.
  const CHANGES = ["1h", "24h", "7d"];
  const CHANGES_TEXT = { "1h": "an hour ago", "24h": "a day ago", "7d": "a week ago" };

  // Geometry of the drawing, in SVG units (pixels at zoom 1).
  const NODE_W = 196;
  const NODE_H = 42;
  const ROW = NODE_H + 14;
  const COL = NODE_W + 120;
  const NS_PAD = 12;
  const NS_HEAD = 22;
  const CL_PAD = 14;
  const CL_HEAD = 30;
  const GAP = 16;
  const MARGIN = 20;
  const CLUSTER_TINTS = 6;
  // Above this many nodes the page starts with every namespace closed.
  const GROUP_ABOVE = 400;
  // Above this many calls (or when the server refuses to read them at once) the page starts from
  // the aggregated view and reads namespaces as they are opened, in pages of PAGE calls.
  const LARGE_ABOVE = 20000;
  const PAGE = 5000;
  // The most calls one opened namespace may bring (a namespace filter reads larger ones alone).
  const NAMESPACE_MAX = 50000;
  const GROUP_PREFIX = "group:";
  const MIN_ZOOM = 0.05;
  const MAX_ZOOM = 3;
  const SEARCH_MAX = 253;

  const $ = (id) => document.getElementById(id);
  // team-2 before team-10
  const byName = (a, b) => a.localeCompare(b, undefined, { numeric: true });

  const state = {
    token: null,
    // A token from a link, until the user agrees to sign in with it.
    pending: null,
    filters: { cluster: "", namespace: "", window: "all", workload: "", changes: "" },
    selected: null,
    graph: null,
    index: null,
    drawing: null,
    clusters: [],
    namespaceOptions: [],
    // Pan and zoom: the drawing's translation and scale, applied as one SVG transform.
    view: { x: 0, y: 0, k: 1 },
    request: 0,
    // Whether namespaces are grouped (a large organisation) and which ones are open.
    grouped: false,
    expanded: new Set(),
    // A very large organisation: the aggregated view and the namespaces read so far (see
    // `newLarge`); null when the whole graph was read.
    large: null,
    // The drawn graph: the data graph, or its grouped view.
    shown: null,
    layouts: 0,
    drawn: 0,
    search: { query: "", matches: [], at: -1 },
    found: null,
  };

  class Unauthorized extends Error {}

  // === token and address bar ===

  function loadToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return state.token;
    }
  }

  function saveToken(token) {
    state.token = token;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      // Storage disabled: the token lives as long as this page.
    }
  }

  function clearToken() {
    state.token = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // nothing stored
    }
  }

  function decode(s) {
    try {
      return decodeURIComponent(s.replace(/\+/g, "%20"));
    } catch {
      return s;
    }
  }

  // `#token=...&cluster=...&select=...`; tokens may hold characters URLSearchParams would mangle.
  function readFragment() {
    const params = new Map();
    for (const part of location.hash.replace(/^#/, "").split("&")) {
      if (!part) continue;
      const eq = part.indexOf("=");
      const key = eq < 0 ? part : part.slice(0, eq);
      const value = eq < 0 ? "" : part.slice(eq + 1);
      // A token is taken verbatim apart from %-escapes: `+` may be part of it.
      params.set(decode(key), key === "token" ? safeDecodeURIComponent(value) : decode(value));
    }
    return params;
  }

  function safeDecodeURIComponent(s) {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  }

  // The address bar keeps the view (filters, selection) and never the token.
  function writeFragment() {
    const f = state.filters;
    const parts = [];
    if (f.cluster) parts.push(["cluster", f.cluster]);
    if (f.namespace) parts.push(["namespace", f.namespace]);
    if (f.workload) parts.push(["workload", f.workload]);
    if (f.window !== "all") parts.push(["window", f.window]);
    if (f.changes) parts.push(["changes", f.changes]);
    if (state.selected) parts.push(["select", state.selected]);
    const hash = parts.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&");
    history.replaceState(null, "", location.pathname + location.search + (hash ? `#${hash}` : ""));
  }

  // === API ===

  async function api(path, accept = "application/json") {
    const res = await fetch(path, { headers: { Authorization: `Bearer ${state.token}`, Accept: accept }, cache: "no-store" });
    if (res.status === 401) throw new Unauthorized(await errorText(res));
    if (!res.ok) throw new Error(await errorText(res));
    return res;
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      if (body && typeof body.error === "string") return body.error;
    } catch {
      // not our JSON error
    }
    return `HTTP ${res.status} ${res.statusText}`.trim();
  }

  // The graph read of the filters; `extra` sets or replaces parameters (a page's `limit`, an
  // opened namespace's `cluster` and `namespace`).
  function graphUrl(extra = {}) {
    const f = state.filters;
    const q = new URLSearchParams();
    if (f.cluster) q.set("cluster", f.cluster);
    if (f.namespace) q.set("namespace", f.namespace);
    if (f.workload) q.set("workload", f.workload);
    if (f.window !== "all") q.set("since", f.window);
    if (f.changes) q.set("changed_since", f.changes);
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    const s = q.toString();
    return `/api/v1/access-graph${s ? `?${s}` : ""}`;
  }

  function summaryUrl() {
    const f = state.filters;
    const q = new URLSearchParams();
    if (f.cluster) q.set("cluster", f.cluster);
    if (f.window !== "all") q.set("since", f.window);
    const s = q.toString();
    return `/api/v1/access-graph/summary${s ? `?${s}` : ""}`;
  }

  // === screens ===

  function showLogin(message) {
    document.body.dataset.state = "login";
    state.pending = null;
    $("confirm").hidden = true;
    $("app").hidden = true;
    $("filters").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("login-token").value = "";
    $("login-token").focus();
  }

  function showApp() {
    $("confirm").hidden = true;
    $("login").hidden = true;
    $("app").hidden = false;
    $("filters").hidden = false;
    $("logout").hidden = false;
  }

  function showError(message) {
    const banner = $("error");
    banner.hidden = !message;
    banner.textContent = message || "";
  }

  // A request that failed: a refused token signs out, anything else says `what` and why.
  function failed(e, what) {
    if (e instanceof Unauthorized) {
      clearToken();
      showLogin(`That API token was not accepted: ${e.message}. Check the token and sign in again.`);
      return;
    }
    showError(`${what}: ${e.message}`);
  }

  async function load() {
    const request = ++state.request;
    document.body.classList.add("busy");
    showApp();
    try {
      // Without a namespace or workload filter the aggregated view comes first: it says how many
      // calls the whole graph has. Up to LARGE_ABOVE the graph is read whole, as one page (a
      // server that reads less at once says more pages follow), beyond that never.
      const f = state.filters;
      const narrowed = Boolean(f.namespace || f.workload);
      const [clustersRes, summaryRes] = await Promise.all([api("/api/v1/clusters"), narrowed ? null : api(summaryUrl())]);
      const [clusters, aggregated] = await Promise.all([clustersRes.json(), summaryRes ? summaryRes.json() : null]);
      if (request !== state.request) return;
      const view = aggregated && newLarge(aggregated);
      let large = view && view.calls > LARGE_ABOVE ? view : null;
      let graph = null;
      if (!large) {
        graph = await (await api(narrowed ? graphUrl() : graphUrl({ limit: LARGE_ABOVE }))).json();
        if (!narrowed && typeof graph.next === "string") large = view;
      }
      if (request !== state.request) return;
      showError("");
      state.clusters = clusters.map((c) => c.name).sort(byName);
      if (large) {
        state.large = large;
        state.graph = normalise({ clusters: large.clusters, nodes: [], edges: [] });
        state.grouped = true;
        // Open namespaces were read for the previous filters.
        state.expanded.clear();
      } else {
        state.large = null;
        state.graph = normalise(graph);
        state.grouped = state.graph.nodes.length > GROUP_ABOVE;
      }
      state.index = buildIndex(state.graph);
      if (state.large) await openOf(state.selected, request);
      else openGroupOf(state.selected);
      if (request !== state.request) return;
      if (!state.filters.namespace) state.namespaceOptions = state.large ? state.large.namespaceNames : namespacesOf(state.graph);
      renderFilters();
      renderDownloads();
      render("load");
      document.body.dataset.state = "ready";
    } catch (e) {
      if (request !== state.request) return;
      if (!(e instanceof Unauthorized)) document.body.dataset.state = "error";
      failed(e, "Could not load the access graph");
    } finally {
      if (request === state.request) document.body.classList.remove("busy");
    }
  }

  // === the graph's data ===

  function normalise(graph) {
    const nodes = Array.isArray(graph.nodes) ? graph.nodes : [];
    const edges = Array.isArray(graph.edges) ? graph.edges : [];
    const clusters = Array.isArray(graph.clusters) ? graph.clusters : [];
    const known = new Set(nodes.map((n) => n.id));
    // Defensive: an edge to a node the server did not list still gets drawn.
    for (const e of edges) {
      for (const id of [e.source, e.target]) {
        if (!known.has(id)) {
          known.add(id);
          nodes.push({ id, kind: "workload", name: id });
        }
      }
    }
    return { clusters, nodes, edges, changes: graph.changes || null };
  }

  function buildIndex(graph) {
    const byId = new Map();
    const out = new Map();
    const inc = new Map();
    for (const n of graph.nodes) {
      byId.set(n.id, n);
      out.set(n.id, []);
      inc.set(n.id, []);
    }
    graph.edges.forEach((e, i) => {
      out.get(e.source).push(i);
      inc.get(e.target).push(i);
    });
    return { byId, out, inc };
  }

  function namespacesOf(graph) {
    const names = new Set();
    for (const n of graph.nodes) if (n.namespace) names.add(n.namespace);
    return [...names].sort(byName);
  }

  const isInside = (n) => Boolean(n.cluster && n.namespace);

  function awsParts(arn) {
    // arn:partition:service:region:account:resource
    const parts = arn.split(":");
    if (parts.length < 6 || parts[0] !== "arn") return { service: "", resource: arn };
    return { service: parts[2], resource: parts.slice(5).join(":") || arn };
  }

  function nodeTitle(n) {
    if (n.kind === "aws") return awsParts(n.name).resource;
    return n.name;
  }

  function nodeSubtitle(n) {
    switch (n.kind) {
      case "aws": {
        const { service } = awsParts(n.name);
        return service ? `AWS ${service}` : "AWS";
      }
      case "internet":
        return "internet";
      case "service":
        return "Service";
      default:
        return n.workload_kind || "workload";
    }
  }

  function nodeWhere(n) {
    if (isInside(n)) return `${n.cluster} / ${n.namespace}`;
    return n.kind === "aws" ? "AWS" : "outside the clusters";
  }

  function fmtPort(p) {
    return `${p.port}/${p.protocol || "TCP"}`;
  }

  // 1536 -> "1.5 KiB": the measured traffic volume of a call, as text.
  function fmtBytes(n) {
    if (typeof n !== "number" || !Number.isFinite(n) || n < 0) return "?";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  // A call's width by its measured volume (sent + received): none unmeasured, v1 under 1 MiB,
  // v2 under 1 GiB, v3 beyond.
  function volumeClass(e) {
    if (!e.bytes) return "";
    const total = (Number(e.bytes.sent) || 0) + (Number(e.bytes.received) || 0);
    return total >= 1024 ** 3 ? " v3" : total >= 1024 ** 2 ? " v2" : " v1";
  }

  function fmtTime(t) {
    if (!t) return "";
    const d = new Date(t);
    if (Number.isNaN(d.getTime())) return String(t);
    return `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  }

  function truncate(s, max) {
    return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
  }

  // === layout ===

  // Strongly connected components (Tarjan, without recursion), sinks first.
  function components(graph, index) {
    const order = new Map();
    const low = new Map();
    const onStack = new Set();
    const stack = [];
    const comps = [];
    let counter = 0;
    const visit = (id) => {
      order.set(id, counter);
      low.set(id, counter++);
      stack.push(id);
      onStack.add(id);
    };
    for (const root of graph.nodes.map((n) => n.id)) {
      if (order.has(root)) continue;
      visit(root);
      const work = [[root, 0]];
      while (work.length) {
        const frame = work[work.length - 1];
        const v = frame[0];
        const outs = index.out.get(v);
        if (frame[1] < outs.length) {
          const w = graph.edges[outs[frame[1]++]].target;
          if (!order.has(w)) {
            visit(w);
            work.push([w, 0]);
          } else if (onStack.has(w)) {
            low.set(v, Math.min(low.get(v), order.get(w)));
          }
          continue;
        }
        work.pop();
        if (work.length) {
          const u = work[work.length - 1][0];
          low.set(u, Math.min(low.get(u), low.get(v)));
        }
        if (low.get(v) === order.get(v)) {
          const comp = [];
          let w;
          do {
            w = stack.pop();
            onStack.delete(w);
            comp.push(w);
          } while (w !== v);
          comps.push(comp);
        }
      }
    }
    return comps;
  }

  // Columns: longest path from the callers over the components, so every call between
  // components runs left to right; inside a cycle, breadth-first depth from where it is entered,
  // which keeps even one huge cycle a few columns wide.
  function layers(graph, index) {
    const comps = components(graph, index);
    const compOf = new Map();
    comps.forEach((comp, ci) => comp.forEach((id) => compOf.set(id, ci)));
    const layer = new Map();
    for (let ci = comps.length - 1; ci >= 0; ci--) {
      const comp = comps[ci];
      let base = 0;
      const entries = [];
      for (const id of comp) {
        let entered = false;
        for (const ei of index.inc.get(id)) {
          const source = graph.edges[ei].source;
          if (compOf.get(source) !== ci) {
            base = Math.max(base, layer.get(source) + 1);
            entered = true;
          }
        }
        if (entered) entries.push(id);
      }
      if (comp.length === 1) {
        layer.set(comp[0], base);
        continue;
      }
      const busiest = () => comp.reduce((a, b) => (index.out.get(b).length > index.out.get(a).length || (index.out.get(b).length === index.out.get(a).length && b < a) ? b : a));
      const queue = entries.length ? entries.sort() : [busiest()];
      const depth = new Map(queue.map((id) => [id, 0]));
      for (let qi = 0; qi < queue.length; qi++) {
        const v = queue[qi];
        for (const ei of index.out.get(v)) {
          const w = graph.edges[ei].target;
          if (compOf.get(w) === ci && !depth.has(w)) {
            depth.set(w, depth.get(v) + 1);
            queue.push(w);
          }
        }
      }
      for (const id of comp) layer.set(id, base + depth.get(id));
    }
    // A caller nobody calls moves right, next to the first thing it calls: shorter edges.
    for (const n of graph.nodes) {
      if (index.inc.get(n.id).length) continue;
      let min = Infinity;
      for (const ei of index.out.get(n.id)) {
        const t = graph.edges[ei].target;
        if (t !== n.id && isInside(index.byId.get(t))) min = Math.min(min, layer.get(t));
      }
      if (min !== Infinity && min - 1 > layer.get(n.id)) layer.set(n.id, min - 1);
    }
    return layer;
  }

  function layout(graph, index) {
    const layer = layers(graph, index);
    const inside = graph.nodes.filter(isInside);
    const outside = graph.nodes.filter((n) => !isInside(n));

    // Bands: cluster -> namespace -> column -> nodes.
    const clusterNames = [...new Set(inside.map((n) => n.cluster))].sort(byName);
    const bands = [];
    const bandOf = new Map();
    for (const cluster of clusterNames) {
      const namespaces = [...new Set(inside.filter((n) => n.cluster === cluster).map((n) => n.namespace))].sort(byName);
      for (const namespace of namespaces) {
        const band = { cluster, namespace, cells: new Map(), minCol: Infinity, maxCol: -Infinity, rows: 0 };
        bandOf.set(`${cluster}\u0000${namespace}`, band);
        bands.push(band);
      }
    }
    let columns = 0;
    for (const n of [...inside].sort((a, b) => byName(a.name, b.name))) {
      const band = bandOf.get(`${n.cluster}\u0000${n.namespace}`);
      const col = layer.get(n.id);
      if (!band.cells.has(col)) band.cells.set(col, []);
      band.cells.get(col).push(n.id);
      band.minCol = Math.min(band.minCol, col);
      band.maxCol = Math.max(band.maxCol, col);
      columns = Math.max(columns, col + 1);
    }
    for (const band of bands) {
      for (const cell of band.cells.values()) band.rows = Math.max(band.rows, cell.length);
    }

    // Rows: each band starts where the previous ones end; barycentre sweeps order each cell.
    const row = new Map();
    let base = 0;
    for (const band of bands) {
      for (const cell of band.cells.values()) cell.forEach((id, i) => row.set(id, base + i));
      base += band.rows + 1;
    }
    const barycentre = (id, useIn) => {
      let sum = 0;
      let count = 0;
      for (const ei of useIn ? index.inc.get(id) : index.out.get(id)) {
        const e = graph.edges[ei];
        const other = useIn ? e.source : e.target;
        const r = row.get(other);
        if (r !== undefined && other !== id) {
          sum += r;
          count++;
        }
      }
      return count ? sum / count : row.get(id);
    };
    const columnCells = [];
    for (let c = 0; c < columns; c++) columnCells.push([]);
    for (const band of bands) for (const [col, cell] of band.cells) columnCells[col].push(cell);
    for (let sweep = 0; sweep < 4; sweep++) {
      const forward = sweep % 2 === 0;
      for (let k = 0; k < columns; k++) {
        const c = forward ? k : columns - 1 - k;
        for (const cell of columnCells[c]) {
          const keys = new Map(cell.map((id) => [id, barycentre(id, forward)]));
          cell.sort((a, b) => keys.get(a) - keys.get(b));
          const first = Math.min(...cell.map((id) => row.get(id)));
          cell.forEach((id, i) => row.set(id, first + i));
        }
      }
    }

    // Geometry of the cluster boxes, namespace bands and nodes.
    const pos = new Map();
    const colX = (c) => MARGIN + CL_PAD + NS_PAD + c * COL;
    const clusters = [];
    const namespaces = [];
    let y = MARGIN;
    for (const cluster of clusterNames) {
      const own = bands.filter((b) => b.cluster === cluster);
      const minCol = Math.min(...own.map((b) => b.minCol));
      const maxCol = Math.max(...own.map((b) => b.maxCol));
      const top = y;
      y += CL_HEAD;
      for (const band of own) {
        const bandTop = y;
        for (const [col, cell] of band.cells) {
          cell.forEach((id, i) => pos.set(id, { x: colX(col), y: bandTop + NS_HEAD + i * ROW }));
        }
        const height = NS_HEAD + band.rows * ROW - (ROW - NODE_H) + NS_PAD;
        namespaces.push({
          cluster,
          namespace: band.namespace,
          x: colX(band.minCol) - NS_PAD,
          y: bandTop,
          w: (band.maxCol - band.minCol) * COL + NODE_W + 2 * NS_PAD,
          h: height,
        });
        y += height + GAP;
      }
      clusters.push({ name: cluster, x: colX(minCol) - NS_PAD - CL_PAD, y: top, w: (maxCol - minCol) * COL + NODE_W + 2 * (NS_PAD + CL_PAD), h: y - GAP + CL_PAD - top });
      y += CL_PAD + GAP * 2;
    }
    const insideHeight = Math.max(y - GAP * 2, 360);

    // Outside: one box per kind to the right, nodes near their callers, in as many columns as
    // keep the box about as tall as the clusters.
    const outsideGroups = [];
    const kinds = [
      ["internet", "Internet"],
      ["aws", "AWS"],
    ];
    const otherKinds = [...new Set(outside.map((n) => n.kind))].filter((k) => !kinds.some(([kind]) => kind === k));
    for (const k of otherKinds) kinds.push([k, k]);
    const outX = colX(columns) - NS_PAD;
    let outY = MARGIN;
    const perColumn = Math.max(4, Math.floor((insideHeight - MARGIN - CL_HEAD - NS_PAD) / ROW));
    for (const [kind, label] of kinds) {
      const members = outside.filter((n) => n.kind === kind);
      if (!members.length) continue;
      const key = new Map(members.map((n) => [n.id, barycentre(n.id, true)]));
      members.sort((a, b) => key.get(a.id) - key.get(b.id) || byName(a.name, b.name));
      const cols = Math.ceil(members.length / perColumn);
      const rows = Math.ceil(members.length / cols);
      members.forEach((n, i) => {
        const c = Math.floor(i / rows);
        pos.set(n.id, { x: outX + NS_PAD + c * (NODE_W + 30), y: outY + CL_HEAD + (i % rows) * ROW });
      });
      const h = CL_HEAD + rows * ROW - (ROW - NODE_H) + NS_PAD;
      // Level with its callers, below the previous box.
      let sum = 0;
      let count = 0;
      for (const n of members) {
        for (const ei of index.inc.get(n.id)) {
          const p = pos.get(graph.edges[ei].source);
          if (p && isInside(index.byId.get(graph.edges[ei].source))) {
            sum += p.y;
            count++;
          }
        }
      }
      const top = Math.max(outY, Math.round(count ? sum / count + NODE_H / 2 - h / 2 : outY));
      members.forEach((n) => {
        const p = pos.get(n.id);
        p.y += top - outY;
      });
      outsideGroups.push({ kind, label, x: outX, y: top, w: cols * (NODE_W + 30) - 30 + 2 * NS_PAD, h });
      outY = top + h + GAP * 2;
    }
    let width = colX(Math.max(columns, 1)) + MARGIN;
    for (const g of outsideGroups) width = Math.max(width, g.x + g.w + MARGIN);
    const height = Math.max(insideHeight, outY - GAP * 2) + MARGIN;
    return { pos, clusters, namespaces, outsideGroups, width, height };
  }

  // === grouping: a namespace as one box ===

  const groupKey = (n) => `${n.cluster}/${n.namespace}`;

  function isClosed(n) {
    return state.grouped && isInside(n) && !state.expanded.has(groupKey(n));
  }

  // Opens the namespace holding node `id` when it is closed; true when it was.
  function openGroupOf(id) {
    const n = id && state.index && state.index.byId.get(id);
    if (!n || !isClosed(n)) return false;
    state.expanded.add(groupKey(n));
    return true;
  }

  // Calls added to one aggregate edge per (source, target) pair of `edges`, made on first use:
  // `add(source, target, count)` returns the pair's index in `edges`.
  function aggregator(edges) {
    const pairs = new Map();
    return (source, target, count) => {
      const pair = `${source}\u0000${target}`;
      let at = pairs.get(pair);
      if (at === undefined) {
        at = edges.length;
        pairs.set(pair, at);
        edges.push({ source, target, count: 0, aggregate: true });
      }
      edges[at].count += count;
      return at;
    };
  }

  // What is drawn: the data graph itself, or (grouped) one node per closed namespace and one
  // edge per pair of drawn ends carrying the calls between them. `rep` maps each data node to
  // the drawn node standing for it, `edgeOf` each data edge to the drawn edge carrying it.
  function shownGraph(graph, index) {
    if (state.large) return largeShown(graph, index);
    if (!state.grouped) {
      const rep = new Map(graph.nodes.map((n) => [n.id, n.id]));
      return { graph, index, rep, edgeOf: graph.edges.map((_, i) => i), closed: 0, namespaces: 0 };
    }
    const nodes = [];
    const rep = new Map();
    const groups = new Map();
    for (const n of graph.nodes) {
      if (!isClosed(n)) {
        nodes.push(n);
        rep.set(n.id, n.id);
        continue;
      }
      const key = groupKey(n);
      let group = groups.get(key);
      if (!group) {
        group = { id: GROUP_PREFIX + key, kind: "group", name: n.namespace, cluster: n.cluster, namespace: n.namespace, group: key, members: 0, out: 0, in: 0 };
        groups.set(key, group);
        nodes.push(group);
      }
      group.members++;
      rep.set(n.id, group.id);
    }
    const edges = [];
    const edgeOf = new Array(graph.edges.length);
    const add = aggregator(edges);
    graph.edges.forEach((e, i) => {
      const source = rep.get(e.source);
      const target = rep.get(e.target);
      if (source === e.source && target === e.target) {
        edgeOf[i] = edges.length;
        edges.push(e);
        return;
      }
      edgeOf[i] = add(source, target, 1);
      const from = groups.get(groupKey(index.byId.get(e.source)));
      if (from && from.id === source) from.out++;
      const to = isInside(index.byId.get(e.target)) && groups.get(groupKey(index.byId.get(e.target)));
      if (to && to.id === target) to.in++;
    });
    const all = new Set(graph.nodes.filter(isInside).map(groupKey));
    const shown = { nodes, edges, clusters: graph.clusters, changes: graph.changes };
    return { graph: shown, index: buildIndex(shown), rep, edgeOf, closed: groups.size, namespaces: all.size };
  }

  // === a very large organisation: the aggregated view, namespaces read when opened ===

  // The server's aggregated view (`summary`) and what the page has read of the full graph:
  // `loaded` the namespaces read whole, `keys` the calls held (a call between two namespaces
  // comes in the reads of both).
  function newLarge(summary) {
    const list = (v) => (Array.isArray(v) ? v : []);
    const namespaces = list(summary.namespaces);
    const external = list(summary.external);
    const edges = list(summary.edges);
    const num = (v) => (typeof v === "number" && Number.isFinite(v) && v > 0 ? v : 0);
    const out = new Map();
    const inc = new Map();
    let calls = 0;
    for (const e of edges) {
      calls += num(e.edges);
      out.set(e.source, (out.get(e.source) || 0) + num(e.edges));
      inc.set(e.target, (inc.get(e.target) || 0) + num(e.edges));
    }
    let nodes = 0;
    for (const ns of namespaces) nodes += num(ns.workloads) + num(ns.services);
    for (const x of external) nodes += num(x.targets);
    return {
      namespaces,
      external: new Map(external.map((x) => [x.id, num(x.targets)])),
      edges,
      clusters: list(summary.clusters),
      byKey: new Map(namespaces.map((ns) => [ns.id, ns])),
      members: (ns) => num(ns.workloads) + num(ns.services),
      out,
      inc,
      calls,
      nodes,
      clusterCount: new Set(namespaces.map((ns) => ns.cluster)).size,
      namespaceNames: [...new Set(namespaces.map((ns) => ns.namespace))].sort(byName),
      loaded: new Set(),
      keys: new Set(),
    };
  }

  const edgeKey = (e) => `${e.source}\u0000${e.target}\u0000${e.observed_in || ""}`;

  // The namespace (`cluster/namespace`) of a node the page holds or whose id names it.
  function keyOf(id) {
    const n = state.index && state.index.byId.get(id);
    if (n) return isInside(n) ? groupKey(n) : null;
    const parts = String(id).split("/");
    const key = parts.length > 2 ? `${parts[0]}/${parts[1]}` : null;
    return key && state.large.byKey.has(key) ? key : null;
  }

  // Every page of a read (the filters with `extra`), at most `max` calls; null when another
  // load overtook it.
  async function readPages(extra, max, request) {
    const nodes = [];
    const edges = [];
    let after = null;
    for (;;) {
      const params = { ...extra, limit: PAGE };
      if (after) params.after = after;
      const page = await (await api(graphUrl(params))).json();
      if (request !== state.request) return null;
      if (Array.isArray(page.nodes)) nodes.push(...page.nodes);
      if (Array.isArray(page.edges)) edges.push(...page.edges);
      if (edges.length > max) {
        throw new Error(`more than ${max} calls match; choose one namespace in the filters to read it alone`);
      }
      if (typeof page.next !== "string" || !page.next) return { nodes, edges };
      after = page.next;
    }
  }

  // Adds what a read brought to the page's data, each node and call once.
  function merge(part) {
    const L = state.large;
    const g = state.graph;
    const known = new Set(g.nodes.map((n) => n.id));
    for (const n of part.nodes) {
      if (n && typeof n.id === "string" && !known.has(n.id)) {
        known.add(n.id);
        g.nodes.push(n);
      }
    }
    for (const e of part.edges) {
      if (!e || typeof e.source !== "string" || typeof e.target !== "string" || L.keys.has(edgeKey(e))) continue;
      L.keys.add(edgeKey(e));
      g.edges.push(e);
    }
    state.graph = normalise(g);
    state.index = buildIndex(state.graph);
  }

  // Reads namespace `key` whole, once; false when another load overtook the read.
  async function ensureLoaded(key, request) {
    const L = state.large;
    if (L.loaded.has(key)) return true;
    const ns = L.byKey.get(key);
    if (!ns) return false;
    // Within a cluster filter, the namespace's calls that touch that cluster.
    const part = await readPages({ cluster: state.filters.cluster || ns.cluster, namespace: ns.namespace }, NAMESPACE_MAX, request);
    if (!part || request !== state.request) return false;
    merge(part);
    L.loaded.add(key);
    return true;
  }

  // Opens the namespace holding node `id` (reading it first in a large organisation); true
  // when it was closed.
  async function openOf(id, request = state.request) {
    if (!state.large) return openGroupOf(id);
    const key = id && keyOf(id);
    if (!key || state.expanded.has(key)) return false;
    if (!(await ensureLoaded(key, request))) return false;
    state.expanded.add(key);
    return true;
  }

  function outsideLabel(kind, count) {
    const plural = (one, many) => `${count} ${count === 1 ? one : many}`;
    switch (kind) {
      case "internet":
        return plural("internet target", "internet targets");
      case "aws":
        return plural("AWS resource", "AWS resources");
      case "incoming":
        return plural("client outside", "clients outside");
      default:
        return plural(kind, kind);
    }
  }

  // What is drawn for a large organisation: a box per closed namespace and one node per kind of
  // target outside the clusters, with the aggregated view's counts of the calls between them;
  // the workloads of open namespaces with their own calls (a call to a closed namespace joins
  // that box's aggregate). Each call is counted once: by the aggregated view when both its ends
  // are closed, else from the namespace reads.
  function largeShown(graph, index) {
    const L = state.large;
    const nodes = [];
    const rep = new Map();
    const groups = new Map();
    for (const ns of L.namespaces) {
      if (state.expanded.has(ns.id)) continue;
      const group = {
        id: GROUP_PREFIX + ns.id,
        kind: "group",
        name: ns.namespace,
        cluster: ns.cluster,
        namespace: ns.namespace,
        group: ns.id,
        members: L.members(ns),
        out: L.out.get(ns.id) || 0,
        in: L.inc.get(ns.id) || 0,
      };
      groups.set(ns.id, group);
      nodes.push(group);
    }
    const outside = new Map();
    const outsideNode = (kind) => {
      let n = outside.get(kind);
      if (!n) {
        n = { id: `${GROUP_PREFIX}outside/${kind}`, kind: kind === "incoming" ? "internet" : kind, name: outsideLabel(kind, L.external.get(kind) || 0), aggregate: true };
        outside.set(kind, n);
        nodes.push(n);
      }
      return n.id;
    };
    const endOf = (id) => (groups.has(id) ? groups.get(id).id : outsideNode(id));
    const edges = [];
    const add = aggregator(edges);
    for (const e of L.edges) {
      if (state.expanded.has(e.source) || state.expanded.has(e.target)) continue;
      add(endOf(e.source), endOf(e.target), typeof e.edges === "number" ? e.edges : 0);
    }
    for (const n of graph.nodes) {
      if (!isInside(n)) continue;
      const key = groupKey(n);
      if (groups.has(key)) rep.set(n.id, groups.get(key).id);
      else if (state.expanded.has(key)) {
        nodes.push(n);
        rep.set(n.id, n.id);
      }
    }
    const open = (n) => isInside(n) && state.expanded.has(groupKey(n));
    const edgeOf = new Array(graph.edges.length);
    graph.edges.forEach((e, i) => {
      const s = index.byId.get(e.source);
      const t = index.byId.get(e.target);
      if (!open(s) && !open(t)) return;
      for (const n of [s, t]) {
        if (!isInside(n) && !rep.has(n.id)) {
          nodes.push(n);
          rep.set(n.id, n.id);
        }
      }
      const source = rep.get(e.source);
      const target = rep.get(e.target);
      if (source === undefined || target === undefined) return;
      if (source === e.source && target === e.target) {
        edgeOf[i] = edges.length;
        edges.push(e);
        return;
      }
      edgeOf[i] = add(source, target, 1);
    });
    const shown = { nodes, edges, clusters: L.clusters, changes: null };
    return { graph: shown, index: buildIndex(shown), rep, edgeOf, closed: groups.size, namespaces: L.namespaces.length };
  }

  // === drawing ===

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG_NS, tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (parent) parent.appendChild(el);
    return el;
  }

  function text(parent, x, y, content, cls) {
    const t = svg("text", { x, y, class: cls || "" }, parent);
    t.textContent = content;
    return t;
  }

  function arrowMarkers(defs) {
    for (const id of ["arrow", "arrow-internet", "arrow-aws", "arrow-cross", "arrow-out", "arrow-in", "arrow-new", "arrow-gone"]) {
      const m = svg("marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
      svg("path", { d: "M0,0 L10,5 L0,10 z" }, m);
    }
  }

  function drawNode(parent, n, p) {
    const g = svg("g", { class: `node ${n.kind}`, "data-node-id": n.id, transform: `translate(${p.x},${p.y})`, tabindex: 0, role: "button" }, parent);
    g.setAttribute("aria-label", `${nodeTitle(n)} (${nodeSubtitle(n)}, ${nodeWhere(n)})`);
    svg("title", {}, g).textContent = `${n.id}\n${nodeSubtitle(n)}`;
    const rx = n.kind === "internet" ? NODE_H / 2 : 7;
    svg("rect", { class: "box", width: NODE_W, height: NODE_H, rx }, g);
    let x = 12;
    if (n.kind === "internet") {
      // a globe
      svg("circle", { class: "icon", cx: 22, cy: NODE_H / 2, r: 9 }, g);
      svg("ellipse", { class: "icon", cx: 22, cy: NODE_H / 2, rx: 4, ry: 9 }, g);
      svg("path", { class: "icon", d: `M13,${NODE_H / 2} h18` }, g);
      x = 38;
    } else if (n.kind === "aws") {
      svg("rect", { class: "badge", x: 8, y: NODE_H / 2 - 8, width: 28, height: 16, rx: 3 }, g);
      text(g, 12, NODE_H / 2 + 3.5, "AWS", "badge-text");
      x = 42;
    }
    const max = Math.floor((NODE_W - x - 8) / 7.4);
    text(g, x, 18, truncate(nodeTitle(n), max), "name");
    text(g, x, 33, truncate(nodeSubtitle(n), max + 4), "sub");
    return g;
  }

  // Where edges leave and enter a node: spread along its side, in the order of the other end.
  function ports(graph, index, pos, ids, useOut) {
    const at = new Map();
    for (const id of ids) {
      const list = (useOut ? index.out : index.inc).get(id).slice();
      const other = (ei) => pos.get(useOut ? graph.edges[ei].target : graph.edges[ei].source).y;
      list.sort((a, b) => other(a) - other(b));
      const step = Math.min(5, (NODE_H - 12) / Math.max(list.length, 1));
      list.forEach((ei, i) => at.set(ei, (i - (list.length - 1) / 2) * step));
    }
    return at;
  }

  // Calls leave a node on the right and enter on the left. A call to the next column is one
  // curve through the gap between the columns. A longer one, or one back to an earlier column,
  // runs along the gap between rows below its caller (no node is ever there: namespaces are
  // horizontal bands) and turns towards its target in the gap just before the target's column.
  // A call within a column bulges out to the right.
  // Returns the path and where along it a count label goes.
  function edgePath(s, t, dy1, dy2, lane) {
    const x1 = s.x + NODE_W;
    const y1 = s.y + NODE_H / 2 + dy1;
    const y2 = t.y + NODE_H / 2 + dy2;
    const gap = COL - NODE_W;
    if (s === t) {
      const top = s.y - 18;
      return { d: `M${x1},${y1} C${x1 + 36},${y1} ${x1 + 10},${top} ${s.x + NODE_W / 2},${top} S${s.x - 34},${y2} ${s.x - 2},${y2}`, mx: s.x + NODE_W / 2, my: top };
    }
    if (t.x === s.x) {
      const dx = 28 + Math.min(gap - 40, Math.abs(y2 - y1) / 5);
      return { d: `M${x1},${y1} C${x1 + dx},${y1} ${x1 + dx},${y2} ${x1 + 2},${y2}`, mx: x1 + dx * 0.75, my: (y1 + y2) / 2 };
    }
    const x2 = t.x - 2;
    if (x2 > x1 && x2 - x1 <= gap + 40) {
      const dx = (x2 - x1) / 2;
      return { d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`, mx: x1 + dx, my: (y1 + y2) / 2 };
    }
    const cy = s.y + NODE_H + (ROW - NODE_H) / 2 + lane;
    const out = `M${x1},${y1} C${x1 + 22},${y1} ${x1 + 12},${cy} ${x1 + 36},${cy}`;
    if (x2 > x1) {
      const turn = t.x - gap + 12;
      const mid = (turn + x2) / 2;
      return { d: `${out} L${turn},${cy} C${mid},${cy} ${mid},${y2} ${x2},${y2}`, mx: (x1 + 36 + turn) / 2, my: cy };
    }
    const back = Math.min(x1 + 36, t.x - 36);
    return { d: `${out} L${back},${cy} C${t.x - 70},${cy} ${t.x - 70},${y2} ${x2},${y2}`, mx: (x1 + 36 + back) / 2, my: cy };
  }

  function drawGroup(parent, n, p) {
    const g = svg("g", { class: "group", "data-group": n.group, "data-workloads": n.members, transform: `translate(${p.x},${p.y})`, tabindex: 0, role: "button" }, parent);
    const workloads = `${n.members} ${n.members === 1 ? "workload" : "workloads"}`;
    g.setAttribute("aria-label", `namespace ${n.namespace} in cluster ${n.cluster}, ${workloads}: open it`);
    svg("title", {}, g).textContent = `namespace ${n.namespace} in cluster ${n.cluster}\n${workloads}, ${n.out} calls from them, ${n.in} calls to them\nClick to show its workloads`;
    svg("rect", { class: "stack", x: 5, y: -5, width: NODE_W, height: NODE_H, rx: 7 }, g);
    svg("rect", { class: "box", width: NODE_W, height: NODE_H, rx: 7 }, g);
    const max = Math.floor((NODE_W - 40) / 7.4);
    text(g, 12, 18, truncate(n.namespace, max), "name");
    text(g, 12, 33, `${workloads} · ${n.out} calls out`, "sub");
    text(g, NODE_W - 22, 28, "+", "open");
    return g;
  }

  // A drawn edge's end, as the attribute names it: a namespace box by its namespace.
  const endName = (n) => (n.kind === "group" ? n.group : n.id);

  // Lays out and draws the graph. `reason` names what changed (for the timing marks); `keep`
  // keeps the current pan and zoom instead of fitting the drawing into the window.
  function render(reason, keep) {
    const data = state.graph;
    const canvas = $("canvas");
    canvas.querySelector("svg")?.remove();
    state.drawing = null;
    // A large organisation's totals are the aggregated view's: the page holds only a part.
    const large = state.large;
    const nodeCount = large ? large.nodes : data.nodes.length;
    const edgeCount = large ? large.calls : data.edges.length;
    const clusterCount = large ? large.clusterCount : new Set(data.nodes.filter(isInside).map((n) => n.cluster)).size;
    const summary = $("summary");
    summary.dataset.nodes = nodeCount;
    summary.dataset.edges = edgeCount;
    summary.dataset.large = Boolean(large);
    summary.textContent =
      `${nodeCount} ${nodeCount === 1 ? "node" : "nodes"} · ${edgeCount} ${edgeCount === 1 ? "call" : "calls"} · ` +
      `${clusterCount} ${clusterCount === 1 ? "cluster" : "clusters"} · seen in ${WINDOW_TEXT[state.filters.window]}`;
    const changes = data.changes;
    document.body.classList.toggle("changes", Boolean((changes || large) && state.filters.changes));
    document.body.classList.toggle("grouped", state.grouped);
    if (large && state.filters.changes) {
      summary.textContent += ` · since ${CHANGES_TEXT[state.filters.changes]}: new and gone calls marked in open namespaces`;
      delete summary.dataset.new;
      delete summary.dataset.gone;
    } else if (changes && state.filters.changes) {
      summary.textContent += ` · since ${CHANGES_TEXT[state.filters.changes]}: ${changes.new} new, ${changes.gone} gone`;
      summary.dataset.new = changes.new;
      summary.dataset.gone = changes.gone;
    } else {
      delete summary.dataset.new;
      delete summary.dataset.gone;
    }
    const empty = $("empty");
    if (!edgeCount) {
      empty.hidden = false;
      empty.textContent = state.filters.window === "all" && !state.filters.cluster && !state.filters.namespace && !state.filters.workload
        ? "No calls have been reported yet. Install the cluster agent in a cluster and its calls appear here."
        : "No calls match these filters. Widen the time window or clear a filter.";
      $("collapse-all").hidden = true;
      renderDetails();
      return;
    }
    empty.hidden = true;

    const shown = shownGraph(data, state.index);
    state.shown = shown;
    const { graph, index } = shown;
    if (state.grouped) {
      summary.textContent += ` · ${shown.namespaces - shown.closed} of ${shown.namespaces} namespaces open`;
    }
    $("collapse-all").hidden = !state.grouped || shown.closed === shown.namespaces;
    const l = layout(graph, index);
    state.layouts++;
    canvas.dataset.layouts = state.layouts;
    const root = svg("svg", { class: "graph", id: "graph", width: "100%", height: "100%", role: "img" });
    root.setAttribute("aria-label", `Access graph: ${summary.textContent}`);
    arrowMarkers(svg("defs", {}, root));
    const viewport = svg("g", { class: "viewport" }, root);

    const groups = svg("g", { class: "groups" }, viewport);
    l.clusters.forEach((c, i) => {
      const g = svg("g", { class: `cluster cl-${i % CLUSTER_TINTS}`, "data-cluster": c.name }, groups);
      svg("rect", { x: c.x, y: c.y, width: c.w, height: c.h, rx: 12 }, g);
      text(g, c.x + 14, c.y + 21, `cluster ${truncate(c.name, Math.max(8, Math.floor(c.w / 9) - 10))}`, "label");
      const summaryOf = graph.clusters.find((s) => s.name === c.name);
      if (summaryOf) {
        const label = text(g, c.x + c.w - 14, c.y + 20, `${summaryOf.edges} ${summaryOf.edges === 1 ? "call" : "calls"} observed`, "count");
        label.setAttribute("text-anchor", "end");
      }
    });
    const bands = new Map();
    for (const ns of l.namespaces) {
      const key = `${ns.cluster}/${ns.namespace}`;
      // A closed namespace is its box; only open ones get a band.
      if (state.grouped && !state.expanded.has(key)) continue;
      const g = svg("g", { class: "namespace", "data-namespace": key }, groups);
      svg("rect", { x: ns.x, y: ns.y, width: ns.w, height: ns.h, rx: 8 }, g);
      text(g, ns.x + 8, ns.y + 15, `namespace ${truncate(ns.namespace, Math.floor(ns.w / 6.5) - 10)}`);
      bands.set(key, ns);
      if (state.grouped) {
        const close = svg("g", { class: "ns-close", "data-collapse": key, tabindex: 0, role: "button" }, g);
        close.setAttribute("aria-label", `Close namespace ${ns.namespace} of cluster ${ns.cluster}`);
        svg("title", {}, close).textContent = "Close this namespace back into one box";
        svg("rect", { x: ns.x + ns.w - 62, y: ns.y + 3, width: 56, height: 16, rx: 4 }, close);
        text(close, ns.x + ns.w - 34, ns.y + 15, "close").setAttribute("text-anchor", "middle");
      }
    }
    for (const o of l.outsideGroups) {
      const g = svg("g", { class: `outside ${o.kind}`, "data-outside": o.kind }, groups);
      svg("rect", { x: o.x, y: o.y, width: o.w, height: o.h, rx: 12 }, g);
      text(g, o.x + 14, o.y + 20, o.label);
    }

    const edgeLayer = svg("g", { class: "edges" }, viewport);
    const countLayer = svg("g", { class: "counts" }, viewport);
    const ids = graph.nodes.map((n) => n.id);
    const outAt = ports(graph, index, l.pos, ids, true);
    const inAt = ports(graph, index, l.pos, ids, false);
    const shownEls = new Array(graph.edges.length);
    graph.edges.forEach((e, i) => {
      const s = index.byId.get(e.source);
      const t = index.byId.get(e.target);
      const cross = isInside(t) && s.cluster !== t.cluster;
      const [sp, tp] = [l.pos.get(e.source), l.pos.get(e.target)];
      const geometry = edgePath(sp, tp, outAt.get(i), inAt.get(i), ((i % 5) - 2) * 1.6);
      let cls = `edge k-${t.kind === "group" ? "workload" : t.kind}`;
      if (cross) cls += " cross";
      if (tp.x <= sp.x) cls += " back";
      if (e.aggregate) {
        cls += ` agg w${e.count >= 50 ? 4 : e.count >= 20 ? 3 : e.count >= 5 ? 2 : 1}`;
        const path = svg("path", { class: cls, "data-agg-edge": `${endName(s)} -> ${endName(t)}`, "data-count": e.count, d: geometry.d }, edgeLayer);
        svg("title", {}, path).textContent = `${e.count} ${e.count === 1 ? "call" : "calls"} from ${endName(s)} to ${endName(t)}`;
        shownEls[i] = path;
        // A count on the line where it stands for more than one call.
        if (e.count < 2) return;
        const label = svg("g", { class: "agg-count", transform: `translate(${geometry.mx},${geometry.my})` }, countLayer);
        const digits = String(e.count).length;
        svg("rect", { x: -(4 + digits * 3.6), y: -8, width: 8 + digits * 7.2, height: 16, rx: 8 }, label);
        text(label, 0, 4, String(e.count)).setAttribute("text-anchor", "middle");
        return;
      }
      cls += volumeClass(e);
      if (e.change === "new" || e.change === "gone") cls += ` change-${e.change}`;
      const path = svg("path", { class: cls, "data-edge": `${e.source} -> ${e.target}`, d: geometry.d }, edgeLayer);
      const facts = edgeFacts(e).map(([k, v]) => `\n${k}: ${Array.isArray(v) ? v.join("; ") : v}`);
      svg("title", {}, path).textContent = `${e.source} → ${e.target}${facts.join("")}`;
      shownEls[i] = path;
    });

    const nodeLayer = svg("g", { class: "nodes" }, viewport);
    const shownNodeEls = new Map();
    for (const n of graph.nodes) {
      shownNodeEls.set(n.id, n.kind === "group" ? drawGroup(nodeLayer, n, l.pos.get(n.id)) : drawNode(nodeLayer, n, l.pos.get(n.id)));
    }
    // Each node and call of the data, by the element that shows it (its namespace's box and
    // the aggregate call while closed).
    const nodeEls = new Map(data.nodes.map((n) => [n.id, shownNodeEls.get(shown.rep.get(n.id))]));
    const edgeEls = shown.edgeOf.map((si) => shownEls[si]);

    canvas.appendChild(root);
    state.drawing = { root, viewport, nodeEls, edgeEls, pos: l.pos, rep: shown.rep, bands, width: l.width, height: l.height, marked: [] };
    if (keep) applyView();
    else fit(0.55);
    highlight();
    renderDetails();
    if (!keep) reveal(state.selected);
    markDrawn(reason);
  }

  // A timing mark once the browser has painted the new drawing: `performance` entries named
  // intentmap:drawn (and intentmap:interaction where a click or search began) let a benchmark
  // read time to first render and to each interaction.
  function markDrawn(reason) {
    requestAnimationFrame(() =>
      setTimeout(() => {
        performance.mark("intentmap:drawn", { detail: reason });
        state.drawn++;
        $("canvas").dataset.drawn = state.drawn;
      }),
    );
  }

  function interaction(reason) {
    performance.mark("intentmap:interaction", { detail: reason });
  }

  // Opens or closes a namespace: a new layout, the view stays where it was and the namespace
  // in the middle of it.
  async function toggleGroup(key, open) {
    interaction(open ? "expand" : "collapse");
    // A large organisation's namespace is read the first time it opens.
    if (open && state.large && !state.large.loaded.has(key)) {
      const request = state.request;
      document.body.classList.add("busy");
      try {
        if (!(await ensureLoaded(key, request))) return;
      } catch (e) {
        if (request === state.request) failed(e, `Could not read namespace ${key}`);
        return;
      } finally {
        if (request === state.request) document.body.classList.remove("busy");
      }
    }
    if (open) state.expanded.add(key);
    else state.expanded.delete(key);
    const before = state.drawing && state.drawing.bands.get(key);
    // Its workloads readable: from an overview, opening a namespace zooms in.
    if (open && state.view.k < 0.7) state.view.k = 0.8;
    render(open ? "expand" : "collapse", true);
    const d = state.drawing;
    const band = d && d.bands.get(key);
    if (band) centreOn(band.x + band.w / 2, band.y + Math.min(band.h, 400) / 2);
    else if (before) {
      const box = d && d.pos.get(GROUP_PREFIX + key);
      if (box) centreOn(box.x + NODE_W / 2, box.y + NODE_H / 2);
    }
  }

  function collapseAll() {
    interaction("collapse-all");
    state.expanded.clear();
    render("collapse-all", false);
  }

  // === search ===

  function searchMatches(query) {
    const q = query.trim().toLowerCase();
    if (!q || !state.graph) return [];
    const exact = [];
    const partial = [];
    for (const n of state.graph.nodes) {
      const name = nodeTitle(n).toLowerCase();
      if (name === q) exact.push(n.id);
      else if (name.includes(q)) partial.push(n.id);
    }
    return (exact.length ? exact : partial).sort(byName);
  }

  function searchStatus(text) {
    $("search-status").textContent = text;
  }

  function onSearchInput() {
    const query = $("search").value.slice(0, SEARCH_MAX);
    if (!query.trim()) {
      searchStatus("");
      return;
    }
    const n = searchMatches(query).length;
    if (!n && state.large) searchStatus("press Enter to look in every namespace");
    else searchStatus(n ? `${n} ${n === 1 ? "match" : "matches"}, press Enter` : "no workload by that name");
  }

  // A large organisation's search: the server's workloads of exactly that name (Kubernetes names
  // are lower case) join what the page holds, which is then searched as usual.
  // Text that cannot be a name is only searched for in what the page holds.
  async function largeMatches(query) {
    const name = query.trim().toLowerCase();
    if (name.length <= SEARCH_MAX && /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name)) {
      const part = await readPages({ workload: name }, NAMESPACE_MAX, state.request);
      if (part) merge(part);
    }
    return searchMatches(query);
  }

  // Enter: the next workload matching the name (an exact name first, else a part of one); its
  // namespace opens, it is selected, marked and brought into the middle of the view.
  async function search() {
    const query = $("search").value.slice(0, SEARCH_MAX).trim();
    if (!query) return;
    interaction("search");
    const s = state.search;
    if (query.toLowerCase() !== s.query) {
      try {
        s.matches = state.large ? await largeMatches(query) : searchMatches(query);
      } catch (e) {
        failed(e, "Could not search");
        return;
      }
      s.query = query.toLowerCase();
      s.at = -1;
    }
    if (!s.matches.length) {
      searchStatus(`No workload named like “${query}” in this view. Check the spelling or widen the filters.`);
      return;
    }
    s.at = (s.at + 1) % s.matches.length;
    const id = s.matches[s.at];
    state.found = id;
    state.selected = id;
    writeFragment();
    let opened;
    try {
      opened = await openOf(id);
    } catch (e) {
      failed(e, `Could not read the namespace of ${id}`);
      return;
    }
    if (opened) render("search", true);
    else {
      highlight();
      renderDetails();
      markDrawn("search");
    }
    if (state.view.k < 0.8) state.view.k = 1;
    reveal(id);
    searchStatus(s.matches.length === 1 ? "1 match" : `${s.at + 1} of ${s.matches.length} · Enter: next`);
  }

  // === zoom and pan: one transform ===

  function applyView() {
    const d = state.drawing;
    if (!d) return;
    const { x, y, k } = state.view;
    d.viewport.setAttribute("transform", `translate(${x.toFixed(1)},${y.toFixed(1)}) scale(${k.toFixed(4)})`);
    $("canvas").dataset.zoom = k.toFixed(3);
  }

  function canvasSize() {
    const canvas = $("canvas");
    return { w: canvas.clientWidth || 1000, h: canvas.clientHeight || 700 };
  }

  // The whole drawing in view, but never smaller than `min` (names stay readable on first
  // load; the Fit button passes a small minimum for an overview).
  function fit(min) {
    const d = state.drawing;
    if (!d) return;
    const { w, h } = canvasSize();
    const k = Math.max(min, Math.min(1, (w - 4) / d.width, (h - 4) / d.height));
    state.view = { k, x: Math.max(0, (w - d.width * k) / 2), y: Math.max(0, (h - d.height * k) / 2) };
    applyView();
  }

  // Puts the drawing's point (px, py) in the middle of the view.
  function centreOn(px, py) {
    const { w, h } = canvasSize();
    state.view.x = w / 2 - px * state.view.k;
    state.view.y = h / 2 - py * state.view.k;
    applyView();
  }

  // Brings a node into the middle of the view.
  function reveal(id) {
    const d = state.drawing;
    const shownId = d && id && d.rep.get(id);
    const p = shownId && d.pos.get(shownId);
    if (!p) return;
    centreOn(p.x + NODE_W / 2, p.y + NODE_H / 2);
  }

  // Zooms by `factor` keeping the canvas point (cx, cy) where it is.
  function zoomAt(factor, cx, cy) {
    const v = state.view;
    const k = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, v.k * factor));
    v.x = cx - ((cx - v.x) * k) / v.k;
    v.y = cy - ((cy - v.y) * k) / v.k;
    v.k = k;
    applyView();
  }

  function zoomBy(factor) {
    const { w, h } = canvasSize();
    zoomAt(factor, w / 2, h / 2);
  }

  function enablePanning() {
    const canvas = $("canvas");
    let start = null;
    canvas.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0 || ev.target.closest(".node, .group, .ns-close")) return;
      start = { x: ev.clientX, y: ev.clientY, vx: state.view.x, vy: state.view.y, moved: false };
      canvas.setPointerCapture(ev.pointerId);
    });
    canvas.addEventListener("pointermove", (ev) => {
      if (!start) return;
      const dx = ev.clientX - start.x;
      const dy = ev.clientY - start.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) {
        start.moved = true;
        canvas.classList.add("panning");
      }
      state.view.x = start.vx + dx;
      state.view.y = start.vy + dy;
      applyView();
    });
    const end = (ev) => {
      if (!start) return;
      const clicked = !start.moved;
      start = null;
      canvas.classList.remove("panning");
      if (canvas.hasPointerCapture(ev.pointerId)) canvas.releasePointerCapture(ev.pointerId);
      if (clicked && ev.type === "pointerup") select(null);
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener(
      "wheel",
      (ev) => {
        ev.preventDefault();
        const rect = canvas.getBoundingClientRect();
        const delta = ev.deltaMode === 1 ? ev.deltaY * 16 : ev.deltaY;
        zoomAt(Math.exp(-Math.max(-300, Math.min(300, delta)) * 0.002), ev.clientX - rect.left, ev.clientY - rect.top);
      },
      { passive: false },
    );
  }

  // === selection: calls and callers ===

  async function select(id) {
    if (id !== state.found) state.found = null;
    state.selected = id;
    writeFragment();
    // A workload in a closed namespace (a peer in the side panel): open it first.
    let opened;
    try {
      opened = await openOf(id);
    } catch (e) {
      failed(e, `Could not read the namespace of ${id}`);
      return;
    }
    if (state.selected !== id) return;
    if (opened) {
      render("select", true);
      reveal(id);
      return;
    }
    highlight();
    renderDetails();
  }

  // Only the selected node's own edges change class: no work proportional to the whole graph.
  function highlight() {
    const d = state.drawing;
    if (!d) return;
    for (const [el, classes] of d.marked) el.classList.remove(...classes);
    d.marked = [];
    // A call the drawing leaves out (both ends closed, counted by the aggregated view) has no
    // element.
    const mark = (el, ...classes) => {
      if (!el) return;
      el.classList.add(...classes);
      d.marked.push([el, classes]);
    };
    const found = state.found && d.nodeEls.get(state.found);
    if (found) mark(found, "found");
    const id = state.selected;
    const own = id && d.nodeEls.get(id);
    d.root.classList.toggle("focus", Boolean(own));
    if (!own) return;
    mark(own, "selected");
    for (const ei of state.index.out.get(id)) {
      mark(d.edgeEls[ei], "hl", "out");
      mark(d.nodeEls.get(state.graph.edges[ei].target), "near");
    }
    for (const ei of state.index.inc.get(id)) {
      mark(d.edgeEls[ei], "hl", "in");
      mark(d.nodeEls.get(state.graph.edges[ei].source), "near");
    }
  }

  function edgeFacts(e) {
    const facts = [];
    if (e.ports && e.ports.length) facts.push(["ports", e.ports.map(fmtPort).join(", ")]);
    if (e.actions && e.actions.length) facts.push(["actions", e.actions.join(", ")]);
    if (e.http && e.http.length) facts.push(["HTTP", e.http.map((r) => (r.methods && r.methods.length ? `${r.methods.join(",")} ${r.path}` : r.path))]);
    if (e.kafka && e.kafka.length) {
      facts.push([
        "Kafka topics",
        e.kafka.map((t) => {
          let s = t.name;
          if (t.operations && t.operations.length) s += `: ${t.operations.join(" ")}`;
          if (t.denied && t.denied.length) s += ` (denied: ${t.denied.join(" ")})`;
          return s;
        }),
      ]);
    }
    if (e.via && e.via.length) facts.push(["via", e.via.join(", ")]);
    if (typeof e.connections === "number") facts.push(["connections", String(e.connections)]);
    if (e.bytes) facts.push(["bytes", `${fmtBytes(e.bytes.sent)} sent, ${fmtBytes(e.bytes.received)} received`]);
    if (e.first_seen) facts.push(["first seen", fmtTime(e.first_seen)]);
    if (e.last_seen) facts.push(["last seen", fmtTime(e.last_seen)]);
    if (e.observed_in) facts.push(["observed in", `cluster ${e.observed_in}`]);
    if (e.change === "new") facts.push(["change", `new: first seen after ${fmtTime(state.graph.changes.since)}`]);
    if (e.change === "gone") facts.push(["change", `gone: not seen since ${fmtTime(state.graph.changes.since)}`]);
    return facts;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function factsList(e) {
    const dl = el("dl", { class: "facts" });
    for (const [k, v] of edgeFacts(e)) {
      const dd = el("dd");
      if (Array.isArray(v)) dd.append(el("ul", null, ...v.map((item) => el("li", null, item))));
      else dd.textContent = v;
      dl.append(el("dt", null, k), dd);
    }
    return dl;
  }

  function peerItem(e, peerId, self) {
    const peer = state.index.byId.get(peerId);
    const cross = isInside(peer) && isInside(self) && peer.cluster !== self.cluster;
    const li = el("li", { class: `k-${peer.kind}`, "data-peer": peerId });
    const button = el("button", { type: "button", class: "peer", title: peerId }, nodeTitle(peer));
    button.addEventListener("click", () => select(peerId));
    li.append(button, el("span", { class: "kind-badge" }, nodeSubtitle(peer)));
    if (cross) li.append(el("span", { class: "tag" }, "cross-cluster"));
    li.append(el("p", { class: "where" }, nodeWhere(peer)), factsList(e));
    return li;
  }

  function renderDetails() {
    const box = $("details");
    box.replaceChildren();
    box.removeAttribute("data-selected");
    const id = state.selected;
    if (!id) {
      box.append(el("p", { class: "hint" }, "Click a workload to see what it calls and who calls it."));
      return;
    }
    const n = state.index && state.index.byId.get(id);
    if (!n && id.startsWith(`${GROUP_PREFIX}outside/`)) {
      box.append(el("p", { class: "hint" }, "Calls from closed namespaces to what is outside the clusters, counted. Open a namespace to see its own."));
      return;
    }
    if (!n) {
      box.append(el("p", { class: "hint" }, `${id} is not in this view: no call of it matches the filters.`));
      return;
    }
    box.dataset.selected = id;
    const calls = state.index.out.get(id).map((ei) => state.graph.edges[ei]);
    const callers = state.index.inc.get(id).map((ei) => state.graph.edges[ei]);
    calls.sort((a, b) => byName(a.target, b.target));
    callers.sort((a, b) => byName(a.source, b.source));
    box.append(
      el("h2", { title: n.id }, nodeTitle(n), el("span", { class: "kind-badge" }, nodeSubtitle(n))),
      el("p", { class: "where" }, isInside(n) ? `namespace ${n.namespace}, cluster ${n.cluster}` : nodeWhere(n)),
    );
    if (n.kind === "aws") box.append(el("p", { class: "where" }, n.name));
    box.append(el("h3", null, `Calls (${calls.length})`));
    box.append(calls.length ? el("ul", { id: "calls", class: "peers" }, ...calls.map((e) => peerItem(e, e.target, n))) : el("p", { class: "hint", id: "calls" }, "No calls observed."));
    box.append(el("h3", null, `Callers (${callers.length})`));
    box.append(
      callers.length ? el("ul", { id: "callers", class: "peers" }, ...callers.map((e) => peerItem(e, e.source, n))) : el("p", { class: "hint", id: "callers" }, "No callers observed."),
    );
    if (isInside(n)) {
      const button = el("button", { type: "button", "data-download-cluster": n.cluster }, `Download ClientIntents of cluster ${n.cluster}`);
      button.addEventListener("click", () => downloadIntents(n.cluster, button));
      box.append(el("p", null, button));
    }
  }

  // === filters and downloads ===

  function fillSelect(select, placeholder, values, current) {
    const all = [...values];
    if (current && !all.includes(current)) all.push(current);
    select.replaceChildren(el("option", { value: "" }, placeholder), ...all.map((v) => el("option", { value: v }, v)));
    select.value = current || "";
  }

  function renderFilters() {
    fillSelect($("filter-cluster"), "All clusters", state.clusters, state.filters.cluster);
    fillSelect($("filter-namespace"), "All namespaces", state.namespaceOptions, state.filters.namespace);
    $("filter-window").value = state.filters.window;
    $("filter-changes").value = state.filters.changes;
    $("filter-workload").value = state.filters.workload;
  }

  function renderDownloads() {
    const list = $("downloads");
    list.replaceChildren();
    if (!state.clusters.length) {
      list.append(el("li", { class: "status" }, "No clusters registered yet."));
      return;
    }
    for (const cluster of state.clusters) {
      const button = el("button", { type: "button", "data-download-cluster": cluster, title: `Save clientintents-${cluster}.yaml` }, `⤓ ${cluster}`);
      button.addEventListener("click", () => downloadIntents(cluster, button));
      list.append(el("li", null, button));
    }
  }

  async function downloadIntents(cluster, button) {
    const version = $("intents-version").value;
    button.disabled = true;
    try {
      const res = await api(`/api/v1/clusters/${encodeURIComponent(cluster)}/client-intents?version=${encodeURIComponent(version)}`, "application/yaml");
      const blob = new Blob([await res.text()], { type: "application/yaml" });
      const url = URL.createObjectURL(blob);
      const a = el("a", { href: url, download: `clientintents-${cluster}.yaml` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30000);
      showError("");
    } catch (e) {
      failed(e, `Could not download the ClientIntents of cluster ${cluster}`);
    } finally {
      button.disabled = false;
    }
  }

  function readFilters() {
    state.filters = {
      cluster: $("filter-cluster").value,
      namespace: $("filter-namespace").value,
      window: $("filter-window").value,
      changes: $("filter-changes").value,
      workload: $("filter-workload").value.trim(),
    };
    writeFragment();
    load();
  }

  // === a token from a link ===

  async function confirmLink(token) {
    document.body.dataset.state = "checking";
    let who;
    try {
      const res = await fetch("/api/v1/whoami", { headers: { Authorization: `Bearer ${token}`, Accept: "application/json" }, cache: "no-store" });
      if (!res.ok) throw new Error(await errorText(res));
      who = await res.json();
    } catch (e) {
      showLogin(`That API token was not accepted: ${e.message}. Check the token and sign in again.`);
      return;
    }
    state.pending = token;
    $("login").hidden = true;
    $("app").hidden = true;
    $("confirm-org").textContent = who.org_name;
    $("confirm-org-button").textContent = who.org_name;
    $("confirm-token-name").textContent = who.token.name;
    $("confirm-scopes").textContent = who.token.scopes.join(", ");
    $("confirm").hidden = false;
    $("confirm-no").focus();
    document.body.dataset.state = "confirm";
  }

  // === start ===

  function bind() {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("login-token").value.trim();
      if (!token) return;
      saveToken(token);
      $("login-error").hidden = true;
      load();
    });
    $("confirm-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (!state.pending) return;
      saveToken(state.pending);
      state.pending = null;
      load();
    });
    $("confirm-no").addEventListener("click", () => showLogin(""));
    $("logout").addEventListener("click", () => {
      clearToken();
      state.request++;
      state.graph = null;
      showLogin("");
    });
    const filters = $("filters");
    filters.addEventListener("submit", (ev) => {
      ev.preventDefault();
      readFilters();
    });
    for (const id of ["filter-cluster", "filter-namespace", "filter-window", "filter-changes"]) $(id).addEventListener("change", readFilters);
    $("zoom-in").addEventListener("click", () => zoomBy(1.25));
    $("zoom-out").addEventListener("click", () => zoomBy(0.8));
    $("zoom-fit").addEventListener("click", () => fit(0.05));
    $("collapse-all").addEventListener("click", collapseAll);
    $("search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      search();
    });
    $("search").addEventListener("input", onSearchInput);
    const canvas = $("canvas");
    // A node selects it; a namespace box opens; a band's "close" closes it.
    const activate = (target) => {
      if (!target.closest) return false;
      const group = target.closest("[data-group]");
      if (group) {
        toggleGroup(group.getAttribute("data-group"), true);
        return true;
      }
      const close = target.closest("[data-collapse]");
      if (close) {
        toggleGroup(close.getAttribute("data-collapse"), false);
        return true;
      }
      const node = target.closest("[data-node-id]");
      if (node) {
        select(node.getAttribute("data-node-id"));
        return true;
      }
      return false;
    };
    canvas.addEventListener("click", (ev) => activate(ev.target));
    canvas.addEventListener("keydown", (ev) => {
      if ((ev.key === "Enter" || ev.key === " ") && activate(ev.target)) ev.preventDefault();
    });
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && state.selected) select(null);
    });
    enablePanning();
  }

  function start() {
    const params = readFragment();
    const linked = (params.get("token") || "").trim();
    for (const key of ["cluster", "namespace", "workload"]) if (params.has(key)) state.filters[key] = params.get(key);
    if (WINDOWS.includes(params.get("window"))) state.filters.window = params.get("window");
    if (CHANGES.includes(params.get("changes"))) state.filters.changes = params.get("changes");
    if (params.get("select")) state.selected = params.get("select");
    // The token leaves the address bar (and the history) at once, adopted or not.
    writeFragment();
    bind();
    state.token = loadToken() || state.token;
    if (linked && linked !== state.token) confirmLink(linked);
    else if (state.token) load();
    else showLogin("");
  }

  start();
})();

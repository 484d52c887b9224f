//! The access-graph page for a large organisation, in a real browser: 10 clusters, 1,000
//! workloads and 5,000 calls ingested through the API on a socket, headless Chromium driven over
//! the DevTools protocol with real clicks, wheel turns, drags and keystrokes. Screenshots go to
//! `target/web-test/`.

mod browser;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use self::browser::{
    assert_png, chromium_binary, screenshot_path, seed, Api, Chromium, Rect, Shape,
};

/// `[[name, number], ...]` from the page as a map.
fn counts(value: &Value) -> BTreeMap<String, u64> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|pair| (pair[0].as_str().unwrap().to_owned(), pair[1].as_u64().unwrap()))
        .collect()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value.as_array().expect("an array").iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

const GROUPS: &str =
    "[...document.querySelectorAll('[data-group]')].map((g) => [g.dataset.group, Number(g.dataset.workloads)])";
const AGGREGATES: &str =
    "[...document.querySelectorAll('[data-agg-edge]')].map((p) => [p.dataset.aggEdge, Number(p.dataset.count)])";
const COUNT_LABELS: &str =
    "[...document.querySelectorAll('.agg-count text')].map((t) => Number(t.textContent))";
const NODES: &str = "[...document.querySelectorAll('[data-node-id]')].map((n) => n.dataset.nodeId)";
const EDGES: &str = "[...document.querySelectorAll('[data-edge]')].map((p) => p.dataset.edge)";
const LAYOUTS: &str = "Number(document.getElementById('canvas').dataset.layouts)";
const TRANSFORM: &str = "document.querySelector('svg.graph g.viewport').getAttribute('transform')";
const ZOOM: &str = "Number(document.getElementById('canvas').dataset.zoom)";

/// What the collapsed view must show, from the API's graph: workloads per namespace and calls
/// per pair of namespaces.
struct Expected {
    members: BTreeMap<String, u64>,
    pairs: BTreeMap<String, u64>,
    namespace_of: BTreeMap<String, String>,
    edges: Vec<(String, String)>,
}

fn expected(graph: &Value) -> Expected {
    let mut members = BTreeMap::new();
    let mut namespace_of = BTreeMap::new();
    for n in graph["nodes"].as_array().unwrap() {
        let key =
            format!("{}/{}", n["cluster"].as_str().unwrap(), n["namespace"].as_str().unwrap());
        *members.entry(key.clone()).or_insert(0) += 1;
        namespace_of.insert(n["id"].as_str().unwrap().to_owned(), key);
    }
    let mut pairs = BTreeMap::new();
    let mut edges = Vec::new();
    for e in graph["edges"].as_array().unwrap() {
        let (s, t) = (e["source"].as_str().unwrap(), e["target"].as_str().unwrap());
        *pairs.entry(format!("{} -> {}", namespace_of[s], namespace_of[t])).or_insert(0) += 1;
        edges.push((s.to_owned(), t.to_owned()));
    }
    Expected { members, pairs, namespace_of, edges }
}

/// Types `text` into the search box, presses Enter and waits for the page to say it found no
/// workload; returns what it says.
async fn search_finding_nothing(page: &mut Chromium, text: &str) -> Value {
    page.click_on("#search").await;
    page.eval("document.getElementById('search').select()").await;
    page.type_text(text).await;
    page.press_enter().await;
    page.wait_for(
        "document.getElementById('search-status').textContent.startsWith('No workload') && document.getElementById('search-status').textContent",
        "the search to say it found nothing",
    )
    .await
}

/// A point of the canvas with nothing clickable under it (a drag there pans).
async fn empty_spot(page: &mut Chromium) -> (f64, f64) {
    let canvas = page.rect("#canvas").await;
    for fy in [0.95, 0.5, 0.05, 0.3, 0.7] {
        for fx in [0.95, 0.5, 0.05, 0.3, 0.7] {
            let (x, y) = (canvas.x + canvas.w * fx, canvas.y + canvas.h * fy);
            let free = page
                .eval(&format!(
                    "(() => {{ const e = document.elementFromPoint({x}, {y}); return Boolean(e && e.closest('#canvas') && !e.closest('.node, .group, .ns-close')); }})()"
                ))
                .await;
            if free == Value::Bool(true) {
                return (x, y);
            }
        }
    }
    panic!("no empty spot on the canvas to drag");
}

fn inside(r: &Rect, canvas: &Rect) -> bool {
    r.x >= canvas.x
        && r.y >= canvas.y
        && r.x + r.w <= canvas.x + canvas.w
        && r.y + r.h <= canvas.y + canvas.h
}

#[tokio::test]
async fn a_large_organisation_is_grouped_by_namespace_and_opens_on_a_click_and_a_search() {
    chromium_binary();
    let api = Api::start("cloudweblarge").await;
    let token = seed(&api, "megacorp", Shape::LARGE).await;
    let graph = api.graph(&token).await;
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 1000, "1,000 workloads");
    assert_eq!(graph["edges"].as_array().unwrap().len(), 5000, "5,000 calls");
    let want = expected(&graph);
    assert_eq!(want.members.len(), 50, "10 clusters of 5 namespaces");

    let mut page = Chromium::graph_page(&api, &token).await;

    // Grouped: one box per namespace with its workload count, one call per pair of namespaces
    // with the number of calls it stands for, and no single workload.
    assert_eq!(counts(&page.eval(GROUPS).await), want.members, "a box per namespace");
    assert_eq!(counts(&page.eval(AGGREGATES).await), want.pairs, "aggregate calls");
    let mut labels: Vec<u64> = page
        .eval(COUNT_LABELS)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let mut expected_labels: Vec<u64> = want.pairs.values().copied().filter(|&n| n > 1).collect();
    labels.sort_unstable();
    expected_labels.sort_unstable();
    assert_eq!(labels, expected_labels, "each aggregate of several calls shows its count");
    assert_eq!(want.pairs.values().sum::<u64>(), 5000);
    assert!(strings(&page.eval(NODES).await).is_empty(), "no workload drawn while grouped");
    let summary = page.eval("document.getElementById('summary').textContent").await;
    let summary = summary.as_str().unwrap();
    assert!(
        summary.contains("1000 nodes · 5000 calls · 10 clusters")
            && summary.contains("0 of 50 namespaces open"),
        "{summary}"
    );
    let shot = screenshot_path("large-org-grouped.png");
    page.screenshot(&shot).await;
    assert_png(&shot);

    // Pan (a drag) and zoom (the wheel, the + button) move the drawing, never lay it out again.
    let layouts = page.eval(LAYOUTS).await;
    assert_eq!(layouts, Value::from(1), "one layout for the first drawing");
    let before = page.eval(TRANSFORM).await;
    let (x, y) = empty_spot(&mut page).await;
    page.drag((x, y), (x - 200.0, y - 150.0)).await;
    let panned = page.eval(TRANSFORM).await;
    assert_ne!(panned, before, "a drag pans");
    let zoom = page.eval(ZOOM).await.as_f64().unwrap();
    let canvas = page.rect("#canvas").await;
    let (cx, cy) = canvas.centre();
    page.wheel(cx, cy, -240.0).await;
    let wheeled = page.eval(ZOOM).await.as_f64().unwrap();
    assert!(wheeled > zoom * 1.2, "the wheel zooms in: {zoom} -> {wheeled}");
    page.click_on("#zoom-in").await;
    let plus = page.eval(ZOOM).await.as_f64().unwrap();
    assert!((plus / wheeled - 1.25).abs() < 0.01, "+ zooms by 1.25: {wheeled} -> {plus}");
    page.click_on("#zoom-out").await;
    assert!(page.eval(ZOOM).await.as_f64().unwrap() < plus, "− zooms out");
    assert_eq!(page.eval(LAYOUTS).await, layouts, "panning and zooming never lay out again");

    // The whole organisation in view, then a real click on one namespace's box opens it: its
    // 20 workloads take the box's place, calls among them drawn one by one, the rest still
    // aggregated.
    page.click_on("#zoom-fit").await;
    let open = "prod-3/payments";
    let selector = format!("[data-group=\"{open}\"]");
    let rect = page.rect(&selector).await;
    let canvas = page.rect("#canvas").await;
    assert!(inside(&rect, &canvas), "after Fit the box is on screen: {rect:?} in {canvas:?}");
    let (x, y) = rect.centre();
    let hit = page
        .eval(&format!(
            "document.elementFromPoint({x}, {y}).closest('[data-group]')?.dataset.group || ''"
        ))
        .await;
    assert_eq!(hit, Value::from(open), "the click lands on the box");
    let drawn = page.drawn().await;
    page.click(x, y).await;
    page.wait_drawn_after(drawn).await;
    let groups = counts(&page.eval(GROUPS).await);
    assert_eq!(groups.len(), 49, "the opened namespace is no longer a box");
    assert!(!groups.contains_key(open));
    let nodes = strings(&page.eval(NODES).await);
    let members: BTreeSet<String> =
        want.namespace_of.iter().filter(|(_, ns)| *ns == open).map(|(id, _)| id.clone()).collect();
    assert_eq!(members.len(), 20);
    assert_eq!(nodes, members, "its workloads are drawn, and only those");
    let single = strings(&page.eval(EDGES).await);
    let inner: BTreeSet<String> = want
        .edges
        .iter()
        .filter(|(s, t)| members.contains(s) && members.contains(t))
        .map(|(s, t)| format!("{s} -> {t}"))
        .collect();
    assert_eq!(single, inner, "calls among its workloads are drawn one by one");
    let aggregated: u64 = counts(&page.eval(AGGREGATES).await).values().sum();
    assert_eq!(
        aggregated + single.len() as u64,
        5000,
        "every call is drawn, alone or in an aggregate"
    );
    assert_eq!(
        page.eval(&format!("Boolean(document.querySelector('[data-namespace=\"{open}\"]'))")).await,
        Value::Bool(true),
        "the open namespace has its band"
    );
    assert_eq!(page.eval(LAYOUTS).await, Value::from(2), "one layout for the click");
    let first = page.rect(&format!("[data-node-id=\"{open}/payments-00\"]")).await;
    let canvas = page.rect("#canvas").await;
    assert!(inside(&first, &canvas), "the opened workloads are in view: {first:?}");
    assert!(first.w > 120.0, "and readable ({} px wide)", first.w);
    let shot = screenshot_path("large-org-namespace-open.png");
    page.screenshot(&shot).await;
    assert_png(&shot);

    // Search: typed into the box, Enter. The name is in all ten clusters: the first opens its
    // namespace, is selected, marked and brought into view; Enter again goes to the next.
    page.click_on("#search").await;
    page.type_text("identity-07").await;
    let status = page
        .wait_for("document.getElementById('search-status').textContent", "the search box's count")
        .await;
    assert_eq!(status, Value::from("10 matches, press Enter"));
    let drawn = page.drawn().await;
    page.press_enter().await;
    page.wait_drawn_after(drawn).await;
    let found = "prod-0/identity/identity-07";
    let marked = page
        .eval("[...document.querySelectorAll('.node.found')].map((n) => [n.dataset.nodeId, n.getAttribute('class')])")
        .await;
    assert_eq!(marked.as_array().unwrap().len(), 1, "{marked}");
    assert_eq!(marked[0][0], Value::from(found));
    assert!(marked[0][1].as_str().unwrap().contains("selected"), "{marked}");
    let rect = page.rect(&format!("[data-node-id=\"{found}\"]")).await;
    let canvas = page.rect("#canvas").await;
    assert!(inside(&rect, &canvas), "the found workload is in view: {rect:?} in {canvas:?}");
    assert!(
        !counts(&page.eval(GROUPS).await).contains_key("prod-0/identity"),
        "its namespace opened"
    );
    assert_eq!(
        page.eval("document.getElementById('details').dataset.selected").await,
        Value::from(found),
        "its calls and callers in the side panel"
    );
    assert_eq!(
        page.eval("document.getElementById('search-status').textContent").await,
        Value::from("1 of 10 · Enter: next")
    );
    let shot = screenshot_path("large-org-search.png");
    page.screenshot(&shot).await;
    assert_png(&shot);

    let drawn = page.drawn().await;
    page.press_enter().await;
    page.wait_drawn_after(drawn).await;
    let next = "prod-1/identity/identity-07";
    assert_eq!(
        page.eval("[...document.querySelectorAll('.node.found')].map((n) => n.dataset.nodeId)")
            .await,
        serde_json::json!([next]),
        "Enter again: the next match"
    );
    let rect = page.rect(&format!("[data-node-id=\"{next}\"]")).await;
    let canvas = page.rect("#canvas").await;
    assert!(inside(&rect, &canvas), "the next match is in view: {rect:?}");

    // A name nobody has: the page says so and changes nothing.
    let layouts = page.eval(LAYOUTS).await;
    let status = search_finding_nothing(&mut page, "no-such-workload").await;
    assert!(status.as_str().unwrap().contains("no-such-workload"), "{status}");
    assert_eq!(page.eval(LAYOUTS).await, layouts);

    // Markup typed into the search box stays text.
    let markup = "<b id=\"injected\">x</b>";
    page.eval("document.getElementById('search').select()").await;
    page.type_text(markup).await;
    page.press_enter().await;
    let status = page
        .wait_for(
            "document.getElementById('search-status').textContent.includes('injected') && document.getElementById('search-status').textContent",
            "the search to answer",
        )
        .await;
    assert!(status.as_str().unwrap().contains(markup), "shown as typed: {status}");
    assert_eq!(page.eval("document.getElementById('injected') === null").await, Value::Bool(true));

    assert!(page.console.is_empty(), "the page wrote to the console: {:#?}", page.console);
    page.close().await;
}

/// The page's requests to the graph API so far: `STATUS path?query`.
const GRAPH_READS: &str = "performance.getEntriesByType('resource').map((r) => [r.responseStatus, new URL(r.name)]).filter(([, u]) => u.pathname.startsWith('/api/v1/access-graph')).map(([status, u]) => `${status} ${u.pathname}${u.search}`)";

fn paths(value: &Value) -> Vec<String> {
    value.as_array().expect("an array").iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

/// Every call is drawn once: alone, or counted in exactly one aggregate.
async fn every_call_counted_once(page: &mut Chromium, total: u64) {
    let aggregated: u64 = counts(&page.eval(AGGREGATES).await).values().sum();
    let single = page.eval(EDGES).await.as_array().unwrap().len() as u64;
    assert_eq!(aggregated + single, total, "{aggregated} aggregated + {single} drawn alone");
}

/// An organisation larger than the server reads at once (here `--graph-max-edges` 1,000 under
/// its 5,000 calls) is never read whole: the page draws the server's aggregated view, reads a
/// namespace's calls in pages when it is opened, and asks the server for a searched name.
#[tokio::test]
async fn a_very_large_organisation_is_drawn_from_the_aggregated_view_and_read_as_it_opens() {
    chromium_binary();
    let reads = cloud_api::store::ReadLimits { max_edges: 1000, ..Default::default() };
    let api = browser::Api::start_reading("cloudwebhuge", reads).await;
    let token = seed(&api, "gigacorp", Shape::LARGE).await;
    let graph = api.graph_in_pages(&token, 1000).await;
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 1000, "1,000 workloads");
    assert_eq!(graph["edges"].as_array().unwrap().len(), 5000, "5,000 calls");
    let want = expected(&graph);

    let mut page = Chromium::graph_page(&api, &token).await;
    assert_eq!(
        page.eval("document.getElementById('summary').dataset.large").await,
        Value::from("true"),
        "drawn from the aggregated view"
    );
    // The same boxes and counts as a page that read the whole graph would show.
    assert_eq!(counts(&page.eval(GROUPS).await), want.members, "a box per namespace");
    assert_eq!(counts(&page.eval(AGGREGATES).await), want.pairs, "aggregate calls");
    assert!(strings(&page.eval(NODES).await).is_empty(), "no workload drawn");
    let summary = page.eval("document.getElementById('summary').textContent").await;
    let summary = summary.as_str().unwrap();
    assert!(
        summary.contains("1000 nodes · 5000 calls · 10 clusters")
            && summary.contains("0 of 50 namespaces open"),
        "{summary}"
    );
    // The aggregated view first; 5,000 calls is few enough to ask for the whole graph in one
    // page, which this server cuts to 1,000 (more follow), so the page stays with the
    // aggregated view.
    let first = paths(&page.eval(GRAPH_READS).await);
    assert_eq!(
        first,
        ["200 /api/v1/access-graph/summary", "200 /api/v1/access-graph?limit=20000"],
        "the page's first reads"
    );
    let shot = screenshot_path("very-large-org-aggregated.png");
    page.screenshot(&shot).await;
    assert_png(&shot);

    // A real click on a namespace box: its calls are read (in pages) and its workloads drawn.
    page.click_on("#zoom-fit").await;
    let open = "prod-3/payments";
    let rect = page.rect(&format!("[data-group=\"{open}\"]")).await;
    let drawn = page.drawn().await;
    let (x, y) = rect.centre();
    page.click(x, y).await;
    page.wait_drawn_after(drawn).await;
    let groups = counts(&page.eval(GROUPS).await);
    assert_eq!(groups.len(), 49, "the opened namespace is no longer a box");
    assert!(!groups.contains_key(open));
    let members: BTreeSet<String> =
        want.namespace_of.iter().filter(|(_, ns)| *ns == open).map(|(id, _)| id.clone()).collect();
    assert_eq!(strings(&page.eval(NODES).await), members, "its workloads, and only those");
    let inner: BTreeSet<String> = want
        .edges
        .iter()
        .filter(|(s, t)| members.contains(s) && members.contains(t))
        .map(|(s, t)| format!("{s} -> {t}"))
        .collect();
    assert_eq!(strings(&page.eval(EDGES).await), inner, "calls among them one by one");
    every_call_counted_once(&mut page, 5000).await;
    let now = paths(&page.eval(GRAPH_READS).await);
    let opened: Vec<&String> = now[first.len()..].iter().collect();
    assert!(
        !opened.is_empty()
            && opened.iter().all(|r| r.starts_with("200 ")
                && r.contains("namespace=payments")
                && r.contains("cluster=prod-3")
                && r.contains("limit=")),
        "the namespace was read in pages: {opened:?}"
    );

    // Search: the name is in no open namespace but in all ten clusters; the server finds it.
    page.click_on("#search").await;
    page.type_text("identity-07").await;
    let drawn = page.drawn().await;
    page.press_enter().await;
    page.wait_drawn_after(drawn).await;
    let found = "prod-0/identity/identity-07";
    assert_eq!(
        page.eval("[...document.querySelectorAll('.node.found')].map((n) => n.dataset.nodeId)")
            .await,
        serde_json::json!([found]),
        "the first match, its namespace read and opened"
    );
    assert_eq!(
        page.eval("document.getElementById('search-status').textContent").await,
        Value::from("1 of 10 · Enter: next")
    );
    let rect = page.rect(&format!("[data-node-id=\"{found}\"]")).await;
    let canvas = page.rect("#canvas").await;
    assert!(inside(&rect, &canvas), "the found workload is in view: {rect:?} in {canvas:?}");
    assert_eq!(
        page.eval("document.getElementById('details').dataset.selected").await,
        Value::from(found),
        "its calls and callers in the side panel"
    );
    let callers = page.eval("document.querySelectorAll('#callers li').length").await;
    let expected_callers = want.edges.iter().filter(|(_, t)| t == found).count();
    assert_eq!(callers, Value::from(expected_callers), "every caller, from any namespace");
    every_call_counted_once(&mut page, 5000).await;
    let shot = screenshot_path("very-large-org-search.png");
    page.screenshot(&shot).await;
    assert_png(&shot);

    // Closing everything again: the aggregated view as it was.
    page.click_on("#collapse-all").await;
    page.wait_for(
        "document.querySelectorAll('[data-node-id]').length === 0",
        "every namespace closed",
    )
    .await;
    assert_eq!(counts(&page.eval(GROUPS).await), want.members);
    assert_eq!(counts(&page.eval(AGGREGATES).await), want.pairs);

    // What cannot be a name is not sent to the server: the page says it found nothing.
    let before = paths(&page.eval(GRAPH_READS).await).len();
    let status = search_finding_nothing(&mut page, "<b id=\"injected\">x</b>").await;
    assert!(status.as_str().unwrap().contains("<b id=\"injected\">"), "{status}");
    assert_eq!(page.eval("document.getElementById('injected') === null").await, Value::Bool(true));
    assert_eq!(page.eval("document.getElementById('error').hidden").await, Value::Bool(true));
    assert_eq!(paths(&page.eval(GRAPH_READS).await).len(), before, "no read for it");

    assert!(page.console.is_empty(), "the page wrote to the console: {:#?}", page.console);
    page.close().await;
}

/// A small organisation starts with every workload drawn, as before.
#[tokio::test]
async fn a_small_organisation_starts_with_every_workload_drawn() {
    chromium_binary();
    let api = Api::start("cloudwebsmall").await;
    let token = seed(&api, "smallco", Shape::SMALL).await;
    let graph = api.graph(&token).await;
    let ids: BTreeSet<String> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 10);
    let mut page = Chromium::graph_page(&api, &token).await;
    assert_eq!(strings(&page.eval(NODES).await), ids);
    assert!(counts(&page.eval(GROUPS).await).is_empty(), "no namespace box");
    assert_eq!(page.eval(EDGES).await.as_array().unwrap().len(), 10);
    assert_eq!(
        page.eval("document.getElementById('collapse-all').hidden").await,
        Value::Bool(true)
    );
    assert!(page.console.is_empty(), "the page wrote to the console: {:#?}", page.console);
    page.close().await;
}

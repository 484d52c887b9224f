//! The access-graph page's speed in a real browser: time to first render (navigation start to
//! the graph painted) and to an interaction (a real click opening a namespace; a search typed
//! and entered), for a 10-workload organisation, for 10 clusters with 1,000 workloads and 5,000
//! calls (read whole, grouped in the page) and for 20 clusters with 50,000 workloads and 250,000
//! calls (more than the API reads at once: drawn from the aggregated view, each opened namespace
//! read in pages, a search asked of the server). The API runs on a socket against a throwaway
//! PostgreSQL; headless Chromium is
//! driven over the DevTools protocol; the times are the page's own `performance` marks
//! (`intentmap:interaction` → `intentmap:drawn`, taken after the next frame).
//!
//! `cargo bench -p cloud-api --bench page` (`-- --runs N`, default 5; medians printed).

#[path = "../tests/web_large/browser.rs"]
mod browser;

use browser::{chromium_binary, seed, Api, Chromium, Shape};

/// The last `intentmap:drawn` mark minus the last `intentmap:interaction` mark, in ms.
const INTERACTION_MS: &str = "(() => { const last = (n) => performance.getEntriesByName(n).at(-1).startTime; return last('intentmap:drawn') - last('intentmap:interaction'); })()";
const FIRST_RENDER_MS: &str = "performance.getEntriesByName('intentmap:drawn')[0].startTime";
const READY: &str = "document.body.dataset.state === 'ready' && Number(document.getElementById('canvas').dataset.drawn) >= 1";

struct Times {
    first_render: Vec<f64>,
    expand: Vec<f64>,
    search: Vec<f64>,
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "— (starts open)".to_owned())
}

async fn measure(api: &Api, token: &str, shape: Shape, runs: usize) -> Times {
    let mut page = Chromium::launch(1400, 900).await;
    let mut times = Times { first_render: vec![], expand: vec![], search: vec![] };
    let grouped = shape.workloads() > 400;
    for run in 0..runs {
        // The previous run's drawing is torn down first, outside the measured navigation.
        page.goto("about:blank").await;
        page.wait_for(
            "location.href === 'about:blank' && document.readyState === 'complete'",
            "a blank page",
        )
        .await;
        page.goto(&api.signed_in(token, "")).await;
        page.wait_for(READY, "the graph to be drawn").await;
        times.first_render.push(page.eval(FIRST_RENDER_MS).await.as_f64().expect("a mark"));

        if grouped {
            // A box in view after Fit, clicked for real.
            page.click_on("#zoom-fit").await;
            let cluster = Shape::cluster_name(run % shape.clusters);
            let drawn = page.drawn().await;
            page.click_on(&format!("[data-group=\"{cluster}/catalog\"]")).await;
            page.wait_drawn_after(drawn).await;
            times.expand.push(page.eval(INTERACTION_MS).await.as_f64().expect("marks"));
        }

        // A workload in a namespace still closed (in a large organisation).
        page.click_on("#search").await;
        page.eval("document.getElementById('search').select()").await;
        page.type_text(&Shape::workload_name(3, 1)).await;
        let drawn = page.drawn().await;
        page.press_enter().await;
        page.wait_drawn_after(drawn).await;
        times.search.push(page.eval(INTERACTION_MS).await.as_f64().expect("marks"));
    }
    assert!(page.console.is_empty(), "the page wrote to the console: {:#?}", page.console);
    page.close().await;
    times
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut runs = 5;
    while let Some(arg) = args.next() {
        if arg == "--runs" {
            runs = args.next().and_then(|n| n.parse().ok()).expect("--runs takes a number");
        }
    }
    chromium_binary();
    let api = Api::start("cloudpagebench").await;
    println!("page: headless Chromium 1400×900, medians of {runs} runs");
    println!(
        "{:<34} {:>6} {:>6}  {:>13}  {:>17}  {:>7}",
        "organisation", "nodes", "calls", "first render", "open a namespace", "search"
    );
    for (name, shape) in [
        ("10 workloads, 1 cluster", Shape::SMALL),
        ("1,000 workloads, 10 clusters", Shape::LARGE),
        ("50,000 workloads, 20 clusters", Shape::HUGE),
    ] {
        let token = seed(&api, &format!("bench-{}", shape.workloads()), shape).await;
        // The organisation's size as the aggregated view counts it (the largest is more than
        // one graph read returns).
        let summary = api.get("/api/v1/access-graph/summary", Some(&token)).await.json();
        let sum = |list: &str, fields: &[&str]| -> u64 {
            summary[list].as_array().map_or(0, |items| {
                items
                    .iter()
                    .map(|i| fields.iter().map(|f| i[*f].as_u64().unwrap_or(0)).sum::<u64>())
                    .sum()
            })
        };
        let nodes = sum("namespaces", &["workloads", "services"]);
        let edges = sum("edges", &["edges"]);
        let mut t = measure(&api, &token, shape, runs).await;
        println!(
            "{:<34} {:>6} {:>6}  {:>13}  {:>17}  {:>7}",
            name,
            nodes,
            edges,
            ms(median(&mut t.first_render)),
            ms(median(&mut t.expand)),
            ms(median(&mut t.search)),
        );
    }
}

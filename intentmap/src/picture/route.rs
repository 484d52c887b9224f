//! How links run and where their port labels go. Links leave a node on the right and enter on
//! the left. A link to the next column is one curve through the gap between the columns. A
//! longer one, or one back to an earlier or the same column, runs along the gap between rows
//! below its caller (no node is ever there: namespaces are horizontal bands) and turns towards
//! its target in the gap just before the target. The links into a node that call the same
//! ports meet at one point on its left side, with the ports written just above.

use std::collections::BTreeMap;

use super::graph::{Graph, Kind};
use super::layout::{Layout, Rect, GAP, NODE_H, ROW, SUB_SIZE};
use super::text;

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// SVG path data.
    pub path: String,
    /// The target's kind: links to the internet and AWS are drawn in their colours.
    pub kind: Kind,
    /// Runs right to left (a call back to an earlier column or within one).
    pub back: bool,
    /// The link's measured bytes: drawn wider, and told in its tooltip.
    pub bytes: Option<model::Traffic>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortLabel {
    pub text: String,
    /// Where the text ends (it is right-aligned) and its baseline.
    pub x: f32,
    pub y: f32,
}

/// At most this many port labels beside one node; more are written as one.
const MAX_GROUPS: usize = 3;
const GROUP_STEP: f32 = 14.0;

/// Where a link starts and ends, and what is between them.
struct Ends {
    s: Rect,
    t: Rect,
    /// Offsets from the middle of the source's right side and the target's left side.
    dy1: f32,
    dy2: f32,
    /// A small offset keeping links along the same row gap apart.
    lane: f32,
    /// The x of the first column of the target's box.
    first_x: f32,
}

fn path(e: &Ends) -> (String, bool) {
    let (s, t) = (e.s, e.t);
    let (x1, y1, x2, y2) = (s.right(), s.cy() + e.dy1, t.x - 2.0, t.cy() + e.dy2);
    if x2 > x1 && x2 - x1 <= GAP + 40.0 {
        let dx = (x2 - x1) / 2.0;
        return (
            format!(
                "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
                x1 + dx,
                x2 - dx
            ),
            false,
        );
    }
    let cy = s.bottom() + (ROW - NODE_H) / 2.0 + e.lane;
    let out = format!(
        "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{cy:.1} {:.1},{cy:.1}",
        x1 + 22.0,
        x1 + 12.0,
        x1 + 36.0
    );
    let into = |from_y: f32| {
        let turn = t.x - GAP + 12.0;
        let mid = (turn + x2) / 2.0;
        format!("L{turn:.1},{from_y:.1} C{mid:.1},{from_y:.1} {mid:.1},{y2:.1} {x2:.1},{y2:.1}")
    };
    if x2 > x1 && t.x > e.first_x + 1.0 {
        // Into a later column of an outside box: to the box, then along the row gap below the target.
        let (turn, gy) = (e.first_x - GAP + 12.0, t.bottom() + (ROW - NODE_H) / 2.0 + e.lane);
        return (
            format!(
                "{out} L{turn:.1},{cy:.1} C{:.1},{cy:.1} {:.1},{gy:.1} {:.1},{gy:.1} {}",
                turn + 20.0,
                turn + 20.0,
                turn + 40.0,
                into(gy)
            ),
            false,
        );
    }
    if x2 > x1 {
        return (format!("{out} {}", into(cy)), false);
    }
    // Back to an earlier column, the same column or the node itself: under the caller, then round.
    let back = (x1 + 36.0).min(t.x - 36.0);
    (
        format!(
            "{out} L{back:.1},{cy:.1} C{:.1},{cy:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
            t.x - 70.0,
            t.x - 70.0
        ),
        true,
    )
}

/// Ports written as one label: `80, 443, 53/UDP` in port order.
fn union(labels: &[&str]) -> String {
    let mut parts: Vec<&str> =
        labels.iter().flat_map(|l| l.split(", ")).filter(|p| !p.is_empty()).collect();
    let port =
        |p: &str| p.split('/').next().and_then(|n| n.parse::<u32>().ok()).unwrap_or(u32::MAX);
    parts.sort_by_key(|p| (port(p), p.to_string()));
    parts.dedup();
    parts.join(", ")
}

/// Every link's route (in link order) and the port labels.
pub fn route(graph: &Graph, layout: &Layout) -> (Vec<Route>, Vec<PortLabel>) {
    let at = |id: usize| layout.nodes[id];
    let mut dy_out = vec![0.0; graph.links.len()];
    let mut dy_in = vec![0.0; graph.links.len()];
    let mut labels = Vec::new();
    let (out_links, in_links) = graph.link_lists();
    for id in 0..graph.nodes.len() {
        // Out of the right side, spread in the order of the targets.
        let mut out = out_links[id].clone();
        out.sort_by(|&a, &b| at(graph.links[a].to).cy().total_cmp(&at(graph.links[b].to).cy()));
        let step = (5.0f32).min((NODE_H - 12.0) / out.len().max(1) as f32);
        for (i, &li) in out.iter().enumerate() {
            dy_out[li] = (i as f32 - (out.len() as f32 - 1.0) / 2.0) * step;
        }
        // Into the left side, one point per set of ports.
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &li in &in_links[id] {
            groups.entry(graph.links[li].label.as_str()).or_default().push(li);
        }
        let mut groups: Vec<(String, Vec<usize>)> = if groups.len() > MAX_GROUPS {
            let keys: Vec<&str> = groups.keys().copied().collect();
            vec![(union(&keys), groups.into_values().flatten().collect())]
        } else {
            groups.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
        };
        let mean_y = |links: &[usize]| {
            links.iter().map(|&li| at(graph.links[li].from).cy()).sum::<f32>()
                / links.len().max(1) as f32
        };
        groups.sort_by(|a, b| mean_y(&a.1).total_cmp(&mean_y(&b.1)));
        let t = at(id);
        for (i, (label, links)) in groups.iter().enumerate() {
            let dy = (i as f32 - (groups.len() as f32 - 1.0) / 2.0) * GROUP_STEP;
            for &li in links {
                dy_in[li] = dy;
            }
            if !label.is_empty() {
                labels.push(PortLabel {
                    text: text::fit(label, SUB_SIZE, false, GAP - 36.0),
                    x: t.x - 12.0,
                    y: t.cy() + dy - 4.0,
                });
            }
        }
    }
    let routes = graph
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let lane = ((i % 5) as f32 - 2.0) * 1.6;
            let ends = Ends {
                s: at(l.from),
                t: at(l.to),
                dy1: dy_out[i],
                dy2: dy_in[i],
                lane,
                first_x: layout.first_x[l.to],
            };
            let (path, back) = path(&ends);
            Route { path, kind: graph.nodes[l.to].kind, back, bytes: l.bytes }
        })
        .collect();
    (routes, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_port_sets_become_one_label() {
        assert_eq!(union(&["443", "53/UDP, 80", "", "80", "Kafka"]), "53/UDP, 80, 443, Kafka");
    }

    #[test]
    fn links_to_the_next_column_are_one_curve() {
        let s = Rect { x: 0.0, y: 0.0, w: 150.0, h: NODE_H };
        let t = Rect { x: 150.0 + GAP, ..s };
        let (d, back) = path(&Ends { s, t, dy1: 0.0, dy2: 0.0, lane: 0.0, first_x: t.x });
        assert!(!back && d.matches('C').count() == 1 && !d.contains('L'), "{d}");
        let (d, back) = path(&Ends { s: t, t: s, dy1: 0.0, dy2: 0.0, lane: 0.0, first_x: s.x });
        assert!(back && d.contains('L'), "{d}");
        let (d, back) = path(&Ends { s, t: s, dy1: 0.0, dy2: 0.0, lane: 0.0, first_x: s.x });
        assert!(back && d.contains('L'), "a node calling itself goes round: {d}");
    }
}

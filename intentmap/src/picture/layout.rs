//! Where everything goes, as the access-graph web page draws it: calls run left to right in
//! columns; each namespace is a horizontal band (a labelled box) inside the cluster's box,
//! spanning the columns its workloads use, with a few barycentre sweeps to order each band's
//! columns; internet and AWS targets sit in their own boxes right of the cluster, level with
//! their callers. Everything is in SVG units (pixels at scale 1).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::graph::{Graph, Kind};
use super::layers;
use super::text;

pub const NODE_H: f32 = 44.0;
pub const ROW: f32 = NODE_H + 16.0;
/// Between columns: room for the links' curves and their port labels.
pub const GAP: f32 = 120.0;
pub const TITLE_SIZE: f32 = 13.0;
pub const SUB_SIZE: f32 = 11.0;
const MIN_W: f32 = 150.0;
const MAX_W: f32 = 300.0;
const NS_PAD: f32 = 12.0;
/// A namespace's label row; tall enough that port labels of its first row stay below it.
const NS_HEAD: f32 = 30.0;
const CL_PAD: f32 = 14.0;
const CL_HEAD: f32 = 34.0;
const BAND_GAP: f32 = 16.0;
pub const MARGIN: f32 = 20.0;
/// The caption line above the boxes.
pub const HEADER: f32 = 30.0;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Rect {
    pub fn right(&self) -> f32 {
        self.x + self.w
    }
    pub fn bottom(&self) -> f32 {
        self.y + self.h
    }
    pub fn cy(&self) -> f32 {
        self.y + self.h / 2.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Cluster,
    Namespace,
    Internet,
    Aws,
}

/// A labelled box around a group of nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub kind: FrameKind,
    pub label: String,
    pub rect: Rect,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub nodes: Vec<Rect>,
    /// Where the first column of each node's box is: its own x inside the cluster, the box's
    /// first column for an internet or AWS target (links to a later column go round the first).
    pub first_x: Vec<f32>,
    pub frames: Vec<Frame>,
    pub width: f32,
    pub height: f32,
}

/// Where a node's text starts: after the globe or the AWS badge.
pub fn text_left(kind: Kind) -> f32 {
    match kind {
        Kind::Workload | Kind::Service => 12.0,
        Kind::Internet => 38.0,
        Kind::Aws => 44.0,
    }
}

fn node_width(graph: &Graph, id: usize) -> f32 {
    let n = &graph.nodes[id];
    let text =
        text::width(&n.title, TITLE_SIZE, true).max(text::width(&n.subtitle, SUB_SIZE, false));
    (text_left(n.kind) + text + 12.0).clamp(MIN_W, MAX_W)
}

/// `team-2` before `team-10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, c) in s.char_indices().skip(1) {
            let prev = s[..i].chars().next_back().is_some_and(|p| p.is_ascii_digit());
            if prev != c.is_ascii_digit() {
                out.push((prev, &s[start..i]));
                start = i;
            }
        }
        if start < s.len() {
            out.push((s[start..].starts_with(|c: char| c.is_ascii_digit()), &s[start..]));
        }
        out
    }
    for (x, y) in chunks(a).into_iter().zip(chunks(b)) {
        let order = match (x, y) {
            ((true, x), (true, y)) => {
                x.trim_start_matches('0').len().cmp(&y.trim_start_matches('0').len()).then(x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len()).then(a.cmp(b))
}

/// A namespace's nodes in one column, top to bottom from row `first` of the band.
#[derive(Default)]
struct Cell {
    first: usize,
    ids: Vec<usize>,
}

struct Band {
    namespace: String,
    cells: BTreeMap<usize, Cell>,
    base: usize,
    rows: usize,
}

/// Each node's callers and callees.
struct Neighbours {
    callers: Vec<Vec<usize>>,
    callees: Vec<Vec<usize>>,
}

impl Neighbours {
    fn of(graph: &Graph) -> Self {
        let (out, inc) = graph.link_lists();
        let ends =
            |lists: Vec<Vec<usize>>, end: fn(&super::graph::Link) -> usize| -> Vec<Vec<usize>> {
                lists
                    .into_iter()
                    .map(|ls| ls.into_iter().map(|i| end(&graph.links[i])).collect())
                    .collect()
            };
        Neighbours { callers: ends(inc, |l| l.from), callees: ends(out, |l| l.to) }
    }

    /// The mean row of what `id` talks to: callers with `Some(true)`, callees with
    /// `Some(false)`, both with `None`.
    fn barycentre(&self, row: &[Option<f32>], id: usize, incoming: Option<bool>) -> Option<f32> {
        let callers = if incoming != Some(false) { self.callers[id].as_slice() } else { &[] };
        let callees = if incoming != Some(true) { self.callees[id].as_slice() } else { &[] };
        let rows: Vec<f32> =
            callers.iter().chain(callees).filter(|&&o| o != id).filter_map(|&o| row[o]).collect();
        (!rows.is_empty()).then(|| rows.iter().sum::<f32>() / rows.len() as f32)
    }
}

/// Orders and places the inside nodes: one band per namespace, rows within it.
fn bands(graph: &Graph, column: &[usize], near: &Neighbours) -> Vec<Band> {
    let mut inside: Vec<usize> =
        (0..graph.nodes.len()).filter(|&i| graph.nodes[i].namespace.is_some()).collect();
    inside.sort_by(|&a, &b| natural_cmp(&graph.nodes[a].title, &graph.nodes[b].title));
    let mut by_ns: BTreeMap<&str, BTreeMap<usize, Cell>> = BTreeMap::new();
    for &id in &inside {
        let ns = graph.nodes[id].namespace.as_deref().unwrap_or_default();
        by_ns.entry(ns).or_default().entry(column[id]).or_default().ids.push(id);
    }
    let mut namespaces: Vec<&str> = by_ns.keys().copied().collect();
    namespaces.sort_by(|a, b| natural_cmp(a, b));
    let mut row = vec![None; graph.nodes.len()];
    let mut bands = Vec::new();
    let mut base = 0;
    for ns in namespaces {
        let cells = by_ns.remove(ns).unwrap_or_default();
        let rows = cells.values().map(|c| c.ids.len()).max().unwrap_or(1);
        for cell in cells.values() {
            for (i, &id) in cell.ids.iter().enumerate() {
                row[id] = Some((base + i) as f32);
            }
        }
        bands.push(Band { namespace: ns.to_owned(), cells, base, rows });
        base += rows + 1;
    }
    let columns = inside.iter().map(|&i| column[i] + 1).max().unwrap_or(0);
    for sweep in 0..4 {
        let forward = sweep % 2 == 0;
        for k in 0..columns {
            let c = if forward { k } else { columns - 1 - k };
            for band in &mut bands {
                let Some(cell) = band.cells.get_mut(&c) else { continue };
                let key =
                    |id: usize| near.barycentre(&row, id, Some(forward)).or(row[id]).unwrap_or(0.0);
                let mut keyed: Vec<(f32, usize)> =
                    cell.ids.iter().map(|&id| (key(id), id)).collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
                cell.ids = keyed.into_iter().map(|(_, id)| id).collect();
                for (i, &id) in cell.ids.iter().enumerate() {
                    row[id] = Some((band.base + i) as f32);
                }
            }
        }
    }
    // A short column slides down its band to sit level with what it talks to.
    for band in &mut bands {
        for cell in band.cells.values_mut() {
            let wanted: Vec<f32> =
                cell.ids.iter().filter_map(|&id| near.barycentre(&row, id, None)).collect();
            if cell.ids.len() >= band.rows || wanted.is_empty() {
                continue;
            }
            let mean = wanted.iter().sum::<f32>() / wanted.len() as f32
                - (cell.ids.len() - 1) as f32 / 2.0
                - band.base as f32;
            cell.first = mean.round().clamp(0.0, (band.rows - cell.ids.len()) as f32) as usize;
            for (i, &id) in cell.ids.iter().enumerate() {
                row[id] = Some((band.base + cell.first + i) as f32);
            }
        }
    }
    bands
}

/// The layout of a non-empty graph.
pub fn layout(graph: &Graph) -> Layout {
    let column = layers::columns(graph);
    let near = Neighbours::of(graph);
    let bands = bands(graph, &column, &near);
    let widths: Vec<f32> = (0..graph.nodes.len()).map(|i| node_width(graph, i)).collect();
    let columns = bands.iter().flat_map(|b| b.cells.keys()).map(|c| c + 1).max().unwrap_or(1);
    let mut col_w = vec![MIN_W; columns];
    for band in &bands {
        for (&c, cell) in &band.cells {
            for &id in &cell.ids {
                col_w[c] = col_w[c].max(widths[id]);
            }
        }
    }
    // Links into the first column come round from its left: leave them room.
    let into_first =
        graph.links.iter().any(|l| graph.nodes[l.to].namespace.is_some() && column[l.to] == 0);
    let lead = if into_first { GAP - CL_PAD - NS_PAD } else { 0.0 };
    let col_x = |c: usize| {
        MARGIN + CL_PAD + NS_PAD + lead + col_w[..c].iter().map(|w| w + GAP).sum::<f32>()
    };

    let mut nodes = vec![Rect::default(); graph.nodes.len()];
    let mut first_x = vec![0.0; graph.nodes.len()];
    let mut frames = Vec::new();
    let top = MARGIN + HEADER;
    let mut y = top + CL_HEAD;
    let mut cluster_right: f32 = 0.0;
    for band in &bands {
        for (&c, cell) in &band.cells {
            for (i, &id) in cell.ids.iter().enumerate() {
                nodes[id] = Rect {
                    x: col_x(c),
                    y: y + NS_HEAD + (cell.first + i) as f32 * ROW,
                    w: col_w[c],
                    h: NODE_H,
                };
                first_x[id] = col_x(c);
            }
        }
        let (first, last) = (
            band.cells.keys().next().copied().unwrap_or(0),
            band.cells.keys().next_back().copied().unwrap_or(0),
        );
        let x = col_x(first) - NS_PAD;
        let h = NS_HEAD + band.rows as f32 * ROW - (ROW - NODE_H) + NS_PAD;
        let rect = Rect { x, y, w: col_x(last) + col_w[last] + NS_PAD - x, h };
        cluster_right = cluster_right.max(rect.right() + CL_PAD);
        frames.push(Frame { kind: FrameKind::Namespace, label: band.namespace.clone(), rect });
        y += h + BAND_GAP;
    }
    let cluster =
        Rect { x: MARGIN, y: top, w: cluster_right - MARGIN, h: y - BAND_GAP + CL_PAD - top };
    frames.insert(0, Frame { kind: FrameKind::Cluster, label: "cluster".into(), rect: cluster });

    // Outside: one box per kind to the right, nodes level with their callers, in as many
    // columns as keep the box about as tall as the cluster.
    let out_x = col_x(columns) - NS_PAD;
    let mut out_y = top;
    let per_column = (((cluster.h - CL_HEAD - NS_PAD) / ROW).floor() as usize).max(12);
    let mut right = cluster.right();
    let mut bottom = cluster.bottom();
    for (kind, frame_kind, label) in
        [(Kind::Internet, FrameKind::Internet, "Internet"), (Kind::Aws, FrameKind::Aws, "AWS")]
    {
        let caller_y = |id: usize| {
            let ys: Vec<f32> = near.callers[id]
                .iter()
                .filter(|&&c| graph.nodes[c].namespace.is_some())
                .map(|&c| nodes[c].cy())
                .collect();
            (!ys.is_empty()).then(|| ys.iter().sum::<f32>() / ys.len() as f32)
        };
        let mut members: Vec<(f32, usize)> = (0..graph.nodes.len())
            .filter(|&i| graph.nodes[i].kind == kind)
            .map(|i| (caller_y(i).unwrap_or(0.0), i))
            .collect();
        if members.is_empty() {
            continue;
        }
        members.sort_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then_with(|| natural_cmp(&graph.nodes[a.1].title, &graph.nodes[b.1].title))
        });
        let w = members.iter().map(|&(_, id)| widths[id]).fold(MIN_W, f32::max);
        let cols = members.len().div_ceil(per_column);
        let rows = members.len().div_ceil(cols);
        let h = CL_HEAD + rows as f32 * ROW - (ROW - NODE_H) + NS_PAD;
        let mean = members.iter().map(|m| m.0).sum::<f32>() / members.len() as f32;
        let box_y = (mean - h / 2.0).round().max(out_y);
        for (i, &(_, id)) in members.iter().enumerate() {
            let (c, r) = (i / rows, i % rows);
            nodes[id] = Rect {
                x: out_x + NS_PAD + c as f32 * (w + GAP),
                y: box_y + CL_HEAD + r as f32 * ROW,
                w,
                h: NODE_H,
            };
            first_x[id] = out_x + NS_PAD;
        }
        let rect = Rect { x: out_x, y: box_y, w: cols as f32 * (w + GAP) - GAP + 2.0 * NS_PAD, h };
        frames.push(Frame { kind: frame_kind, label: label.into(), rect });
        right = right.max(rect.right());
        bottom = bottom.max(rect.bottom());
        out_y = rect.bottom() + BAND_GAP * 2.0;
    }
    Layout {
        nodes,
        first_x,
        frames,
        width: (right + MARGIN).ceil(),
        height: (bottom + MARGIN).ceil(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_as_people_count() {
        let mut names = vec!["team-10", "team-2", "api", "team-1"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["api", "team-1", "team-2", "team-10"]);
    }
}

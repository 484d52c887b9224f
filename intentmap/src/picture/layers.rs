//! Which column each node goes in: calls run left to right. Columns are the longest path from
//! the callers over the strongly connected components; inside a cycle, the breadth-first depth
//! from where the cycle is entered (so even one big cycle stays a few columns wide).

use super::graph::Graph;

/// Strongly connected components (Tarjan, without recursion), sinks first.
fn components(out: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const NEW: usize = usize::MAX;
    let n = out.len();
    let (mut order, mut low, mut on_stack) = (vec![NEW; n], vec![0; n], vec![false; n]);
    let (mut stack, mut comps, mut counter) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if order[root] != NEW {
            continue;
        }
        let mut work = vec![(root, 0)];
        (order[root], low[root], on_stack[root]) = (counter, counter, true);
        counter += 1;
        stack.push(root);
        while let Some(&(v, i)) = work.last() {
            if let Some(&w) = out[v].get(i) {
                if let Some(top) = work.last_mut() {
                    top.1 += 1;
                }
                if order[w] == NEW {
                    (order[w], low[w], on_stack[w]) = (counter, counter, true);
                    counter += 1;
                    stack.push(w);
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(order[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(u, _)) = work.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == order[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                comps.push(comp);
            }
        }
    }
    comps
}

/// The column of every node.
pub fn columns(graph: &Graph) -> Vec<usize> {
    let n = graph.nodes.len();
    let (out_links, in_links) = graph.link_lists();
    let out: Vec<Vec<usize>> =
        out_links.iter().map(|ls| ls.iter().map(|&i| graph.links[i].to).collect()).collect();
    let inc: Vec<Vec<usize>> =
        in_links.iter().map(|ls| ls.iter().map(|&i| graph.links[i].from).collect()).collect();
    let comps = components(&out);
    let mut comp_of = vec![0; n];
    for (ci, comp) in comps.iter().enumerate() {
        for &v in comp {
            comp_of[v] = ci;
        }
    }
    let mut column = vec![0; n];
    for ci in (0..comps.len()).rev() {
        let comp = &comps[ci];
        let mut base = 0;
        let mut entries = Vec::new();
        for &v in comp {
            let from_outside: Vec<usize> =
                inc[v].iter().copied().filter(|&u| comp_of[u] != ci).collect();
            base = from_outside.iter().map(|&u| column[u] + 1).fold(base, usize::max);
            if !from_outside.is_empty() {
                entries.push(v);
            }
        }
        if let [single] = comp.as_slice() {
            column[*single] = base;
            continue;
        }
        if entries.is_empty() {
            // Nobody outside calls into the cycle: start from its busiest caller.
            entries
                .extend(comp.iter().copied().max_by_key(|&v| (out[v].len(), std::cmp::Reverse(v))));
        }
        entries.sort_unstable();
        let mut depth = vec![usize::MAX; n];
        for &v in &entries {
            depth[v] = 0;
        }
        let mut queue = entries;
        let mut i = 0;
        while let Some(&v) = queue.get(i) {
            i += 1;
            for &w in &out[v] {
                if comp_of[w] == ci && depth[w] == usize::MAX {
                    depth[w] = depth[v] + 1;
                    queue.push(w);
                }
            }
        }
        for &v in comp {
            column[v] = base + if depth[v] == usize::MAX { 0 } else { depth[v] };
        }
    }
    // A caller nobody calls moves right, next to the first thing it calls: shorter links.
    for v in 0..n {
        if !inc[v].is_empty() {
            continue;
        }
        let nearest = out[v]
            .iter()
            .filter(|&&t| t != v && graph.nodes[t].namespace.is_some())
            .map(|&t| column[t])
            .min();
        if let Some(nearest) = nearest {
            if nearest > column[v] + 1 {
                column[v] = nearest - 1;
            }
        }
    }
    column
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::picture::graph::{Kind, Link, Node};

    fn graph(n: usize, links: &[(usize, usize)]) -> Graph {
        let node = |i: usize| Node {
            kind: Kind::Workload,
            namespace: Some("ns".into()),
            title: format!("w{i}"),
            subtitle: String::new(),
            tooltip: String::new(),
        };
        Graph {
            nodes: (0..n).map(node).collect(),
            links: links
                .iter()
                .map(|&(from, to)| Link { from, to, label: String::new(), bytes: None })
                .collect(),
        }
    }

    #[test]
    fn calls_run_left_to_right() {
        // 0 -> 1 -> 2, 0 -> 2, and 3 -> 2 (3 moves next to 2).
        assert_eq!(columns(&graph(4, &[(0, 1), (1, 2), (0, 2), (3, 2)])), vec![0, 1, 2, 1]);
    }

    #[test]
    fn a_cycle_stays_narrow() {
        // 0 -> 1 -> 2 -> 3 -> 1 and a ring of five nobody enters.
        let c = columns(&graph(
            9,
            &[(0, 1), (1, 2), (2, 3), (3, 1), (4, 5), (5, 6), (6, 7), (7, 8), (8, 4), (1, 1)],
        ));
        assert_eq!(&c[..4], &[0, 1, 2, 3]);
        assert!(c[4..].iter().all(|&x| x <= 4), "{c:?}");
    }
}

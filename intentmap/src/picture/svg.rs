//! The SVG text: boxes, then links, then nodes, then the labels that sit on top (with a halo so
//! a link passing under them does not hide them). Colours are the access-graph web page's.

use super::graph::{Graph, Kind};
use super::layout::{text_left, FrameKind, Layout, Rect, MARGIN, NODE_H, SUB_SIZE, TITLE_SIZE};
use super::route::route;
use super::text;

const INK: &str = "#0f172a";
const MUTED: &str = "#64748b";
const BACKGROUND: &str = "#f8fafc";

/// `&`, `<`, `>` and quotes written so XML reads them as text.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A `<text>`; `style` holds its other attributes.
/// A link's stroke width for the bytes it carried: 1.3 (the unmeasured width) at 1 KiB or
/// less, one more per factor of 32, at most 5.
fn volume_width(bytes: model::Traffic) -> f32 {
    let total = bytes.sent.saturating_add(bytes.received).max(1024) as f32;
    (1.3 + (total / 1024.0).log2() / 5.0).min(5.0)
}

fn text_at(out: &mut String, x: f32, y: f32, style: &str, content: &str) {
    out.push_str(&format!("<text x=\"{x:.1}\" y=\"{y:.1}\" {style}>{}</text>\n", escape(content)));
}

fn halo(size: f32, weight: &str, fill: &str) -> String {
    format!("font-size=\"{size}\" font-weight=\"{weight}\" fill=\"{fill}\" stroke=\"{BACKGROUND}\" stroke-width=\"3\" stroke-linejoin=\"round\" paint-order=\"stroke\"")
}

/// The opening `<svg>` with the font, the arrowheads and the background.
pub fn open(width: f32, height: f32) -> String {
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"{}\">\n<defs>\n",
        text::FAMILY_LIST
    );
    for (id, fill) in
        [("arrow", "#94a3b8"), ("arrow-internet", "#fb923c"), ("arrow-aws", "#d97706")]
    {
        out.push_str(&format!(
            "<marker id=\"{id}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{fill}\"/></marker>\n"
        ));
    }
    out.push_str(&format!(
        "</defs>\n<rect width=\"100%\" height=\"100%\" fill=\"{BACKGROUND}\"/>\n"
    ));
    out
}

/// The line above the drawing.
pub fn caption(out: &mut String, caption: &str, width: f32) {
    text_at(
        out,
        MARGIN,
        MARGIN + 16.0,
        &format!("font-size=\"15\" font-weight=\"bold\" fill=\"{INK}\""),
        &text::fit(caption, 15.0, true, width - 2.0 * MARGIN),
    );
}

fn node(out: &mut String, kind: Kind, r: Rect, title: &str, subtitle: &str, tooltip: &str) {
    let (stroke, fill, rx, dash) = match kind {
        Kind::Workload => ("#2563eb", "#ffffff", 7.0, ""),
        Kind::Service => ("#0d9488", "#ffffff", 7.0, " stroke-dasharray=\"5 3\""),
        Kind::Internet => ("#ea580c", "#fff7ed", NODE_H / 2.0, ""),
        Kind::Aws => ("#b45309", "#fef3c7", 7.0, ""),
    };
    out.push_str(&format!(
        "<g class=\"node {}\">\n<title>{}</title>\n",
        kind.class(),
        escape(tooltip)
    ));
    out.push_str(&format!(
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{NODE_H}\" rx=\"{rx}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.6\"{dash}/>\n",
        r.x, r.y, r.w
    ));
    let cy = r.cy();
    match kind {
        Kind::Internet => out.push_str(&format!(
            "<g fill=\"none\" stroke=\"#ea580c\" stroke-width=\"1.3\"><circle cx=\"{0:.1}\" cy=\"{cy:.1}\" r=\"9\"/><ellipse cx=\"{0:.1}\" cy=\"{cy:.1}\" rx=\"4\" ry=\"9\"/><path d=\"M{1:.1},{cy:.1} h18\"/></g>\n",
            r.x + 22.0,
            r.x + 13.0
        )),
        Kind::Aws => {
            out.push_str(&format!("<rect x=\"{:.1}\" y=\"{:.1}\" width=\"30\" height=\"16\" rx=\"3\" fill=\"#232f3e\"/>\n", r.x + 8.0, cy - 8.0));
            text_at(out, r.x + 12.0, cy + 3.5, "font-size=\"9\" font-weight=\"bold\" fill=\"#ff9900\"", "AWS");
        }
        Kind::Workload | Kind::Service => {}
    }
    let left = text_left(kind);
    let room = r.w - left - 8.0;
    text_at(
        out,
        r.x + left,
        r.y + 19.0,
        &format!("font-size=\"{TITLE_SIZE}\" font-weight=\"bold\" fill=\"{INK}\""),
        &text::fit(title, TITLE_SIZE, true, room),
    );
    text_at(
        out,
        r.x + left,
        r.y + 34.0,
        &format!("font-size=\"{SUB_SIZE}\" fill=\"{MUTED}\""),
        &text::fit(subtitle, SUB_SIZE, false, room),
    );
    out.push_str("</g>\n");
}

/// The whole picture of a non-empty graph laid out as `layout`.
pub fn draw(graph: &Graph, layout: &Layout, caption_text: &str) -> String {
    let mut out = open(layout.width, layout.height);
    caption(&mut out, caption_text, layout.width);
    out.push_str("<g class=\"frames\">\n");
    for f in &layout.frames {
        let (fill, stroke, rx, dash) = match f.kind {
            FrameKind::Cluster => ("#eff6ff", "#93c5fd", 12, ""),
            FrameKind::Namespace => ("#ffffff", "#94a3b8", 8, " stroke-dasharray=\"4 3\""),
            FrameKind::Internet => ("#fff7ed", "#fdba74", 12, ""),
            FrameKind::Aws => ("#fffbeb", "#fcd34d", 12, ""),
        };
        let r = f.rect;
        out.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"{rx}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.5\"{dash}/>\n",
            r.x, r.y, r.w, r.h
        ));
    }
    out.push_str("</g>\n<g class=\"links\" fill=\"none\" stroke-width=\"1.3\">\n");
    let (routes, ports) = route(graph, layout);
    for r in &routes {
        let (stroke, marker) = match r.kind {
            Kind::Internet => ("#fb923c", "arrow-internet"),
            Kind::Aws => ("#d97706", "arrow-aws"),
            Kind::Workload | Kind::Service => ("#94a3b8", "arrow"),
        };
        let dash = if r.back { " stroke-dasharray=\"2 3\"" } else { "" };
        match r.bytes {
            None => out.push_str(&format!(
                "<path d=\"{}\" stroke=\"{stroke}\" marker-end=\"url(#{marker})\"{dash}/>\n",
                r.path
            )),
            // Measured traffic: wider with the volume, which the tooltip tells.
            Some(bytes) => out.push_str(&format!(
                "<path d=\"{}\" stroke=\"{stroke}\" marker-end=\"url(#{marker})\"{dash} stroke-width=\"{:.1}\"><title>{}</title></path>\n",
                r.path,
                volume_width(bytes),
                escape(&bytes.label())
            )),
        }
    }
    out.push_str("</g>\n<g class=\"nodes\">\n");
    for (n, r) in graph.nodes.iter().zip(&layout.nodes) {
        node(&mut out, n.kind, *r, &n.title, &n.subtitle, &n.tooltip);
    }
    out.push_str("</g>\n<g class=\"labels\">\n");
    for f in &layout.frames {
        let r = f.rect;
        let (label, size, y) = match f.kind {
            FrameKind::Cluster => (f.label.clone(), 14.0, r.y + 22.0),
            FrameKind::Namespace => (format!("namespace {}", f.label), 12.0, r.y + 19.0),
            FrameKind::Internet | FrameKind::Aws => (f.label.clone(), 13.0, r.y + 22.0),
        };
        let fill = if f.kind == FrameKind::Namespace { "#475569" } else { INK };
        text_at(
            &mut out,
            r.x + 12.0,
            y,
            &halo(size, "bold", fill),
            &text::fit(&label, size, true, r.w - 24.0),
        );
    }
    for p in &ports {
        text_at(
            &mut out,
            p.x,
            p.y,
            &format!("text-anchor=\"end\" {}", halo(SUB_SIZE, "normal", "#334155")),
            &p.text,
        );
    }
    out.push_str("</g>\n</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_names_stays_text() {
        assert_eq!(escape("a<b & \"c\"'"), "a&lt;b &amp; &quot;c&quot;&apos;");
    }
}

//! SVG to PNG with `resvg`. The font is the embedded one (system fonts are not looked at), so a
//! PNG has its text on any machine and the same pixels everywhere.

use std::sync::Arc;

use anyhow::Context;
use resvg::{tiny_skia, usvg};

use super::text;

/// Pixels a PNG may have: up to twice the SVG's size, never less than once.
const MAX_PIXELS: f32 = 40_000_000.0;

/// A rasterised picture; `scale` is pixels per SVG unit.
pub struct Raster {
    pub pixmap: tiny_skia::Pixmap,
    pub scale: f32,
}

fn options() -> anyhow::Result<usvg::Options<'static>> {
    let mut fonts = usvg::fontdb::Database::new();
    for face in text::FACES {
        fonts.load_font_data(face.to_vec());
    }
    if fonts.is_empty() {
        anyhow::bail!("the embedded font could not be read; write an SVG instead (-o NAME.svg) and report this bug");
    }
    fonts.set_sans_serif_family(text::FAMILY);
    fonts.set_serif_family(text::FAMILY);
    fonts.set_monospace_family(text::FAMILY);
    fonts.set_cursive_family(text::FAMILY);
    fonts.set_fantasy_family(text::FAMILY);
    Ok(usvg::Options {
        font_family: text::FAMILY.to_owned(),
        fontdb: Arc::new(fonts),
        ..usvg::Options::default()
    })
}

/// The SVG parsed as `resvg` draws it (its text already laid out in the embedded font).
pub fn tree(svg: &str) -> anyhow::Result<usvg::Tree> {
    usvg::Tree::from_str(svg, &options()?).context("the picture's SVG could not be read (a bug: please report it; the SVG output may still open)")
}

/// The picture as pixels, at twice its size where that stays reasonable.
pub fn rasterise(svg: &str) -> anyhow::Result<Raster> {
    let tree = tree(svg)?;
    let size = tree.size();
    let scale = (MAX_PIXELS / (size.width() * size.height()).max(1.0)).sqrt().clamp(1.0, 2.0);
    let (w, h) = ((size.width() * scale).ceil() as u32, (size.height() * scale).ceil() as u32);
    let mut pixmap = tiny_skia::Pixmap::new(w, h)
        .with_context(|| format!("the picture is too large for a PNG ({w}×{h} pixels); write an SVG instead (-o NAME.svg) or narrow it with -n NAMESPACES"))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    Ok(Raster { pixmap, scale })
}

/// The picture as a PNG file's bytes.
pub fn svg_to_png(svg: &str) -> anyhow::Result<Vec<u8>> {
    rasterise(svg)?
        .pixmap
        .encode_png()
        .context("encoding the PNG failed; write an SVG instead (-o NAME.svg)")
}

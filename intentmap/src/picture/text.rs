//! The picture's one font, embedded: Noto Sans (Apache-2.0, from the `ttf-noto-sans` crate), so
//! a PNG has its names on a machine or in a container without any fonts. Text widths for the
//! layout are measured with this font.

use skrifa::instance::{LocationRef, Size};
use skrifa::{FontRef, MetadataProvider};

/// The family name inside the embedded font files.
pub const FAMILY: &str = "Noto Sans";

/// What the SVG asks for: the embedded font first, then look-alikes a browser is likely to have.
pub const FAMILY_LIST: &str =
    "'Noto Sans', 'DejaVu Sans', 'Liberation Sans', Arial, Helvetica, sans-serif";

/// The regular and bold faces.
pub const FACES: [&[u8]; 2] = [ttf_noto_sans::REGULAR, ttf_noto_sans::BOLD];

/// Room for a browser showing the SVG with a wider substitute (DejaVu Sans is about 9% wider).
const SLACK: f32 = 1.1;

/// Used for a character the font lacks (and were the font unreadable): a wide-ish letter.
const FALLBACK_EM: f32 = 0.62;

/// How wide `text` is at `size` pixels, with room for a substitute font.
pub fn width(text: &str, size: f32, bold: bool) -> f32 {
    let data = if bold { ttf_noto_sans::BOLD } else { ttf_noto_sans::REGULAR };
    let ems: f32 = match FontRef::new(data) {
        Ok(font) => {
            let charmap = font.charmap();
            let metrics = font.glyph_metrics(Size::new(1.0), LocationRef::default());
            text.chars()
                .map(|c| {
                    charmap.map(c).and_then(|g| metrics.advance_width(g)).unwrap_or(FALLBACK_EM)
                })
                .sum()
        }
        Err(_) => text.chars().count() as f32 * FALLBACK_EM,
    };
    ems * size * SLACK
}

/// `text`, cut short with an ellipsis if it is wider than `max` pixels.
pub fn fit(text: &str, size: f32, bold: bool, max: f32) -> String {
    if width(text, size, bold) <= max {
        return text.to_owned();
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let cut: String = chars.iter().collect::<String>() + "…";
        if width(&cut, size, bold) <= max {
            return cut;
        }
    }
    "…".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_come_from_the_font() {
        assert!(FontRef::new(ttf_noto_sans::REGULAR).is_ok());
        let narrow = width("iiii", 13.0, false);
        let wide = width("WWWW", 13.0, false);
        assert!(narrow > 5.0 && wide > 2.5 * narrow, "{narrow} {wide}");
        assert!(width("frontend", 13.0, true) > width("frontend", 13.0, false));
    }

    #[test]
    fn long_text_is_cut_to_fit() {
        let cut = fit("a-very-long-workload-name-that-goes-on-and-on", 13.0, false, 100.0);
        assert!(cut.ends_with('…') && width(&cut, 13.0, false) <= 100.0, "{cut}");
        assert_eq!(fit("cart", 13.0, false, 100.0), "cart");
    }
}

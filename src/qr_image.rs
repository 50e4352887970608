//! QR codes as SVG, PNG and terminal text, and decoding one from a picture.

use anyhow::{Context, anyhow};
use qrcode::QrCode;
use qrcode::render::{svg, unicode};

fn code(text: &str) -> QrCode {
    // Our texts are short ASCII, far below the QR capacity.
    QrCode::new(text.as_bytes()).expect("QR text fits in a QR code")
}

pub fn svg(text: &str) -> String {
    code(text)
        .render::<svg::Color>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build()
}

pub fn png(text: &str) -> Vec<u8> {
    let img = code(text)
        .render::<image::Luma<u8>>()
        .min_dimensions(256, 256)
        .build();
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG encoding to memory cannot fail");
    out.into_inner()
}

/// Two rows of modules per line with half blocks, for terminals.
pub fn terminal(text: &str) -> String {
    code(text)
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build()
}

/// Decodes the first QR code found in a PNG or JPEG image.
pub fn decode(image_bytes: &[u8]) -> anyhow::Result<String> {
    let img = image::load_from_memory(image_bytes)
        .context("not a PNG or JPEG image")?
        .to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    let grid = grids
        .first()
        .ok_or_else(|| anyhow!("no QR code found in the image"))?;
    let (_, content) = grid
        .decode()
        .map_err(|e| anyhow!("found a QR code but could not read it: {e}"))?;
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips_through_the_decoder() {
        let text = "imctl://pcsession/0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(decode(&png(text)).unwrap(), text);
    }

    #[test]
    fn svg_and_terminal_render() {
        assert!(svg("x").starts_with("<?xml"));
        assert!(terminal("x").contains('█'));
        assert!(decode(b"not an image").is_err());
    }
}

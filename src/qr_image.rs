//! QR codes as SVG, PNG and terminal text; reading PNG and JPEG pictures
//! (the size of an upload, the QR code in a screenshot).
//!
//! The `png` and `zune-jpeg` decoders are used directly rather than through
//! the `image` crate, whose colour management alone took a fifth of a cold
//! build.

use std::io::Cursor;

use anyhow::anyhow;

use qrcode::QrCode;
use qrcode::render::{svg, unicode};
use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};

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

/// A greyscale PNG at least 256 pixels wide, with the standard 4-module
/// quiet zone around the code.
pub fn png(text: &str) -> Vec<u8> {
    const QUIET: usize = 4;
    let code = code(text);
    let modules = code.width();
    let dark = code.to_colors();
    let scale = 256usize.div_ceil(modules + 2 * QUIET);
    let side = (modules + 2 * QUIET) * scale;
    let mut pixels = vec![u8::MAX; side * side];
    for (i, color) in dark.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (mx, my) = (i % modules + QUIET, i / modules + QUIET);
        for y in my * scale..(my + 1) * scale {
            pixels[y * side + mx * scale..y * side + (mx + 1) * scale].fill(0);
        }
    }
    let mut out = Vec::new();
    let side = u32::try_from(side).expect("a QR picture is small");
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .expect("PNG encoding to memory cannot fail");
    writer
        .write_image_data(&pixels)
        .expect("PNG encoding to memory cannot fail");
    writer.finish().expect("PNG encoding to memory cannot fail");
    out
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

/// The picture formats imctl reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Jpeg => "image/jpeg",
        }
    }

    /// Tells the format by the file's first bytes.
    pub fn sniff(bytes: &[u8]) -> Result<Self, PictureError> {
        const OTHERS: [(&[u8], &str); 4] = [
            (b"GIF8", "GIF"),
            (b"BM", "BMP"),
            (b"II*\0", "TIFF"),
            (b"MM\0*", "TIFF"),
        ];
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Ok(Format::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Ok(Format::Jpeg)
        } else if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
            Err(PictureError::Other("WebP"))
        } else if let Some((_, name)) = OTHERS.iter().find(|(magic, _)| bytes.starts_with(magic)) {
            Err(PictureError::Other(name))
        } else {
            Err(PictureError::Unknown)
        }
    }
}

/// Why a picture cannot be read; each text completes "FILE is …".
#[derive(Debug, thiserror::Error)]
pub enum PictureError {
    #[error("not a PNG or JPEG picture")]
    Unknown,
    #[error("a {0} picture; send PNG or JPEG")]
    Other(&'static str),
    #[error("a damaged {0:?} picture ({1})")]
    Damaged(Format, String),
}

/// A picture's format, width and height, read from its header only.
pub fn dimensions(bytes: &[u8]) -> Result<(Format, u32, u32), PictureError> {
    let format = Format::sniff(bytes)?;
    let damaged = |e: &dyn std::fmt::Display| PictureError::Damaged(format, e.to_string());
    let (w, h) = match format {
        Format::Png => {
            let mut decoder = png::Decoder::new(Cursor::new(bytes));
            let info = decoder.read_header_info().map_err(|e| damaged(&e))?;
            (info.width, info.height)
        }
        Format::Jpeg => {
            let mut decoder = zune_jpeg::JpegDecoder::new(ZCursor::new(bytes));
            decoder.decode_headers().map_err(|e| damaged(&e))?;
            let (w, h) = decoder.dimensions().expect("the headers were decoded");
            (w as u32, h as u32)
        }
    };
    Ok((format, w, h))
}

/// A picture as one luminance byte per pixel: (width, height, pixels).
fn luma(bytes: &[u8]) -> Result<(usize, usize, Vec<u8>), PictureError> {
    let format = Format::sniff(bytes)?;
    let damaged = |e: &dyn std::fmt::Display| PictureError::Damaged(format, e.to_string());
    match format {
        Format::Png => {
            let mut decoder = png::Decoder::new(Cursor::new(bytes));
            decoder.set_transformations(png::Transformations::normalize_to_color8());
            let mut reader = decoder.read_info().map_err(|e| damaged(&e))?;
            let size = reader
                .output_buffer_size()
                .ok_or_else(|| damaged(&"too large"))?;
            let mut buf = vec![0; size];
            let frame = reader.next_frame(&mut buf).map_err(|e| damaged(&e))?;
            let channels = frame.color_type.samples();
            let (w, h) = (frame.width as usize, frame.height as usize);
            let mut out = Vec::with_capacity(w * h);
            for row in buf.chunks(frame.line_size).take(h) {
                out.extend(row.chunks(channels).take(w).map(|px| match px {
                    [r, g, b, ..] if channels >= 3 => {
                        ((299 * u32::from(*r) + 587 * u32::from(*g) + 114 * u32::from(*b)) / 1000)
                            as u8
                    }
                    [grey, ..] => *grey,
                    [] => 0,
                }));
            }
            Ok((w, h, out))
        }
        Format::Jpeg => {
            let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
            let mut decoder =
                zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
            let pixels = decoder.decode().map_err(|e| damaged(&e))?;
            let (w, h) = decoder.dimensions().expect("the picture was decoded");
            Ok((w, h, pixels))
        }
    }
}

/// Decodes the first QR code found in a PNG or JPEG image.
pub fn decode(image_bytes: &[u8]) -> anyhow::Result<String> {
    let (w, h, pixels) = luma(image_bytes)?;
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
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
    fn png_is_greyscale_with_a_quiet_zone_and_at_least_256_pixels() {
        let (format, w, h) = dimensions(&png("x")).unwrap();
        assert_eq!(format, Format::Png);
        assert_eq!(w, h);
        assert!(w >= 256, "{w}");
        let (w, _, pixels) = luma(&png("x")).unwrap();
        // The top rows are the quiet zone: all white.
        assert!(pixels[..4 * w].iter().all(|&p| p == u8::MAX));
        assert!(pixels.contains(&0));
    }

    #[test]
    fn a_colour_jpeg_screenshot_decodes() {
        // A QR code of the app-server, recompressed as a colour JPEG at
        // quality 60 (tests/fixtures/qr-login.jpg).
        let jpeg = include_bytes!("../tests/fixtures/qr-login.jpg");
        assert_eq!(dimensions(jpeg).unwrap(), (Format::Jpeg, 287, 287));
        let text = decode(jpeg).unwrap();
        assert!(
            text.ends_with("235a4c7c04af7ba35480287f64561c98b612833155c86873"),
            "{text}"
        );
    }

    #[test]
    fn other_pictures_are_named_and_broken_ones_refused() {
        let err = |bytes: &[u8]| dimensions(bytes).unwrap_err().to_string();
        assert_eq!(err(b"not an image"), "not a PNG or JPEG picture");
        assert_eq!(err(b"GIF89a\x01\x00"), "a GIF picture; send PNG or JPEG");
        assert_eq!(
            err(b"RIFF\0\0\0\0WEBPVP8 "),
            "a WebP picture; send PNG or JPEG"
        );
        let cut = &png("x")[..20];
        assert!(
            err(cut).starts_with("a damaged Png picture"),
            "{}",
            err(cut)
        );
        assert!(decode(&[0xFF, 0xD8, 0xFF, 0xE0]).is_err());
        assert!(decode(b"not an image").is_err());
    }

    #[test]
    fn svg_and_terminal_render() {
        assert!(svg("x").starts_with("<?xml"));
        assert!(terminal("x").contains('█'));
    }
}

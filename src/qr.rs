//! Rendering a QR string for people: PNG for the API, SVG, and text for a
//! terminal (so an operator can scan over ssh).

use qrcode::{render::unicode, EcLevel, QrCode};

/// Why a QR string could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// Too long for any QR version.
    #[error("cannot encode QR: {0}")]
    Encode(#[from] qrcode::types::QrError),
    #[error("cannot write PNG: {0}")]
    Png(#[from] png::EncodingError),
}

fn code(data: &str) -> Result<QrCode, QrError> {
    Ok(QrCode::with_error_correction_level(data.as_bytes(), EcLevel::L)?)
}

/// A grayscale PNG: 8 px per module, a 4-module quiet zone.
pub fn png(data: &str) -> Result<Vec<u8>, QrError> {
    const SCALE: usize = 8;
    const QUIET: usize = 4;
    let code = code(data)?;
    let width = code.width();
    let colors = code.to_colors();
    let side = (width + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (mx, my) = (i % width + QUIET, i / width + QUIET);
            for y in my * SCALE..(my + 1) * SCALE {
                pixels[y * side + mx * SCALE..y * side + (mx + 1) * SCALE].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
    }
    Ok(out)
}

/// An SVG document.
pub fn svg(data: &str) -> Result<String, QrError> {
    Ok(code(data)?.render::<qrcode::render::svg::Color>().min_dimensions(256, 256).build())
}

/// Text for a terminal: two modules per character cell, dark on light.
pub fn terminal(data: &str) -> Result<String, QrError> {
    Ok(code(data)?.render::<unicode::Dense1x2>().dark_color(unicode::Dense1x2::Light).light_color(unicode::Dense1x2::Dark).build())
}

#[cfg(test)]
mod tests {
    #[test]
    fn png_has_the_signature_and_svg_is_svg() {
        let qr = "2@abc,AAAA,BBBB,CCCC,WEB";
        assert!(super::png(qr).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(super::svg(qr).unwrap().contains("<svg"));
        assert!(super::terminal(qr).unwrap().lines().count() > 10);
    }
}

//! PNG and JPEG to a greyscale picture, refusing images whose declared size exceeds a pixel
//! budget before anything of that size is allocated (decompression bombs).

use super::ImageError;

/// A greyscale picture, row-major, values in [0, 1] where 1 is white; transparent pixels are
/// composited onto white.
#[derive(Debug, Clone, PartialEq)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

/// Decodes PNG or JPEG bytes (recognised by their magic bytes).
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Gray, ImageError> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes, max_pixels)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        decode_jpeg(bytes, max_pixels)
    } else {
        Err(ImageError::Unsupported)
    }
}

/// The width and height an image declares, read from its header without decoding it (what
/// decoding it will cost is known before any work), refused as [`decode`] would refuse them:
/// no pixels, or more than `max_pixels`.
pub fn dimensions(bytes: &[u8], max_pixels: u64) -> Result<(u64, u64), ImageError> {
    let (width, height) = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        // The first chunk is IHDR: length, type, then width and height (big-endian).
        if bytes.len() < 24 || &bytes[12..16] != b"IHDR" {
            return Err(corrupt("no PNG header chunk"));
        }
        let be = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        (be(16) as u64, be(20) as u64)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        let mut decoder = jpeg_decoder::Decoder::new(bytes);
        decoder.read_info().map_err(corrupt)?;
        let info = decoder.info().ok_or_else(|| corrupt("no frame header"))?;
        (info.width as u64, info.height as u64)
    } else {
        return Err(ImageError::Unsupported);
    };
    check_size(width, height, max_pixels)?;
    Ok((width, height))
}

fn check_size(width: u64, height: u64, limit: u64) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt("the image has no pixels".into()));
    }
    if width.saturating_mul(height) > limit {
        return Err(ImageError::TooLarge {
            width,
            height,
            limit,
        });
    }
    Ok(())
}

fn corrupt(e: impl std::fmt::Display) -> ImageError {
    ImageError::Corrupt(e.to_string())
}

/// Rec. 601 luma of 8-bit RGB, in [0, 1].
fn luma(r: u8, g: u8, b: u8) -> f32 {
    (0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32) / 255.0
}

/// Grey `g` with opacity `a` over white.
fn over_white(g: f32, a: u8) -> f32 {
    let a = a as f32 / 255.0;
    g * a + (1.0 - a)
}

fn decode_png(bytes: &[u8], max_pixels: u64) -> Result<Gray, ImageError> {
    // The decoder's own allocation budget: four bytes per allowed pixel and some slack.
    let limits = png::Limits {
        bytes: (max_pixels.saturating_mul(4) as usize).saturating_add(1 << 20),
    };
    let mut decoder = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let (w, h) = (reader.info().width as u64, reader.info().height as u64);
    check_size(w, h, max_pixels)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| corrupt("image too large for this platform"))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(corrupt)?;
    let (width, height) = (frame.width as usize, frame.height as usize);
    let data = &buf[..frame.line_size * height];
    let channels = frame.color_type.samples();
    let mut pixels = Vec::with_capacity(width * height);
    for row in data.chunks_exact(frame.line_size) {
        for px in row[..width * channels].chunks_exact(channels) {
            pixels.push(match frame.color_type {
                png::ColorType::Grayscale => px[0] as f32 / 255.0,
                png::ColorType::GrayscaleAlpha => over_white(px[0] as f32 / 255.0, px[1]),
                png::ColorType::Rgb => luma(px[0], px[1], px[2]),
                png::ColorType::Rgba => over_white(luma(px[0], px[1], px[2]), px[3]),
                png::ColorType::Indexed => return Err(corrupt("palette was not expanded")),
            });
        }
    }
    Ok(Gray {
        width,
        height,
        pixels,
    })
}

fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<Gray, ImageError> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().map_err(corrupt)?;
    let info = decoder.info().ok_or_else(|| corrupt("no frame header"))?;
    let (width, height) = (info.width as usize, info.height as usize);
    check_size(width as u64, height as u64, max_pixels)?;
    decoder.set_max_decoding_buffer_size((max_pixels as usize).saturating_mul(4));
    let data = decoder.decode().map_err(corrupt)?;
    let n = width * height;
    let pixels: Vec<f32> = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => data.iter().take(n).map(|&v| v as f32 / 255.0).collect(),
        jpeg_decoder::PixelFormat::L16 => data
            .chunks_exact(2)
            .take(n)
            .map(|p| u16::from_be_bytes([p[0], p[1]]) as f32 / 65535.0)
            .collect(),
        jpeg_decoder::PixelFormat::RGB24 => data
            .chunks_exact(3)
            .take(n)
            .map(|p| luma(p[0], p[1], p[2]))
            .collect(),
        jpeg_decoder::PixelFormat::CMYK32 => data
            .chunks_exact(4)
            .take(n)
            .map(|p| {
                // The decoder undoes Adobe's inverted storage (and converts YCCK), so each
                // channel is an amount of ink, 255 the most: the light left is (1 − ink).
                let white = |ink: u8| 255 - ink;
                luma(white(p[0]), white(p[1]), white(p[2])) * white(p[3]) as f32 / 255.0
            })
            .collect(),
    };
    if pixels.len() != n {
        return Err(corrupt("fewer pixels than the header declares"));
    }
    Ok(Gray {
        width,
        height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(width: u32, height: u32, color: png::ColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(data).unwrap();
        w.finish().unwrap();
        out
    }

    #[test]
    fn dimensions_come_from_the_header_alone() {
        let png = png_bytes(3, 2, png::ColorType::Grayscale, &[0; 6]);
        assert_eq!(dimensions(&png, 100).unwrap(), (3, 2));
        // The header is enough: the pixel data may be missing.
        assert_eq!(dimensions(&png[..33], 100).unwrap(), (3, 2));
        assert!(matches!(
            dimensions(&png[..20], 100),
            Err(ImageError::Corrupt(_))
        ));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for name in ["test-0-label-7.jpg", "test-0-label-7-cmyk.jpg"] {
            let jpeg = std::fs::read(dir.join(name)).unwrap();
            let (w, h) = dimensions(&jpeg, 1 << 20).unwrap();
            let g = decode(&jpeg, 1 << 20).unwrap();
            assert_eq!((w, h), (g.width as u64, g.height as u64), "{name}");
        }
        assert_eq!(dimensions(b"GIF89a", 100), Err(ImageError::Unsupported));
    }

    #[test]
    fn png_colour_types_become_grey_over_white() {
        // One black and one white pixel in each colour type; a transparent pixel is white.
        let g = decode(&png_bytes(2, 1, png::ColorType::Grayscale, &[0, 255]), 100).unwrap();
        assert_eq!(g.pixels, vec![0.0, 1.0]);
        let rgb = png_bytes(2, 1, png::ColorType::Rgb, &[0, 0, 0, 255, 255, 255]);
        let g = decode(&rgb, 100).unwrap();
        assert!((g.pixels[0]).abs() < 1e-6 && (g.pixels[1] - 1.0).abs() < 1e-4);
        let rgba = png_bytes(2, 1, png::ColorType::Rgba, &[0, 0, 0, 255, 0, 0, 0, 0]);
        let g = decode(&rgba, 100).unwrap();
        assert!(g.pixels[0].abs() < 1e-6 && (g.pixels[1] - 1.0).abs() < 1e-6);
    }

    /// The same digit as an RGB JPEG and as four-channel JPEGs in Adobe's convention (ink
    /// stored inverted, as Photoshop and Pillow write it): plain CMYK (Pillow) and YCCK
    /// (libjpeg via imagecodecs); see tests/fixtures/make_jpeg_fixtures.py.
    #[test]
    fn cmyk_and_ycck_jpegs_read_as_the_same_picture_as_rgb() {
        let fixture = |name: &str| {
            let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
            decode(&std::fs::read(path).unwrap(), 1 << 20).unwrap()
        };
        let rgb = fixture("test-0-label-7.jpg");
        let dark = |g: &Gray| g.pixels.iter().filter(|&&p| p < 0.5).count();
        // A 7 in dark ink on white: a few hundred of the 84 x 84 pixels are ink.
        assert!((200..3000).contains(&dark(&rgb)), "{}", dark(&rgb));
        for name in ["test-0-label-7-cmyk.jpg", "test-0-label-7-ycck.jpg"] {
            let g = fixture(name);
            assert_eq!((g.width, g.height), (rgb.width, rgb.height), "{name}");
            let diff = g
                .pixels
                .iter()
                .zip(&rgb.pixels)
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
                / g.pixels.len() as f32;
            assert!(diff < 0.03, "{name}: mean difference {diff}");
            let ink = dark(&g) as f64 / dark(&rgb) as f64;
            assert!((0.9..1.1).contains(&ink), "{name}: {ink} of the ink");
        }
    }

    #[test]
    fn a_size_beyond_the_pixel_budget_is_refused() {
        // 4 x 3 = 12 pixels against a budget of 11. (A header declaring 10^10 pixels with no
        // data is checked the same way, before any allocation: tests/service/classify.rs.)
        let png = png_bytes(4, 3, png::ColorType::Grayscale, &[0; 12]);
        assert_eq!(
            decode(&png, 11),
            Err(ImageError::TooLarge {
                width: 4,
                height: 3,
                limit: 11
            })
        );
        assert!(decode(&png, 12).is_ok());
    }

    #[test]
    fn garbage_and_truncated_images_are_errors() {
        assert_eq!(decode(b"hello", 100), Err(ImageError::Unsupported));
        let ok = png_bytes(4, 4, png::ColorType::Grayscale, &[7; 16]);
        assert!(matches!(
            decode(&ok[..ok.len() - 20], 100),
            Err(ImageError::Corrupt(_))
        ));
        assert!(matches!(
            decode(&[0xff, 0xd8, 0xff, 0xe0, 0, 0], 100),
            Err(ImageError::Corrupt(_))
        ));
    }
}

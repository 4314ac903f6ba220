//! Pictures of what a model holds: tiles of images (pixel probabilities, receptive fields) laid
//! out as a grid and encoded as an 8-bit greyscale PNG, and sequences as animated PNGs.

use ndarray::ArrayView2;

/// Errors of image encoding.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{0} values per image do not make a {1}x{2} image")]
    Shape(usize, usize, usize),
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
}

/// How values map to grey levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// Values in [0, 1] (probabilities): 0 is black, 1 white; clipped outside.
    Unit,
    /// Each tile stretched from its own minimum (black) to maximum (white): for weights.
    PerTile,
}

/// Lays out `images` ([n, height·width], one per row) in a grid `cols` tiles wide with a
/// one-pixel dark border, and returns the PNG bytes.
pub fn grid_png(
    images: ArrayView2<f32>,
    height: usize,
    width: usize,
    cols: usize,
    scale: Scale,
) -> Result<Vec<u8>, RenderError> {
    if height.checked_mul(width) != Some(images.ncols()) || height == 0 || width == 0 {
        return Err(RenderError::Shape(images.ncols(), height, width));
    }
    let n = images.nrows();
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols).max(1);
    let (gw, gh) = (cols * (width + 1) + 1, rows * (height + 1) + 1);
    let mut pixels = vec![40u8; gw * gh];
    for (t, img) in images.rows().into_iter().enumerate() {
        let (lo, hi) = match scale {
            Scale::Unit => (0.0, 1.0),
            Scale::PerTile => img
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                }),
        };
        let span = if hi > lo { hi - lo } else { 1.0 };
        let (x0, y0) = ((t % cols) * (width + 1) + 1, (t / cols) * (height + 1) + 1);
        for (i, &v) in img.iter().enumerate() {
            let level = ((v - lo) / span).clamp(0.0, 1.0);
            pixels[(y0 + i / width) * gw + x0 + i % width] = (level * 255.0).round() as u8;
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, gw as u32, gh as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&pixels)?;
    Ok(out)
}

/// An animated PNG (APNG) of `frames` ([n, height·width], values in [0, 1]), each shown for
/// `delay_ms`, scaled up `zoom` times (nearest neighbour) so small frames stay visible;
/// it loops forever. Browsers show it in an `<img>`; viewers without APNG show frame one.
pub fn animation_png(
    frames: ArrayView2<f32>,
    height: usize,
    width: usize,
    zoom: usize,
    delay_ms: u16,
) -> Result<Vec<u8>, RenderError> {
    if height.checked_mul(width) != Some(frames.ncols()) || height == 0 || width == 0 {
        return Err(RenderError::Shape(frames.ncols(), height, width));
    }
    let zoom = zoom.max(1);
    let (gw, gh) = (width * zoom, height * zoom);
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, gw as u32, gh as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_animated(frames.nrows().max(1) as u32, 0)?;
    enc.set_frame_delay(delay_ms, 1000)?;
    let mut writer = enc.write_header()?;
    let mut pixels = vec![0u8; gw * gh];
    for frame in frames.rows() {
        for (i, p) in pixels.iter_mut().enumerate() {
            let (y, x) = (i / gw / zoom, (i % gw) / zoom);
            *p = (frame[y * width + x].clamp(0.0, 1.0) * 255.0).round() as u8;
        }
        writer.write_image_data(&pixels)?;
    }
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_decodes_to_the_tiles_it_was_given() {
        // Two 2x3 tiles: the first all white, the second a ramp; decode the PNG and read back.
        let images = ndarray::array![
            [1.0f32, 1.0, 1.0, 1.0, 1.0, 1.0],
            [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        ];
        let bytes = grid_png(images.view(), 2, 3, 2, Scale::Unit).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        // Two tiles of width 3 side by side, one of height 2, each with a 1-pixel border.
        assert_eq!((info.width, info.height), (2 * (3 + 1) + 1, 2 + 1 + 1));
        let at = |x: usize, y: usize| buf[y * info.width as usize + x];
        assert_eq!(at(1, 1), 255);
        assert_eq!(at(0, 0), 40, "border");
        assert_eq!(at(5, 1), 0);
        assert_eq!(at(7, 2), 255);
        assert_eq!(at(6, 1), 51);
    }

    #[test]
    fn animation_decodes_to_its_frames() {
        // Three 1x2 frames, zoomed twice: the decoder must see three 4x2 frames in order.
        let frames = ndarray::array![[0.0f32, 1.0], [1.0, 0.0], [0.5, 0.5]];
        let bytes = animation_png(frames.view(), 1, 2, 2, 100).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let control = reader.info().animation_control.unwrap();
        assert_eq!((control.num_frames, control.num_plays), (3, 0));
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let mut seen = Vec::new();
        for _ in 0..3 {
            let info = reader.next_frame(&mut buf).unwrap();
            assert_eq!((info.width, info.height), (4, 2));
            seen.push((buf[0], buf[1], buf[2], buf[7]));
        }
        assert_eq!(
            seen,
            vec![(0, 0, 255, 255), (255, 255, 0, 0), (128, 128, 128, 128)]
        );
    }

    #[test]
    fn wrong_tile_size_is_an_error() {
        let images = ndarray::Array2::<f32>::zeros((2, 10));
        assert!(matches!(
            grid_png(images.view(), 3, 3, 2, Scale::Unit),
            Err(RenderError::Shape(10, 3, 3))
        ));
    }
}

//! The demo's data: the UCI handwritten digits shipped in the repo, or MNIST
//! from IDX files the user has.

use std::io::Read;
use std::path::Path;

/// A classification data set, split into training and test examples.
pub struct Dataset {
    /// What it is, for the table's title.
    pub name: String,
    /// Features per example.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
    /// Training features, `train_y.len() x dim`, row-major, scaled to [0, 1].
    pub train_x: Vec<f32>,
    /// Training labels.
    pub train_y: Vec<u32>,
    /// Test features.
    pub test_x: Vec<f32>,
    /// Test labels.
    pub test_y: Vec<u32>,
}

/// scikit-learn's copy of the UCI digits (CC BY 4.0, see data/DIGITS_LICENSE.md).
const DIGITS_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

/// The seed of the digits' train/test split: fixed, so that every run and
/// every `--seed` is judged on the same 359 test images.
const SPLIT_SEED: u64 = 2024;

/// A small deterministic generator (SplitMix64): the demo needs
/// reproducible shuffles and initial weights, nothing more.
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Shuffles `items` (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// The 1,797 digits, 1,438 for training and 359 for testing.
pub fn digits() -> Result<Dataset, String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|e| format!("the bundled digits.csv.gz: {e}"))?;
    let (dim, classes) = (64, 10);
    let mut rows: Vec<(Vec<f32>, u32)> = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let values: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("digits.csv.gz line {}: {e}", n + 1))?;
        if values.len() != dim + 1 || values[dim] < 0.0 || values[dim] >= classes as f32 {
            return Err(format!(
                "digits.csv.gz line {}: expected 64 pixels and a label 0-9",
                n + 1
            ));
        }
        let x = values[..dim].iter().map(|v| v / 16.0).collect();
        rows.push((x, values[dim] as u32));
    }
    SplitMix::new(SPLIT_SEED).shuffle(&mut rows);
    let test = rows.split_off(rows.len() - rows.len() / 5);
    let flatten = |rows: &[(Vec<f32>, u32)]| -> (Vec<f32>, Vec<u32>) {
        (
            rows.iter().flat_map(|r| r.0.iter().copied()).collect(),
            rows.iter().map(|r| r.1).collect(),
        )
    };
    let (train_x, train_y) = flatten(&rows);
    let (test_x, test_y) = flatten(&test);
    Ok(Dataset {
        name: format!(
            "UCI handwritten digits (8x8): {} train, {} test",
            train_y.len(),
            test_y.len()
        ),
        dim,
        classes,
        train_x,
        train_y,
        test_x,
        test_y,
    })
}

/// MNIST from the four IDX files in `dir` (each may be gzipped, `.gz`).
pub fn mnist(dir: &Path) -> Result<Dataset, String> {
    let (train_x, rows, cols) = idx_images(&find(dir, "train-images-idx3-ubyte")?)?;
    let train_y = idx_labels(&find(dir, "train-labels-idx1-ubyte")?)?;
    let (test_x, test_rows, test_cols) = idx_images(&find(dir, "t10k-images-idx3-ubyte")?)?;
    let test_y = idx_labels(&find(dir, "t10k-labels-idx1-ubyte")?)?;
    let dim = rows * cols;
    if (test_rows, test_cols) != (rows, cols) {
        return Err(format!(
            "{}: training images are {rows}x{cols} but test images {test_rows}x{test_cols}",
            dir.display()
        ));
    }
    for (x, y, what) in [(&train_x, &train_y, "train"), (&test_x, &test_y, "t10k")] {
        if x.len() != y.len() * dim {
            return Err(format!(
                "{}: {what} has {} images but {} labels",
                dir.display(),
                x.len() / dim,
                y.len()
            ));
        }
    }
    let classes = train_y
        .iter()
        .chain(&test_y)
        .max()
        .map_or(0, |&m| m as usize + 1);
    Ok(Dataset {
        name: format!(
            "MNIST ({rows}x{cols}): {} train, {} test",
            train_y.len(),
            test_y.len()
        ),
        dim,
        classes,
        train_x,
        train_y,
        test_x,
        test_y,
    })
}

/// The most a gzipped IDX file may unzip to (MNIST's largest is 47 MB,
/// EMNIST's about 700 MB): a small file that inflates past it is refused
/// before it fills the memory.
pub const MAX_INFLATED_BYTES: u64 = 1 << 30;

/// `dir/name`, or `dir/name.gz`, read whole and unzipped (at most
/// [`MAX_INFLATED_BYTES`]).
fn find(dir: &Path, name: &str) -> Result<(String, Vec<u8>), String> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    let (path, zipped) = if plain.exists() {
        (plain, false)
    } else if gz.exists() {
        (gz, true)
    } else {
        return Err(format!(
            "{}: no {name} (or {name}.gz); --data expects the four MNIST IDX files",
            dir.display()
        ));
    };
    let shown = path.display().to_string();
    let raw = std::fs::read(&path).map_err(|e| format!("{shown}: {e}"))?;
    if !zipped {
        return Ok((shown, raw));
    }
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{shown}: not a readable gzip file ({e})"))?;
    if bytes.len() as u64 > MAX_INFLATED_BYTES {
        return Err(format!(
            "{shown}: unzips to more than {} MiB, more than an IDX file of MNIST's kind holds",
            MAX_INFLATED_BYTES >> 20
        ));
    }
    Ok((shown, bytes))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// An IDX image file (magic 0x00000803): pixels scaled to [0, 1], rows, cols.
fn idx_images((path, bytes): &(String, Vec<u8>)) -> Result<(Vec<f32>, usize, usize), String> {
    let bad = |what: &str| format!("{path}: not an IDX image file ({what})");
    if be_u32(bytes, 0) != Some(0x0803) {
        return Err(bad("expected magic number 0x00000803"));
    }
    let (n, rows, cols) = match (be_u32(bytes, 4), be_u32(bytes, 8), be_u32(bytes, 12)) {
        (Some(n), Some(r), Some(c)) => (n, r, c),
        _ => return Err(bad("header cut short")),
    };
    let size = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .filter(|&s| s > 0 && bytes.len() == 16 + s)
        .ok_or_else(|| {
            bad(&format!(
                "{n} images of {rows}x{cols} do not match its {} bytes",
                bytes.len()
            ))
        })?;
    Ok((
        bytes[16..16 + size]
            .iter()
            .map(|&b| b as f32 / 255.0)
            .collect(),
        rows,
        cols,
    ))
}

/// An IDX label file (magic 0x00000801).
fn idx_labels((path, bytes): &(String, Vec<u8>)) -> Result<Vec<u32>, String> {
    let bad = |what: &str| format!("{path}: not an IDX label file ({what})");
    if be_u32(bytes, 0) != Some(0x0801) {
        return Err(bad("expected magic number 0x00000801"));
    }
    let n = be_u32(bytes, 4).ok_or_else(|| bad("header cut short"))?;
    if bytes.len() != 8 + n {
        return Err(bad(&format!(
            "{n} labels do not match its {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes[8..].iter().map(|&b| b as u32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gzip_bomb_is_refused_before_it_fills_the_memory() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("ferroptim-bomb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_INFLATED_BYTES >> 20) + 1 {
            gz.write_all(&zeros).unwrap();
        }
        let path = dir.join("train-images-idx3-ubyte.gz");
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let err = find(&dir, "train-images-idx3-ubyte")
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains("unzips to more than 1024 MiB"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_digits_load_and_split_the_same_way_every_time() {
        let d = digits().unwrap();
        assert_eq!((d.train_y.len(), d.test_y.len()), (1438, 359));
        assert_eq!(d.train_x.len(), 1438 * 64);
        assert!(d.train_x.iter().all(|&v| (0.0..=1.0).contains(&v)));
        let again = digits().unwrap();
        assert_eq!(d.test_y, again.test_y);
        // Every class in both halves.
        for c in 0..10 {
            assert!(d.train_y.contains(&c) && d.test_y.contains(&c));
        }
    }

    #[test]
    fn idx_files_are_read_and_bad_ones_refused() {
        let dir = std::env::temp_dir().join(format!("ferroptim-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let images = |n: u32| {
            let mut b = vec![0, 0, 8, 3];
            for v in [n, 2, 2] {
                b.extend_from_slice(&v.to_be_bytes());
            }
            b.extend((0..n * 4).map(|i| (i * 60 % 256) as u8));
            b
        };
        let labels = |n: u32| {
            let mut b = vec![0, 0, 8, 1];
            b.extend_from_slice(&n.to_be_bytes());
            b.extend((0..n).map(|i| (i % 3) as u8));
            b
        };
        std::fs::write(dir.join("train-images-idx3-ubyte"), images(5)).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte"), labels(5)).unwrap();
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), images(2)).unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), labels(2)).unwrap();
        let d = mnist(&dir).unwrap();
        assert_eq!(
            (d.dim, d.classes, d.train_y.len(), d.test_y.len()),
            (4, 3, 5, 2)
        );
        assert_eq!(d.train_x[1], 60.0 / 255.0);

        let mut cut = images(5);
        cut.pop();
        std::fs::write(dir.join("train-images-idx3-ubyte"), cut).unwrap();
        let err = mnist(&dir).err().unwrap();
        assert!(err.contains("do not match"), "{err}");
        std::fs::write(dir.join("train-images-idx3-ubyte"), labels(5)).unwrap();
        assert!(mnist(&dir).err().unwrap().contains("magic"));
        std::fs::write(dir.join("train-images-idx3-ubyte"), images(5)).unwrap();
        std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
        assert!(mnist(&dir)
            .err()
            .unwrap()
            .contains("no t10k-labels-idx1-ubyte"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

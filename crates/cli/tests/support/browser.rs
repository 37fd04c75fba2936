//! A headless Chromium (Debian's `chromium` package) to look at the HTML the CLI writes: a
//! screenshot decoded to pixels, and the DOM as the browser built it.

use std::io::{BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long Chromium may take to start, load a page and exit (it is slow on a busy machine).
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// A Chromium to run headless.
pub struct Chromium {
    program: PathBuf,
}

impl Chromium {
    /// Finds Chromium: `$CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`. Without
    /// one, fails under `CI` (saying how to install it) and otherwise prints why `test` is
    /// skipped and returns `None`.
    pub fn find(test: &str) -> Option<Self> {
        let candidates = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .into_iter()
            .chain(["chromium", "chromium-browser"].map(PathBuf::from));
        for program in candidates {
            let found = Command::new(&program)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if found {
                return Some(Self { program });
            }
        }
        let why = "no Chromium found (install it with `apt-get install chromium`, or set \
                   CHROMIUM to its path)";
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: CI is set and {why}"
        );
        eprintln!("skipping {test}: {why}; set CI=1 to make this a failure");
        None
    }

    /// Loads `page` in a `width`×`height` window, saves a screenshot of it to `png` and
    /// decodes it.
    pub fn screenshot(&self, page: &Path, png: &Path, width: u32, height: u32) -> Screenshot {
        self.run(&[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
            page_url(page),
        ]);
        Screenshot::decode(png)
    }

    /// The DOM of `page` once loaded, serialised as HTML.
    pub fn dump_dom(&self, page: &Path) -> String {
        let stdout = self.run(&["--dump-dom".to_string(), page_url(page)]);
        String::from_utf8(stdout).expect("Chromium prints the DOM as UTF-8")
    }

    /// Runs Chromium headless with a fresh profile; its stdout. Panics, with Chromium's
    /// stderr, when it fails or outlasts [`CHROMIUM_TIMEOUT`].
    fn run(&self, args: &[String]) -> Vec<u8> {
        let profile = tempfile::tempdir().expect("a temporary Chromium profile");
        let mut child = Command::new(&self.program)
            .args([
                "--headless=new",
                // Root (as in CI containers) cannot use Chromium's sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.program.display()));
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let _ = pipe.read_to_end(&mut out);
                out
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for Chromium") {
                break Some(status);
            }
            if started.elapsed() > CHROMIUM_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = stdout.join().expect("stdout reader");
        let stderr = String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned();
        match status {
            Some(s) if s.success() => stdout,
            Some(s) => panic!("chromium {args:?} failed ({s}):\n{stderr}"),
            None => {
                panic!("chromium {args:?} did not finish within {CHROMIUM_TIMEOUT:?}:\n{stderr}")
            }
        }
    }
}

fn page_url(page: &Path) -> String {
    let page = page.canonicalize().expect("the page exists");
    format!("file://{}", page.display())
}

/// A decoded screenshot, as RGB pixels row by row.
pub struct Screenshot {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    pixels: Vec<[u8; 3]>,
}

impl Screenshot {
    /// Decodes the PNG at `path` (any colour type; alpha is dropped).
    pub fn decode(path: &Path) -> Self {
        let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut decoder = png::Decoder::new(BufReader::new(file));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder
            .read_info()
            .unwrap_or_else(|e| panic!("{}: not a PNG: {e}", path.display()));
        let mut buf = vec![0; reader.output_buffer_size().expect("a PNG of sane size")];
        let info = reader
            .next_frame(&mut buf)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let channels = info.color_type.samples();
        let pixels = buf[..info.buffer_size()]
            .chunks(info.line_size)
            .flat_map(|line| {
                line[..info.width as usize * channels]
                    .chunks(channels)
                    .map(|p| match p.len() {
                        1 | 2 => [p[0]; 3],
                        _ => [p[0], p[1], p[2]],
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Self {
            width: info.width,
            height: info.height,
            pixels,
        }
    }

    /// The pixel at (`x`, `y`).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        self.pixels[(y * self.width + x) as usize]
    }

    /// The share of pixels that differ from the top-left one (the page's background).
    pub fn non_background_share(&self) -> f64 {
        let background = self.pixel(0, 0);
        let other = self.pixels.iter().filter(|p| **p != background).count();
        other as f64 / self.pixels.len() as f64
    }

    /// Where pixels within `tolerance` (per channel) of `colour` lie in `rows`: how many,
    /// and their bounding box (x range, y range).
    pub fn find_colour(
        &self,
        colour: [u8; 3],
        tolerance: u8,
        rows: Range<u32>,
    ) -> Option<ColourArea> {
        let mut area: Option<ColourArea> = None;
        for y in rows.start..rows.end.min(self.height) {
            for x in 0..self.width {
                let p = self.pixel(x, y);
                let near = p
                    .iter()
                    .zip(colour)
                    .all(|(a, b)| a.abs_diff(b) <= tolerance);
                if !near {
                    continue;
                }
                let a = area.get_or_insert(ColourArea {
                    pixels: 0,
                    x: x..x + 1,
                    y: y..y + 1,
                });
                a.pixels += 1;
                a.x = a.x.start.min(x)..a.x.end.max(x + 1);
                a.y = a.y.start.min(y)..a.y.end.max(y + 1);
            }
        }
        area
    }
}

/// Pixels of one colour in a screenshot.
#[derive(Debug, Clone)]
pub struct ColourArea {
    /// How many.
    pub pixels: usize,
    /// Columns from the leftmost to the rightmost.
    pub x: Range<u32>,
    /// Rows from the topmost to the lowest.
    pub y: Range<u32>,
}

/// `#rrggbb` as RGB.
pub fn hex_colour(hex: &str) -> [u8; 3] {
    let digits = hex.strip_prefix('#').unwrap_or(hex);
    assert_eq!(digits.len(), 6, "{hex} is not #rrggbb");
    let channel = |i: usize| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digits");
    [channel(0), channel(2), channel(4)]
}

/// The text a reader sees in `dom` (as `dump_dom` returns it): style sheets and tags
/// dropped, the usual entities decoded, whitespace collapsed. Enough to look for numbers,
/// not a general HTML parser.
pub fn visible_text(dom: &str) -> String {
    let mut text = String::new();
    let mut rest = dom;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        text.push(' ');
        rest = &rest[open..];
        if rest.starts_with("<style") {
            rest = rest.find("</style>").map_or("", |end| &rest[end..]);
        }
        rest = rest.find('>').map_or("", |close| &rest[close + 1..]);
    }
    text.push_str(rest);
    let text = text
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

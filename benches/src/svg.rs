//! A dependency-free SVG line plot with a logarithmic x axis, for `watchbench --svg`.

use std::fmt::Write;

/// One line: its legend label, its colour and its points `(x, y)`, x > 0.
pub type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// The plot of `series`: x on a log₁₀ axis (decades), y linear from 0.
pub fn log_x_plot(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let points = || series.iter().flat_map(|(_, _, p)| p.iter().copied());
    let (mut x_lo, mut x_hi) = points()
        .filter(|(x, _)| *x > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), (x, _)| {
            (lo.min(x.log10()), hi.max(x.log10()))
        });
    if x_lo > x_hi {
        (x_lo, x_hi) = (0.0, 1.0);
    }
    let (x_lo, x_hi) = (x_lo.floor(), x_hi.ceil().max(x_lo.floor() + 1.0));
    let y_hi = nice_ceiling(points().map(|(_, y)| y).fold(0.0, f64::max));
    let px = |x: f64| LEFT + (x.log10() - x_lo) / (x_hi - x_lo) * (WIDTH - LEFT - RIGHT);
    let py = |y: f64| HEIGHT - BOTTOM - y / y_hi * (HEIGHT - TOP - BOTTOM);

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for decade in (x_lo as i32)..=(x_hi as i32) {
        let x = px(10f64.powi(decade));
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="gainsboro"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 18.0,
            human(10f64.powi(decade))
        );
    }
    for step in 0..=5 {
        let y = y_hi * f64::from(step) / 5.0;
        let _ = writeln!(
            out,
            r#"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="gainsboro"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{4}</text>"#,
            py(y),
            WIDTH - RIGHT,
            LEFT - 8.0,
            py(y) + 4.0,
            human(y)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 16.0,
        escape(x_label)
    );
    let _ = writeln!(
        out,
        r#"<text x="18" y="{0:.1}" text-anchor="middle" transform="rotate(-90 18 {0:.1})">{1}</text>"#,
        (TOP + HEIGHT - BOTTOM) / 2.0,
        escape(y_label)
    );
    for (i, (label, colour, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .filter(|(x, _)| *x > 0.0)
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for p in &path {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
        }
        let ly = TOP + 16.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="{colour}" stroke-width="2"/><text x="{3:.1}" y="{4:.1}">{5}</text>"#,
            LEFT + 12.0,
            ly,
            LEFT + 32.0,
            LEFT + 38.0,
            ly + 4.0,
            escape(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let scale = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * scale)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * scale)
}

/// 1500 → "1.5K", 2000000 → "2M".
fn human(v: f64) -> String {
    let (value, unit) = match v {
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "K"),
        v => (v, ""),
    };
    let text = format!("{value:.1}");
    format!("{}{unit}", text.trim_end_matches('0').trim_end_matches('.'))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_places_points_on_a_log_axis() {
        let svg = log_x_plot(
            "t <1>",
            "x",
            "y",
            &[("a", "#000", vec![(1e3, 10.0), (1e6, 20.0)])],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains(">1K<") && svg.contains(">1M<"));
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(human(1500.0), "1.5K");
        assert_eq!(human(2e6), "2M");
        assert_eq!(nice_ceiling(430_000.0), 500_000.0);
    }
}

//! Bar charts as geometry computed on the server; the templates draw them as inline SVG (no
//! script, colours from the stylesheet's classes). Pure.

/// One coloured piece of a bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Top edge.
    pub y: f64,
    /// Height.
    pub height: f64,
    /// CSS class (`seg-ok`, `seg-failed`...).
    pub class: &'static str,
    /// Tooltip.
    pub title: String,
}

/// One bar (a day, a run).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Left edge.
    pub x: f64,
    /// Width.
    pub width: f64,
    /// Label under the bar (may be empty).
    pub label: String,
    /// Where the label's centre is.
    pub label_x: f64,
    /// Stacked from the bottom.
    pub segments: Vec<Segment>,
    /// Link target, if the bar opens something.
    pub href: Option<String>,
}

/// A horizontal grid line with its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Its height.
    pub y: f64,
    /// Its value as text.
    pub label: String,
}

/// A bar chart ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// Whole width (viewBox).
    pub width: f64,
    /// Whole height (viewBox).
    pub height: f64,
    /// Left edge of the plot (room for tick labels).
    pub left: f64,
    /// Bottom of the plot (baseline).
    pub baseline: f64,
    /// Bars.
    pub bars: Vec<Bar>,
    /// Grid lines.
    pub ticks: Vec<Tick>,
    /// Accessible description.
    pub description: String,
    /// Whether there is anything to draw.
    pub empty: bool,
}

/// One input bar: label, link, and its stacked values (value, class, tooltip).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Label under the bar.
    pub label: String,
    /// Link.
    pub href: Option<String>,
    /// Pieces, bottom first.
    pub values: Vec<(f64, &'static str, String)>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 44.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// A stacked bar chart of `columns`; `format` prints tick values.
pub fn bar_chart(columns: &[Column], description: &str, format: fn(f64) -> String) -> BarChart {
    let baseline = HEIGHT - BOTTOM;
    let plot_height = baseline - TOP;
    let total = |column: &Column| {
        column
            .values
            .iter()
            .map(|(value, _, _)| *value)
            .sum::<f64>()
    };
    let max = columns.iter().map(total).fold(0.0_f64, f64::max);
    let top = nice_step(max / 4.0) * 4.0;
    let slot = (WIDTH - LEFT) / columns.len().max(1) as f64;
    let bar_width = (slot * 0.7).min(48.0);
    let bars = columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let x = LEFT + slot * index as f64 + (slot - bar_width) / 2.0;
            let mut y = baseline;
            let segments = column
                .values
                .iter()
                .filter(|(value, _, _)| *value > 0.0)
                .map(|(value, class, title)| {
                    let height = if top > 0.0 {
                        value / top * plot_height
                    } else {
                        0.0
                    };
                    y -= height;
                    Segment {
                        y: round(y),
                        height: round(height.max(1.0)),
                        class,
                        title: title.clone(),
                    }
                })
                .collect();
            Bar {
                x: round(x),
                width: round(bar_width),
                label: column.label.clone(),
                label_x: round(x + bar_width / 2.0),
                segments,
                href: column.href.clone(),
            }
        })
        .collect();
    let ticks = (0..=4)
        .map(|step| {
            let value = top * f64::from(step) / 4.0;
            Tick {
                y: round(baseline - plot_height * f64::from(step) / 4.0),
                label: format(value),
            }
        })
        .collect();
    BarChart {
        width: WIDTH,
        height: HEIGHT,
        left: LEFT,
        baseline,
        bars,
        ticks,
        description: description.to_owned(),
        empty: max <= 0.0,
    }
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// The grid step: 1, 2, 2.5 or 5 × a power of ten, at or above `value` (at least 1, so
/// counts get whole-number ticks).
fn nice_step(value: f64) -> f64 {
    if value <= 1.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * power >= value && (step != 2.5 || power >= 10.0) {
            return step * power;
        }
    }
    10.0 * power
}

/// Tick labels for counts.
pub fn format_count(value: f64) -> String {
    if value.fract().abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// Tick labels for milliseconds.
pub fn format_ms(value: f64) -> String {
    if value >= 60_000.0 {
        format!("{:.1}m", value / 60_000.0)
    } else if value >= 1000.0 {
        format!("{:.1}s", value / 1000.0)
    } else {
        format!("{value:.0}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_and_scale_to_a_round_maximum() {
        let columns = vec![
            Column {
                label: "a".into(),
                href: None,
                values: vec![
                    (3.0, "seg-ok", "3 ok".into()),
                    (1.0, "seg-failed", "1".into()),
                ],
            },
            Column {
                label: "b".into(),
                href: None,
                values: vec![],
            },
        ];
        let chart = bar_chart(&columns, "runs", format_count);
        assert!(!chart.empty);
        assert_eq!(chart.ticks.last().unwrap().label, "4");
        assert_eq!(chart.ticks[1].label, "1");
        let first = &chart.bars[0];
        assert_eq!(first.segments.len(), 2);
        assert!(first.segments[1].y < first.segments[0].y, "stacked upwards");
        assert!(chart.bars[1].segments.is_empty());
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(2.2), 5.0);
        assert_eq!(nice_step(120.0), 200.0);
        assert_eq!(nice_step(24.0), 25.0);
        assert_eq!(format_ms(1500.0), "1.5s");
    }
}

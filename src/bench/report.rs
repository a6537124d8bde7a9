//! Results of a bench run: the summary (throughput and latency percentiles from an
//! hdrhistogram), the table printed at the end, the `--json` file, and the SVG latency-by-
//! percentile plot (plotters) that can overlay several runs. Runs on: the bench's main thread.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::{BenchError, CommonArgs};

/// Latencies are recorded in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

/// What `--json` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub label: String,
    pub mode: String,
    pub records: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub latency_ms: Percentiles,
    pub errors: u64,
    /// (percentile, latency ms) points of the whole distribution, for plots.
    pub curve: Vec<(f64, f64)>,
}

/// Percentiles the curve samples: dense where tails live.
const CURVE_PERCENTILES: &[f64] = &[
    0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 92.5, 95.0, 96.0, 97.0,
    98.0, 99.0, 99.25, 99.5, 99.75, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
];

impl Summary {
    pub fn new(
        label: String,
        mode: &str,
        records: u64,
        bytes: u64,
        elapsed: Duration,
        latency: &Histogram<u64>,
        errors: u64,
    ) -> Summary {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        Summary {
            label,
            mode: mode.to_string(),
            records,
            bytes,
            elapsed_s: secs,
            records_per_sec: records as f64 / secs,
            bytes_per_sec: bytes as f64 / secs,
            latency_ms: Percentiles {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                p999: ms(0.999),
                p9999: ms(0.9999),
                max: latency.max() as f64 / 1000.0,
            },
            errors,
            curve: CURVE_PERCENTILES
                .iter()
                .map(|p| (*p, ms(p / 100.0)))
                .collect(),
        }
    }

    /// The human table printed at the end of a run.
    pub fn table(&self) -> String {
        let l = &self.latency_ms;
        format!(
            "{label} ({mode}): {records} records in {secs:.2} s, {errors} errors\n\
             {:>14} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n\
             {rps:>14.0} {mbps:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}\n",
            "records/s",
            "MB/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "p99.99 ms",
            "max ms",
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.p9999,
            l.max,
            label = self.label,
            mode = self.mode,
            records = self.records,
            secs = self.elapsed_s,
            errors = self.errors,
            rps = self.records_per_sec,
            mbps = self.bytes_per_sec / 1e6,
        )
    }
}

/// Prints the table and writes what the flags ask for.
pub fn finish(summary: &Summary, common: &CommonArgs) -> Result<(), BenchError> {
    print!("{}", summary.table());
    if let Some(path) = &common.json {
        let text = serde_json::to_string_pretty(summary).expect("a summary serializes");
        std::fs::write(path, text + "\n")?;
    }
    if let Some(path) = &common.plot {
        plot(path, std::slice::from_ref(summary))?;
    }
    if summary.errors > 0 {
        return Err(BenchError::Usage(format!(
            "{} records failed (see the table above)",
            summary.errors
        )));
    }
    Ok(())
}

/// `tusk bench plot OUT FILES...`.
pub fn plot_files(out: &Path, files: &[PathBuf]) -> Result<(), BenchError> {
    let mut runs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| BenchError::Usage(format!("{}: {e}", f.display())))?;
        let summary: Summary = serde_json::from_str(&text)
            .map_err(|e| BenchError::Usage(format!("{}: not a bench result: {e}", f.display())))?;
        runs.push(summary);
    }
    plot(out, &runs)
}

/// x of a percentile on the "nines" axis: 90 → 1, 99 → 2, 99.9 → 3.
fn nines(percentile: f64) -> f64 {
    (-(1.0 - percentile / 100.0).max(1e-6).log10()).min(6.0)
}

/// Draws latency by percentile for `runs` into an SVG.
pub fn plot(path: &Path, runs: &[Summary]) -> Result<(), BenchError> {
    let y_max = runs
        .iter()
        .flat_map(|r| r.curve.iter().map(|(_, ms)| *ms))
        .fold(0.001f64, f64::max);
    let x_max = runs
        .iter()
        .flat_map(|r| r.curve.iter().map(|(p, _)| nines(*p)))
        .fold(1.0f64, f64::max);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency by percentile", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, (0.001..y_max * 1.2).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_labels(7)
            .x_label_formatter(&|x| format!("{}", 100.0 - 100.0 * 10f64.powf(-x)))
            .draw()?;
        for (i, run) in runs.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points: Vec<(f64, f64)> = run
                .curve
                .iter()
                .map(|(p, ms)| (nines(*p), ms.max(0.001)))
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(format!("{} ({})", run.label, run.mode))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| BenchError::Usage(format!("plot {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles_and_json_round_trip() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap();
        }
        let s = Summary::new(
            "t".into(),
            "produce",
            1000,
            1_024_000,
            Duration::from_secs(2),
            &h,
            0,
        );
        assert_eq!(s.records_per_sec, 500.0);
        assert!((s.latency_ms.p50 - 5.0).abs() < 0.01, "{:?}", s.latency_ms);
        assert!((s.latency_ms.p99 - 9.9).abs() < 0.01, "{:?}", s.latency_ms);
        assert!((s.latency_ms.max - 10.0).abs() < 0.01);
        let json = serde_json::to_string(&s).unwrap();
        for key in [
            "records_per_sec",
            "bytes_per_sec",
            "p999",
            "p9999",
            "errors",
        ] {
            assert!(json.contains(key), "{key} in {json}");
        }
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back.latency_ms, s.latency_ms);
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("p.svg");
        plot(&svg, &[s.clone(), back]).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("<svg") && text.contains("Latency by percentile"));
    }

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(nines(100.0), 6.0);
    }
}

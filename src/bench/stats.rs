//! Latency percentiles from collected samples, number formatting, and the per-run report
//! with medians across runs.

use std::time::Duration;

/// Latency figures computed from samples (nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: u64,
}

/// Nearest-rank percentile of sorted samples (`q` in 0..=1); 0 for no samples.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Latency {
    /// Sorts the samples and computes the figures.
    pub fn of(mut samples: Vec<u64>) -> Latency {
        samples.sort_unstable();
        let count = samples.len();
        let sum: u128 = samples.iter().map(|&sample| sample as u128).sum();
        Latency {
            count,
            p50: percentile(&samples, 0.50),
            p90: percentile(&samples, 0.90),
            p99: percentile(&samples, 0.99),
            max: samples.last().copied().unwrap_or(0),
            mean: if count == 0 { 0 } else { (sum / count as u128) as u64 },
        }
    }

    /// "p50 1.20 ms p90 … p99 … max … (n samples)".
    pub fn describe(&self) -> String {
        format!(
            "p50 {} p90 {} p99 {} max {} mean {} ({} samples)",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            ms(self.mean),
            thousands(self.count as f64)
        )
    }
}

/// Nanoseconds → milliseconds, as a float.
pub fn ns_to_ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

/// Nanoseconds shown in milliseconds with a precision that suits the size.
pub fn ms(nanos: u64) -> String {
    fmt_ms(ns_to_ms(nanos))
}

/// Milliseconds with a precision that suits the size.
pub fn fmt_ms(millis: f64) -> String {
    if millis < 10.0 {
        format!("{millis:.2} ms")
    } else if millis < 100.0 {
        format!("{millis:.1} ms")
    } else {
        format!("{millis:.0} ms")
    }
}

/// A rounded number with thousands separators: 23456.7 → "23,457".
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return format!("{value}");
    }
    let rounded = value.round();
    let digits = format!("{}", rounded.abs() as u128);
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if rounded < 0.0 {
        out.push('-');
    }
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Events (or anything) per second over `elapsed`.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        0.0
    } else {
        count as f64 / seconds
    }
}

/// Named figures of one run, in the order they were set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(pub Vec<(&'static str, f64)>);

impl Metrics {
    /// Sets (or replaces) a figure.
    pub fn set(&mut self, name: &'static str, value: f64) {
        match self.0.iter_mut().find(|(known, _)| *known == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// A figure, 0 if it was never set.
    pub fn get(&self, name: &str) -> f64 {
        self.0.iter().find(|(known, _)| *known == name).map_or(0.0, |(_, value)| *value)
    }

    /// Records a latency under `prefix_p50_ms`, `prefix_p99_ms`, `prefix_max_ms`.
    pub fn set_latency(&mut self, names: [&'static str; 3], latency: &Latency) {
        self.set(names[0], ns_to_ms(latency.p50));
        self.set(names[1], ns_to_ms(latency.p99));
        self.set(names[2], ns_to_ms(latency.max));
    }
}

/// The result of one run of a scenario against one relay.
#[derive(Debug, Clone)]
pub struct Report {
    /// The figures.
    pub metrics: Metrics,
    /// Lines printed under the summary.
    pub details: Vec<String>,
    /// Builds the one-line summary from figures (also used for the medians).
    pub summarize: fn(&Metrics) -> String,
}

impl Report {
    /// The one-line summary.
    pub fn summary(&self) -> String {
        (self.summarize)(&self.metrics)
    }
}

/// The median of each figure over runs (the figures of the first run name them).
pub fn median_metrics(runs: &[&Metrics]) -> Metrics {
    let mut medians = Metrics::default();
    let Some(first) = runs.first() else {
        return medians;
    };
    for (name, _) in &first.0 {
        let mut values: Vec<f64> = runs.iter().map(|metrics| metrics.get(name)).collect();
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median = if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 };
        medians.set(name, median);
    }
    medians
}

/// "name: median (min … max)" lines for every figure.
pub fn spread_lines(runs: &[&Metrics]) -> Vec<String> {
    let medians = median_metrics(runs);
    medians
        .0
        .iter()
        .map(|(name, median)| {
            let values: Vec<f64> = runs.iter().map(|metrics| metrics.get(name)).collect();
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{name}: {} (min {} max {})", figure(*median), figure(min), figure(max))
        })
        .collect()
}

/// A figure with a precision that suits its size.
pub fn figure(value: f64) -> String {
    if value.abs() >= 1000.0 || (value.fract() == 0.0 && value.abs() < 1e15) {
        thousands(value)
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.5), 50);
        assert_eq!(percentile(&samples, 0.99), 99);
        assert_eq!(percentile(&samples, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
        let latency = Latency::of(vec![5, 1, 3]);
        assert_eq!((latency.p50, latency.max, latency.mean), (3, 5, 3));
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(23456.4), "23,456");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
        assert_eq!(thousands(-1234.0), "-1,234");
    }

    #[test]
    fn medians_per_figure() {
        let runs: Vec<Metrics> =
            [3.0, 1.0, 2.0].iter().map(|value| Metrics(vec![("a", *value), ("b", value * 10.0)])).collect();
        let refs: Vec<&Metrics> = runs.iter().collect();
        let medians = median_metrics(&refs);
        assert_eq!(medians.get("a"), 2.0);
        assert_eq!(medians.get("b"), 20.0);
    }
}

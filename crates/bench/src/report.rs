//! Figures and how they are printed: percentiles of latency samples, and result lines that
//! compare each figure with its target.

use std::time::Duration;

/// The `p`-th percentile (0–100) of the samples, which are sorted in place.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

pub fn heading(title: &str) {
    println!("\n== {title}");
}

/// One figure, with its target when it has one: `>= 20000/s` or `<= 10ms`.
pub fn figure(name: &str, value: String, target: Option<(bool, String)>) {
    match target {
        Some((met, target)) => println!(
            "  {name:<58} {value:>16}   target {target:<12} {}",
            if met { "met" } else { "MISSED" }
        ),
        None => println!("  {name:<58} {value:>16}"),
    }
}

pub fn rate(per_second: f64) -> String {
    format!("{per_second:.0}/s")
}

pub fn millis(duration: Duration) -> String {
    format!("{:.2}ms", duration.as_secs_f64() * 1000.0)
}

pub fn at_least(value: f64, target: f64) -> Option<(bool, String)> {
    Some((value >= target, format!(">= {target:.0}")))
}

pub fn at_most(value: Duration, target: Duration) -> Option<(bool, String)> {
    Some((value <= target, format!("<= {}", millis(target))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut samples, 50.0), Duration::from_millis(51));
        assert_eq!(percentile(&mut samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&mut [], 99.0), Duration::ZERO);
    }
}

//! Percentiles of samples, as JSON.

use std::time::Duration;

use serde_json::{Value, json};

use crate::procfs::round;

/// Nearest-rank percentile of sorted samples (`q` in 0..=1).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// p50 / p90 / p99 / max / mean in milliseconds.
pub(crate) fn summary_ms(samples: &[Duration]) -> Value {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return json!({ "count": 0 });
    }
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    json!({
        "count": ms.len(),
        "p50": round(percentile(&ms, 0.50), 3),
        "p90": round(percentile(&ms, 0.90), 3),
        "p99": round(percentile(&ms, 0.99), 3),
        "max": round(ms[ms.len() - 1], 3),
        "mean": round(mean, 3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }
}

//! Parsing durations given in seconds with decimals (`0.5`, `20`).

use std::time::Duration;

/// Parses SECS (decimals allowed, not negative).
pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (e.g. 20 or 0.5)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?}: seconds must be zero or more"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// `0` disables (a keepalive interval).
pub(crate) fn optional(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_and_zero() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(optional(parse_secs("0").unwrap()), None);
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("abc").is_err());
    }
}

//! Parsing durations given in seconds with decimals (`0.5`, `20`).

use std::time::Duration;

/// The longest duration accepted: about 31 years, far beyond any timeout,
/// and small enough that adding it to the clock cannot overflow.
const MAX_SECS: f64 = 1e9;

/// Parses SECS (decimals allowed, not negative, at most [`MAX_SECS`]).
pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (e.g. 20 or 0.5)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?}: seconds must be zero or more"));
    }
    if v > MAX_SECS {
        return Err(format!("{s:?}: at most {MAX_SECS} seconds"));
    }
    Duration::try_from_secs_f64(v).map_err(|e| format!("{s:?}: {e}"))
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

    /// `Duration::from_secs_f64` panics past u64 seconds; a flag must not.
    #[test]
    fn huge_values_are_an_error_not_a_panic() {
        for s in ["1e30", "1e10", "inf", "NaN"] {
            assert!(parse_secs(s).is_err(), "{s}");
        }
        assert_eq!(parse_secs("1e9"), Ok(Duration::from_secs(1_000_000_000)));
    }
}

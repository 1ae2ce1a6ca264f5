//! Value types and parsers shared by the command-line flags of every role.

use std::fmt;
use std::time::Duration;

/// A deployment color of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub const ALL: [Color; 2] = [Color::Blue, Color::Green];

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }

    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Color {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blue" => Ok(Color::Blue),
            "green" => Ok(Color::Green),
            other => Err(format!("unknown color {other:?} (expected blue or green)")),
        }
    }
}

/// Parses `250ms`, `10s`, `2m`, `1h`, `1.5s`; a bare number is seconds.
/// Hand-written rather than `humantime`'s: that one takes neither a bare
/// number nor a decimal, and the flags and their docs use both.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (examples: 500ms, 10s, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("invalid duration unit in {text:?} (use ms, s, m or h)")),
    };
    // Longer would overflow a deadline (now + duration) somewhere.
    if seconds > MAX_DURATION_SECONDS {
        return Err(format!("duration {text:?} is out of range (at most 10 years)"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("duration {text:?} is out of range"))
}

/// The longest duration a flag or an admin API value takes: 10 years.
const MAX_DURATION_SECONDS: f64 = 10.0 * 365.0 * 86_400.0;

/// Like [`parse_duration`], for a timeout or period that must not be zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let value = parse_duration(text)?;
    if value.is_zero() {
        return Err(format!("{text:?} must be more than zero"));
    }
    Ok(value)
}

/// Parses a ratio in `0..=1`.
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("invalid number {text:?}"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is outside 0..1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_in_every_unit_and_rejects_garbage() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_positive_duration("0ms").is_err());
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_duration("87600h"), Ok(Duration::from_secs(87_600 * 3600)));
        // A deadline this far off would overflow the clock: refused, not a panic later.
        let error = parse_duration("10000000000000000000").expect_err("out of range");
        assert!(error.contains("at most 10 years"), "{error}");
    }

    #[test]
    fn ratios_must_lie_between_zero_and_one() {
        assert_eq!(parse_ratio("0.3"), Ok(0.3));
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("-0.1").is_err());
        assert!(parse_ratio("x").is_err());
    }
}

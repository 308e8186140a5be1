//! Value parsers for the commands' flags, shared by `cli` and `jobs::commands`: each refuses a
//! bad value with what would be right, in clap's one usage line.
//!
//! Flags that take numbers also set `allow_negative_numbers`, so that `--count -5` reaches the
//! parser and is refused as a number rather than taken for an unknown flag `-5`.

use std::num::NonZeroU64;
use std::time::Duration;

/// A whole number of at least 1 (`--count`, contact ids).
pub fn positive_number(text: &str) -> Result<NonZeroU64, String> {
    text.trim()
        .parse::<NonZeroU64>()
        .map_err(|_| "must be a positive number (1, 2, 3, ...)".to_owned())
}

/// A positive database id (`restore ID`).
pub fn positive_id(text: &str) -> Result<i64, String> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "must be a positive number (a contact's id)".to_owned())
}

/// A whole number from 1 to `max` (`jobs --limit`).
pub fn number_up_to(max: u32) -> impl Fn(&str) -> Result<u32, String> + Clone + Send + Sync {
    move |text| {
        text.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("must be a number from 1 to {max}"))
    }
}

/// A duration longer than zero, written as seconds (`90`) or with units (`90s`, `5m`, `1h30m`).
pub fn timeout(text: &str) -> Result<Duration, String> {
    match crate::config::parse_duration(text)? {
        Duration::ZERO => Err("must be longer than 0 seconds".to_owned()),
        duration => Ok(duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_numbers_refuse_zero_negatives_and_words_alike() {
        assert_eq!(positive_number("5").map(NonZeroU64::get), Ok(5));
        for bad in ["0", "-5", "five", "", "1.5"] {
            assert_eq!(
                positive_number(bad),
                Err("must be a positive number (1, 2, 3, ...)".to_owned()),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_bounded_number_names_its_bounds() {
        let limit = number_up_to(500);
        assert_eq!(limit("500"), Ok(500));
        for bad in ["0", "-1", "501", "many"] {
            assert_eq!(
                limit(bad),
                Err("must be a number from 1 to 500".to_owned()),
                "{bad}"
            );
        }
    }

    #[test]
    fn timeouts_are_durations_longer_than_zero() {
        assert_eq!(timeout("90"), Ok(Duration::from_secs(90)));
        assert_eq!(timeout("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(timeout("0s").is_err());
        assert!(timeout("soon").unwrap_err().contains("\"5m\""));
    }
}

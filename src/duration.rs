//! Parsing and printing of human durations such as `30m`, `1h30m`, `90s` or `45`.

use std::time::Duration;

/// Parse `[N d][N h][N m][N s]` in that order, or a bare number of seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut last_rank = usize::MAX;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let (rank, unit) = match c {
            'd' => (0, 86_400),
            'h' => (1, 3_600),
            'm' => (2, 60),
            's' => (3, 1),
            _ => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {c:?} (use d, h, m, s)"
                ))
            }
        };
        if digits.is_empty() || (last_rank != usize::MAX && rank <= last_rank) {
            return Err(format!(
                "invalid duration {text:?}: expected e.g. 30m, 1h30m, 90s"
            ));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
        digits.clear();
        last_rank = rank;
    }
    if !digits.is_empty() {
        return Err(format!(
            "invalid duration {text:?}: a number needs a unit after another unit"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Print a duration the way [`parse`] reads it, e.g. `1h30m`.
pub fn format(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            out.push_str(&format!("{}{}", secs / unit, name));
            secs %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_bare_seconds() {
        assert_eq!(parse("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse(" 5m "), Ok(Duration::from_secs(300)));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "m",
            "5x",
            "30m1h",
            "5m5m",
            "1h30",
            "-5s",
            "99999999999999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn format_round_trips() {
        for secs in [0, 1, 59, 60, 3599, 3600, 5400, 86_400, 90_061] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&format(d)), Ok(d), "{secs}");
        }
    }
}

//! Wall-clock time as the appliance records and prints it: milliseconds since the Unix
//! epoch (the database's unit), RFC 3339 in UTC, and the points in time a user may type.
//! A leaf: it knows nothing of the modules that use it, and nothing of time zones (the
//! panel's local clock is the panel's).

/// Milliseconds since the Unix epoch, the unit of every time the appliance records.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// UTC time of `ms` since the epoch as RFC 3339 (seconds).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Milliseconds since the epoch of `YYYY-MM-DD` (UTC midnight) or
/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |t: &str| -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok())?
    };
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days since 1970-01-01 from a civil date (inverse of `rfc3339`).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut secs = days * 86_400;
    if let Some(t) = time {
        let (clock, offset) = if let Some(c) = t.strip_suffix(['Z', 'z']) {
            (c, 0)
        } else if let Some(i) = t.rfind(['+', '-']) {
            let (c, o) = t.split_at(i);
            let (oh, om) = o[1..].split_once(':')?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            (c, sign * (num(oh)? * 3600 + num(om)? * 60))
        } else {
            return None;
        };
        let clock = clock.split('.').next()?;
        let mut c = clock.splitn(3, ':');
        let (h, mi, se) = (num(c.next()?)?, num(c.next()?)?, num(c.next()?)?);
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + se - offset;
    }
    Some(secs * 1000)
}

/// A point in time given as RFC 3339, a date (UTC midnight), or an age before `now_ms`
/// (`90m`, `12h`, `7d`; units s, m, h, d), as `results --since` takes it.
pub fn parse_since(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Some((n, unit)) = s
        .find(|c: char| !c.is_ascii_digit())
        .filter(|i| *i > 0 && s.len() == i + 1)
        .map(|i| (&s[..i], &s[i..]))
    {
        let n: i64 = n.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("unknown unit in {s:?} (s, m, h, d)")),
        };
        return Ok(now_ms - n * ms);
    }
    parse_rfc3339(s).ok_or_else(|| format!("{s:?}: not RFC 3339, a date or an age like 12h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_888_861_000), "2026-11-28T18:01:01Z");
    }

    #[test]
    fn rfc3339_parses_what_it_writes() {
        for ms in [0, 951_782_400_000, 1_795_888_861_000, 4_102_444_800_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(parse_rfc3339("2026-11-28"), Some(1_795_824_000_000));
        assert_eq!(
            parse_rfc3339("2026-11-28T19:01:01+01:00"),
            Some(1_795_888_861_000)
        );
        assert_eq!(parse_rfc3339("2026-13-01"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn since_takes_ages_dates_and_rfc3339() {
        let now = 1_795_888_861_000;
        assert_eq!(parse_since("90m", now), Ok(now - 90 * 60_000));
        assert_eq!(parse_since("12h", now), Ok(now - 12 * 3_600_000));
        assert_eq!(parse_since("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_since("30s", now), Ok(now - 30_000));
        assert_eq!(parse_since("2026-11-28", now), Ok(1_795_824_000_000));
        assert_eq!(parse_since(" 2026-11-28T18:01:01Z ", now), Ok(now));
        assert!(parse_since("3w", now).unwrap_err().contains("unknown unit"));
        assert!(
            parse_since("yesterday", now)
                .unwrap_err()
                .contains("not RFC 3339")
        );
        assert!(parse_since("", now).is_err());
    }
}

//! How figures read on the pages: latencies, perplexities, parameter counts, sizes, times.

/// Milliseconds with precision that suits the magnitude; `—` when absent.
pub fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => {
            if v >= 100.0 {
                format!("{v:.0} ms")
            } else if v >= 1.0 {
                format!("{v:.1} ms")
            } else {
                format!("{v:.3} ms")
            }
        }
        _ => "—".to_owned(),
    }
}

/// A perplexity to three decimals; `—` when absent.
pub fn ppl(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "—".to_owned(),
    }
}

/// A count with a k/M/B suffix: `1.23M`.
pub fn count(n: i64) -> String {
    let v = n as f64;
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}B", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        n.to_string()
    }
}

/// A byte size in binary units: `1.5 MiB`.
pub fn bytes(n: i64) -> String {
    let v = n as f64;
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut i = 0;
    let mut x = v;
    while x.abs() >= 1024.0 && i + 1 < units.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{x:.1} {}", units[i]) }
}

/// A Unix time in milliseconds as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A duration in milliseconds as `3h 04m`, `4m 05s` or `12s`.
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        // 2024-02-29 12:34:56 UTC, a leap day.
        assert_eq!(utc(1_709_210_096_000), "2024-02-29 12:34:56");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn figures_read_at_their_magnitude() {
        assert_eq!(ms(Some(123.4)), "123 ms");
        assert_eq!(ms(Some(12.34)), "12.3 ms");
        assert_eq!(ms(Some(0.1234)), "0.123 ms");
        assert_eq!(ms(None), "—");
        assert_eq!(count(1_234_567), "1.23M");
        assert_eq!(count(999), "999");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(duration(3_845_000), "1h 04m");
        assert_eq!(duration(65_000), "1m 05s");
    }
}

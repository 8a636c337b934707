//! Byte sizes on the command line: `4096`, `16K`, `64M`, `1G`, `2TiB` (binary units).

/// Parses a size: a whole number of bytes with an optional binary unit `K`, `M`, `G` or `T`
/// (powers of 1024), optionally followed by `iB`, case-insensitive. `B` alone means bytes.
///
/// Decimal units (`MB`, `GB`, ...) are refused rather than guessed at, as are fractions,
/// signs and values that overflow 64 bits.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty size (expected e.g. 64M, 1G, 16K or 4096)".into());
    }
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    if num.is_empty() {
        return Err("not a number of bytes (expected e.g. 64M, 1G, 16K or 4096)".into());
    }
    let unit = unit.trim_start();
    if unit.starts_with(['.', ',']) {
        return Err("fractional sizes are not supported; use a smaller unit".into());
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "kb" | "mb" | "gb" | "tb" => {
            return Err(format!(
                "decimal unit `{unit}` is ambiguous; use binary units K, M, G, T (or KiB, MiB, GiB, TiB)"
            ))
        }
        _ => {
            return Err(format!(
                "unknown unit `{unit}` (expected K, M, G or T, optionally followed by iB)"
            ))
        }
    };
    let too_large = || "too large (the limit is 2^64 - 1 bytes)".to_string();
    let n: u64 = num.parse().map_err(|_| too_large())?;
    n.checked_mul(1u64 << shift).ok_or_else(too_large)
}

/// Formats a byte count for people: `64 MiB` when it is a whole number of a binary unit,
/// otherwise `12345 bytes`.
pub(crate) fn format_size(n: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (name, shift) in UNITS {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{} {name}", n >> shift);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size(" 4096 "), Ok(4096));
    }

    #[test]
    fn binary_units_any_case_with_or_without_ib() {
        for (s, v) in [
            ("16K", 16 << 10),
            ("16k", 16 << 10),
            ("16KiB", 16 << 10),
            ("16kib", 16 << 10),
            ("64M", 64 << 20),
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("1G", 1 << 30),
            ("1gib", 1 << 30),
            ("2T", 2 << 40),
            ("2TiB", 2 << 40),
        ] {
            assert_eq!(parse_size(s), Ok(v), "{s}");
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let err = |s: &str| parse_size(s).unwrap_err();
        assert!(err("").contains("empty"));
        assert!(err("   ").contains("empty"));
        assert!(err("M").contains("not a number"));
        assert!(err("-1").contains("not a number"));
        assert!(err("+1").contains("not a number"));
        assert!(err("1.5G").contains("fractional"));
        assert!(err("64X").contains("unknown unit `X`"));
        assert!(err("64Mi").contains("unknown unit"));
        assert!(err("64MB").contains("decimal unit `MB`"));
        assert!(err("1G1").contains("unknown unit `G1`"));
        assert!(err("99999999999999999999").contains("too large"));
        assert!(err("16777216T").contains("too large"));
    }

    #[test]
    fn largest_values() {
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_size("16777215T"), Ok(16777215 << 40));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(0), "0 bytes");
        assert_eq!(format_size(4095), "4095 bytes");
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size((64 << 20) - 8192), "65528 KiB");
        assert_eq!(format_size(1 << 30), "1 GiB");
        assert_eq!(format_size(3 << 40), "3 TiB");
    }
}

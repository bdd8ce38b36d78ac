//! Resource quantities (`100m`, `1.5Gi`, `2e3`, …) held exactly, so `500m + 500m` is one
//! CPU and `1.5Gi` is 1610612736 bytes with no floating point anywhere.
//!
//! Grammar: `[+-]digits[.digits]` then a suffix: binary `Ki Mi Gi Ti Pi Ei`, decimal
//! `n u m k M G T P E` (or none), or an exponent `e<int>` / `E<int>`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {0:?})")]
    Format(String),
    #[error("quantity {0:?} is too large")]
    Overflow(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    BinarySI,
    DecimalSI,
    DecimalExponent,
}

/// An exact quantity: `digits / 10^frac_digits × 10^exp10 × 1024^pow1024`, signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    digits: u128,
    frac_digits: u32,
    exp10: i32,
    pow1024: u32,
    format: Format,
    text: String,
}

const MAX_DIGITS: usize = 36;
const MAX_EXP10: i32 = 60;

impl Quantity {
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let bad = || QuantityError::Format(s.to_string());
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
            return Err(bad());
        }
        let all_digits = format!("{int_part}{frac_part}");
        let trimmed = all_digits.trim_start_matches('0');
        if trimmed.len() > MAX_DIGITS {
            return Err(QuantityError::Overflow(s.to_string()));
        }
        let digits: u128 = if trimmed.is_empty() {
            0
        } else {
            trimmed.parse().map_err(|_| bad())?
        };
        let (format, exp10, pow1024) = match suffix {
            "" => (Format::DecimalSI, 0, 0),
            "n" => (Format::DecimalSI, -9, 0),
            "u" => (Format::DecimalSI, -6, 0),
            "m" => (Format::DecimalSI, -3, 0),
            "k" => (Format::DecimalSI, 3, 0),
            "M" => (Format::DecimalSI, 6, 0),
            "G" => (Format::DecimalSI, 9, 0),
            "T" => (Format::DecimalSI, 12, 0),
            "P" => (Format::DecimalSI, 15, 0),
            "E" => (Format::DecimalSI, 18, 0),
            "Ki" => (Format::BinarySI, 0, 1),
            "Mi" => (Format::BinarySI, 0, 2),
            "Gi" => (Format::BinarySI, 0, 3),
            "Ti" => (Format::BinarySI, 0, 4),
            "Pi" => (Format::BinarySI, 0, 5),
            "Ei" => (Format::BinarySI, 0, 6),
            exp if exp.starts_with(['e', 'E']) => {
                let n = &exp[1..];
                let unsigned = n.strip_prefix(['+', '-']).unwrap_or(n);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let e: i32 = n
                    .parse()
                    .map_err(|_| QuantityError::Overflow(s.to_string()))?;
                if !(-MAX_EXP10..=MAX_EXP10).contains(&e) {
                    return Err(QuantityError::Overflow(s.to_string()));
                }
                (Format::DecimalExponent, e, 0)
            }
            _ => return Err(bad()),
        };
        Ok(Quantity {
            negative: negative && digits != 0,
            digits,
            frac_digits: frac_part.len() as u32,
            exp10,
            pow1024,
            format,
            text: s.to_string(),
        })
    }

    /// The quantity `milli / 1000`, printed in `format` (what sums of parsed quantities
    /// are turned back into).
    pub fn from_milli(milli: i64, format: Format) -> Quantity {
        Quantity {
            negative: milli < 0,
            digits: u128::from(milli.unsigned_abs()),
            frac_digits: 3,
            exp10: 0,
            pow1024: 0,
            format,
            text: format!("{milli}m"),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The value scaled by `10^scale`, rounded up away from zero (Kubernetes' rounding
    /// for `Value()` and `MilliValue()`).
    fn scaled(&self, scale: i32) -> Result<i64, QuantityError> {
        let over = || QuantityError::Overflow(self.text.clone());
        let mut num: u128 = self.digits;
        for _ in 0..self.pow1024 {
            num = num.checked_mul(1024).ok_or_else(over)?;
        }
        let e = self.exp10 + scale - self.frac_digits as i32;
        let magnitude = if e >= 0 {
            let mul = 10u128.checked_pow(e as u32).ok_or_else(over)?;
            num.checked_mul(mul).ok_or_else(over)?
        } else {
            match 10u128.checked_pow((-e) as u32) {
                Some(div) => num.div_ceil(div),
                // Dividing by more than u128 can hold: any non-zero value rounds up to 1.
                None => u128::from(num != 0),
            }
        };
        let magnitude = i64::try_from(magnitude).map_err(|_| over())?;
        Ok(if self.negative { -magnitude } else { magnitude })
    }

    /// The value as an integer, rounded up (bytes for memory, cores for CPU).
    pub fn value(&self) -> Result<i64, QuantityError> {
        self.scaled(0)
    }

    /// Bytes: the same as `value()`, named for memory and storage.
    pub fn to_bytes(&self) -> Result<i64, QuantityError> {
        self.scaled(0)
    }

    /// Exact integer milli-units (`100m` → 100, `1.5` → 1500), rounded up.
    pub fn to_milli(&self) -> Result<i64, QuantityError> {
        self.scaled(3)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    /// The canonical form: the largest suffix of the quantity's own format that keeps an
    /// integer mantissa (`1536Mi` for `1.5Gi`, `100m` for `0.1`, `2k` for `2e3`), falling
    /// back to the text as given if it cannot be represented in nano units.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(nanos) = self.scaled(9) else {
            return f.write_str(&self.text);
        };
        let sign = if nanos < 0 { "-" } else { "" };
        let n = nanos.unsigned_abs();
        if n == 0 {
            return f.write_str("0");
        }
        if self.format == Format::BinarySI && n % 1_000_000_000 == 0 {
            let v = n / 1_000_000_000;
            if v >= 1024 {
                let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
                let mut k = 0;
                let mut m = v;
                while m % 1024 == 0 && k < 6 {
                    m /= 1024;
                    k += 1;
                }
                return write!(f, "{sign}{m}{}", suffixes[k]);
            }
        }
        // Decimal: largest multiple-of-three exponent with an integer mantissa.
        let mut exp = -9;
        let mut m = n;
        while m % 1000 == 0 && exp < 18 {
            m /= 1000;
            exp += 3;
        }
        let suffix = match (self.format, exp) {
            (Format::DecimalExponent, 0) => String::new(),
            (Format::DecimalExponent, e) => format!("e{e}"),
            (_, -9) => "n".into(),
            (_, -6) => "u".into(),
            (_, -3) => "m".into(),
            (_, 0) => String::new(),
            (_, 3) => "k".into(),
            (_, 6) => "M".into(),
            (_, 9) => "G".into(),
            (_, 12) => "T".into(),
            (_, 15) => "P".into(),
            (_, _) => "E".into(),
        };
        write!(f, "{sign}{m}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn milli_values() {
        for (s, milli) in [
            ("100m", 100),
            ("1", 1000),
            ("0.1", 100),
            (".5", 500),
            ("1.5", 1500),
            ("2e3", 2_000_000),
            ("1E-3", 1),
            ("+1", 1000),
            ("-1", -1000),
            ("1k", 1_000_000),
            ("1n", 1),
            ("1u", 1),
            ("0", 0),
            ("0.0001", 1),
            ("-0.0001", -1),
        ] {
            assert_eq!(q(s).to_milli().unwrap(), milli, "{s}");
        }
    }

    #[test]
    fn byte_values() {
        for (s, bytes) in [
            ("1Ki", 1024),
            ("1.5Gi", 1_610_612_736),
            ("500Mi", 524_288_000),
            ("1M", 1_000_000),
            ("1G", 1_000_000_000),
            ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("1Ei", 1_152_921_504_606_846_976),
            ("1Ti", 1_099_511_627_776),
            ("1Pi", 1_125_899_906_842_624),
            ("100m", 1),
            ("1.1", 2),
            ("2e3", 2000),
            ("129e-2", 2),
        ] {
            assert_eq!(q(s).to_bytes().unwrap(), bytes, "{s}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "", "1.2.3", "Gi", "1 Gi", "1iB", "--1", "1e", "1e+", "1Ki2", "m", ".", "+", "1kk",
            "1.5.Gi", "0x10", "1e1.5", "abc", " 1", "1 ",
        ] {
            assert!(
                matches!(Quantity::parse(s), Err(QuantityError::Format(_))),
                "{s:?} should be a format error"
            );
        }
    }

    #[test]
    fn overflow_is_an_error() {
        assert!(q("9E").to_milli().is_err());
        assert!(q("8Ei").to_bytes().is_err());
        assert!(Quantity::parse("1e1000").is_err());
        assert!(Quantity::parse(&"9".repeat(60)).is_err());
        assert_eq!(q("1e-50").to_milli().unwrap(), 1);
    }

    #[test]
    fn canonical_display() {
        for (s, canon) in [
            ("1.5Gi", "1536Mi"),
            ("0.1", "100m"),
            ("2e3", "2e3"),
            ("1000", "1k"),
            ("1024Ki", "1Mi"),
            ("100Ki", "100Ki"),
            ("0", "0"),
            ("-500m", "-500m"),
            ("1.5", "1500m"),
        ] {
            assert_eq!(q(s).to_string(), canon, "{s}");
        }
    }
}

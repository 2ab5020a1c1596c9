//! Kubernetes resource quantities (`128Mi`, `1.5G`, `500m`, `1e3`).
//!
//! Parsed exactly as Kubernetes does: a signed decimal number, then either a
//! binary suffix (Ki…Ei), a decimal suffix (m, k, M…E) or a decimal exponent.
//! The value is kept as an exact fraction of thousandths so `500m` and `0.5`
//! are equal and nothing is lost to floating point.

use std::fmt;
use std::str::FromStr;

/// A non-negative quantity, stored in thousandths (milli-units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    millis: u128,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a quantity ({why})")]
pub struct QuantityError {
    pub input: String,
    pub why: String,
}

const EXAMPLES: &str = "write e.g. 64Mi, 1Gi, 500m or 2";

impl Quantity {
    /// A whole number of units, e.g. bytes.
    pub fn from_units(units: u64) -> Self {
        Quantity {
            millis: u128::from(units) * 1000,
        }
    }

    /// The value rounded up to a whole number, as Kubernetes rounds bytes.
    pub fn ceil_units(&self) -> u128 {
        self.millis.div_ceil(1000)
    }

    /// The value as bytes (rounded up), or an error if it does not fit in u64.
    pub fn to_bytes(&self) -> Option<u64> {
        u64::try_from(self.ceil_units()).ok()
    }

    /// The value in thousandths, e.g. millicores for CPU.
    pub fn millis(&self) -> u128 {
        self.millis
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(input: &str) -> Result<Self, QuantityError> {
        let err = |why: &str| QuantityError {
            input: input.to_owned(),
            why: format!("{why}; {EXAMPLES}"),
        };
        let s = input.trim();
        let s = s.strip_prefix('+').unwrap_or(s);
        if s.starts_with('-') {
            return Err(err("negative quantities are not allowed here"));
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        if number.is_empty() || number == "." {
            return Err(err("it does not start with a number"));
        }
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if frac.contains('.') {
            return Err(err("it has more than one decimal point"));
        }
        // Scale: value = digits × 2^bin × 10^dec, digits being whole.frac without the point.
        let (bin, dec): (u32, i32) = match suffix {
            "" => (0, 0),
            "Ki" => (10, 0),
            "Mi" => (20, 0),
            "Gi" => (30, 0),
            "Ti" => (40, 0),
            "Pi" => (50, 0),
            "Ei" => (60, 0),
            "m" => (0, -3),
            "k" => (0, 3),
            "M" => (0, 6),
            "G" => (0, 9),
            "T" => (0, 12),
            "P" => (0, 15),
            "E" => (0, 18),
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..]
                    .parse()
                    .map_err(|_| err("its exponent is not a whole number"))?;
                // Far beyond any real quantity; keeps the arithmetic below in range.
                if !(-100..=100).contains(&e) {
                    return Err(err("its exponent is out of range"));
                }
                (0, e)
            }
            byte_suffix @ ("kB" | "KB" | "MB" | "GB" | "TB" | "PB" | "EB" | "KiB" | "MiB"
            | "GiB" | "TiB" | "PiB" | "EiB") => {
                // People write bytes the way disks are sold; say the spelling we take.
                let unit = &byte_suffix[..1].to_ascii_uppercase();
                return Err(QuantityError {
                    input: input.to_owned(),
                    why: format!(
                        "use {number}{unit}i for binary units or {number}{} for decimal ones",
                        if unit == "K" { "k" } else { unit }
                    ),
                });
            }
            _ => return Err(err("unknown suffix")),
        };
        if frac.len() > 30 {
            return Err(err("it has too many decimal places"));
        }
        let digits: u128 = format!("{whole}{frac}")
            .parse()
            .map_err(|_| err("the number is too large"))?;
        // millis = digits × 2^bin × 10^(dec + 3 - len(frac)), rounded up.
        let mut value = digits
            .checked_mul(1u128 << bin)
            .ok_or_else(|| err("the number is too large"))?;
        let exp10 = dec + 3 - frac.len() as i32;
        if exp10 >= 0 {
            let factor = 10u128
                .checked_pow(exp10 as u32)
                .ok_or_else(|| err("the number is too large"))?;
            value = value
                .checked_mul(factor)
                .ok_or_else(|| err("the number is too large"))?;
        } else {
            let divisor = 10u128
                .checked_pow((-exp10) as u32)
                .ok_or_else(|| err("the number is too small"))?;
            value = value.div_ceil(divisor);
        }
        Ok(Quantity { millis: value })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.millis.is_multiple_of(1000) {
            return write!(f, "{}m", self.millis);
        }
        let units = self.millis / 1000;
        for (shift, suffix) in [
            (60, "Ei"),
            (50, "Pi"),
            (40, "Ti"),
            (30, "Gi"),
            (20, "Mi"),
            (10, "Ki"),
        ] {
            if units != 0 && units.is_multiple_of(1u128 << shift) {
                return write!(f, "{}{suffix}", units >> shift);
            }
        }
        write!(f, "{units}")
    }
}

/// Manifests write quantities as strings (`128Mi`) or bare numbers (`1`,
/// `0.5`); both are read, and they are written back as strings.
impl serde::Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as 128Mi, 500m or 2")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity::from_units(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> u64 {
        s.parse::<Quantity>().unwrap().to_bytes().unwrap()
    }

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(bytes("64Mi"), 64 << 20);
        assert_eq!(bytes("1Gi"), 1 << 30);
        assert_eq!(bytes("1.5Gi"), 3 << 29);
        assert_eq!(bytes("1k"), 1000);
        assert_eq!(bytes("128M"), 128_000_000);
        assert_eq!(bytes("1e3"), 1000);
        assert_eq!(bytes("1E6"), 1_000_000);
        assert_eq!(bytes("42"), 42);
    }

    #[test]
    fn milli_values_and_rounding() {
        let half: Quantity = "500m".parse().unwrap();
        assert_eq!(half, "0.5".parse().unwrap());
        assert_eq!(half.millis(), 500);
        // Kubernetes rounds fractional bytes up.
        assert_eq!(half.to_bytes(), Some(1));
        assert_eq!("0.0001".parse::<Quantity>().unwrap().millis(), 1);
    }

    #[test]
    fn display_round_trips() {
        for s in ["64Mi", "1Gi", "500m", "1000", "3Ki"] {
            assert_eq!(s.parse::<Quantity>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for bad in [
            "64MB",
            "",
            "Mi",
            "-1",
            "1.2.3",
            "1e",
            "1x",
            ".",
            "1e2147483647",
            "1e-2147483648",
            "0.0000000000000000000000000000001",
        ] {
            let e = bad.parse::<Quantity>().unwrap_err();
            assert!(e.to_string().contains("is not a quantity"), "{bad}: {e}");
        }
        assert!(
            "64MB"
                .parse::<Quantity>()
                .unwrap_err()
                .to_string()
                .contains("64Mi")
        );
    }
}

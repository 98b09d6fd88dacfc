//! The masking functions: `MASK` and the four that mask or keep the first or last characters.
//! Each letter, digit and other character is replaced by its class's mask (`X`, `x`, `n`, `-`
//! by default, or the one-character masks given, where a null mask leaves that class as it is),
//! as ksqlDB's `Masker` does.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::TypeSignature;

use super::udf::{Scalar, function, long_at, longs, string_at, strings};

/// The masks of the four classes of characters; `None` leaves the class unmasked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Masks {
    upper: Option<char>,
    lower: Option<char>,
    digit: Option<char>,
    other: Option<char>,
}

impl Default for Masks {
    fn default() -> Self {
        Masks {
            upper: Some('X'),
            lower: Some('x'),
            digit: Some('n'),
            other: Some('-'),
        }
    }
}

impl Masks {
    fn mask(&self, c: char) -> char {
        let mask = if c.is_uppercase() {
            self.upper
        } else if c.is_lowercase() {
            self.lower
        } else if c.is_numeric() {
            self.digit
        } else {
            self.other
        };
        mask.unwrap_or(c)
    }
}

/// A mask argument: one character, or null for none.
fn mask_char(mask: Option<&str>) -> Result<Option<char>, String> {
    let Some(mask) = mask else { return Ok(None) };
    let mut chars = mask.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(Some(c)),
        _ => Err(format!(
            "Invalid mask character. Must be only single character, but was '{mask}'"
        )),
    }
}

/// Which characters a function masks, given how many it names.
#[derive(Debug, Clone, Copy)]
enum Part {
    All,
    Left,
    Right,
    KeepLeft,
    KeepRight,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::All => "MASK",
            Part::Left => "MASK_LEFT",
            Part::Right => "MASK_RIGHT",
            Part::KeepLeft => "MASK_KEEP_LEFT",
            Part::KeepRight => "MASK_KEEP_RIGHT",
        }
    }

    /// Whether the character at `i` of `len` is masked, given `n`.
    fn masks(self, i: usize, len: usize, n: usize) -> bool {
        match self {
            Part::All => true,
            Part::Left => i < n,
            Part::Right => i + n >= len,
            Part::KeepLeft => i >= n,
            Part::KeepRight => i + n < len,
        }
    }
}

/// Masks `input` as `part` says, `n` characters counted, with `masks`.
fn mask_text(input: &str, part: Part, n: usize, masks: &Masks) -> String {
    let len = input.chars().count();
    input
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if part.masks(i, len, n) {
                masks.mask(c)
            } else {
                c
            }
        })
        .collect()
}

/// Runs a masking function over a batch: the input, then (but for `MASK`) the count, then
/// optionally the four masks.
fn run(part: Part, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let input = strings(&args[0])?;
    let (count, rest) = match part {
        Part::All => (None, &args[1..]),
        _ => (Some(longs(&args[1])?), &args[2..]),
    };
    let masks: Vec<StringArray> = rest.iter().map(strings).collect::<Result<_, _>>()?;
    let mut out = StringBuilder::new();
    for i in 0..rows {
        let n = match &count {
            Some(count) => match long_at(count, i) {
                Some(n) if n < 0 => {
                    return Err(format!(
                        "function {} requires a non-negative number of characters to mask or skip",
                        part.name().to_ascii_lowercase()
                    ));
                }
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                None => {
                    out.append_null();
                    continue;
                }
            },
            None => 0,
        };
        let row_masks = match masks.as_slice() {
            [upper, lower, digit, other] => Masks {
                upper: mask_char(string_at(upper, i))?,
                lower: mask_char(string_at(lower, i))?,
                digit: mask_char(string_at(digit, i))?,
                other: mask_char(string_at(other, i))?,
            },
            _ => Masks::default(),
        };
        match string_at(&input, i) {
            Some(text) => out.append_value(mask_text(text, part, n, &row_masks)),
            None => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// The result type, once the arguments are checked: text, a count for all but `MASK`, and
/// either no masks or all four.
fn return_type(part: Part, args: &[DataType]) -> Result<DataType, String> {
    let text = super::udf::is_text;
    let count = |t: &DataType| t.is_integer() || *t == DataType::Null;
    let fixed = if matches!(part, Part::All) { 1 } else { 2 };
    let valid = (args.len() == fixed || args.len() == fixed + 4)
        && text(&args[0])
        && (fixed == 1 || count(&args[1]))
        && args[fixed..].iter().all(text);
    if !valid {
        let count = if fixed == 1 { "" } else { ", INT" };
        return Err(format!(
            "{} It takes (STRING{count}) or (STRING{count}, STRING, STRING, STRING, STRING).",
            super::udf::refused(part.name(), args),
        ));
    }
    Ok(DataType::Utf8)
}

/// The functions of this file, as the catalogue registers them.
pub(super) fn functions() -> Vec<Scalar> {
    let with_count = || TypeSignature::OneOf(vec![TypeSignature::Any(2), TypeSignature::Any(6)]);
    vec![
        function(
            "MASK",
            TypeSignature::OneOf(vec![TypeSignature::Any(1), TypeSignature::Any(5)]),
            |a| return_type(Part::All, a),
            |a, r| run(Part::All, a, r),
        ),
        function(
            "MASK_LEFT",
            with_count(),
            |a| return_type(Part::Left, a),
            |a, r| run(Part::Left, a, r),
        ),
        function(
            "MASK_RIGHT",
            with_count(),
            |a| return_type(Part::Right, a),
            |a, r| run(Part::Right, a, r),
        ),
        function(
            "MASK_KEEP_LEFT",
            with_count(),
            |a| return_type(Part::KeepLeft, a),
            |a, r| run(Part::KeepLeft, a, r),
        ),
        function(
            "MASK_KEEP_RIGHT",
            with_count(),
            |a| return_type(Part::KeepRight, a),
            |a, r| run(Part::KeepRight, a, r),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_function_masks_what_ksqldbs_reference_says() {
        let text = "My Test $123";
        let default = Masks::default();
        assert_eq!(mask_text(text, Part::All, 0, &default), "Xx-Xxxx--nnn");
        assert_eq!(mask_text(text, Part::KeepLeft, 4, &default), "My Txxx--nnn");
        assert_eq!(
            mask_text(text, Part::KeepRight, 4, &default),
            "Xx-Xxxx-$123"
        );
        assert_eq!(mask_text(text, Part::Left, 4, &default), "Xx-Xest $123");
        assert_eq!(mask_text(text, Part::Right, 4, &default), "My Test -nnn");
        // A null mask leaves its class alone.
        let some = Masks {
            upper: Some('*'),
            lower: None,
            digit: Some('1'),
            other: None,
        };
        assert_eq!(mask_text(text, Part::All, 0, &some), "*y *est $111");
        // Counts past the end are the whole string.
        assert_eq!(mask_text("ab", Part::Left, 10, &default), "xx");
        assert_eq!(mask_text("ab", Part::KeepRight, 10, &default), "ab");
    }

    #[test]
    fn a_mask_is_one_character() {
        assert_eq!(mask_char(Some("#")), Ok(Some('#')));
        assert_eq!(mask_char(None), Ok(None));
        assert!(mask_char(Some("ab")).is_err());
        assert!(mask_char(Some("")).is_err());
    }
}

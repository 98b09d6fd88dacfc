//! Dates and times written with Java `DateTimeFormatter` patterns, as ksqlDB's
//! `TIMESTAMP_FORMAT`, `STRINGTOTIMESTAMP` and `TIMESTAMPTOSTRING` take them.

use chrono::format::{Item, Parsed, StrftimeItems, parse};
use chrono::{
    FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};

/// Translates a Java `DateTimeFormatter` pattern (`yyyy-MM-dd'T'HH:mm:ss.SSSX`) to a chrono
/// format string.
pub fn java_pattern_to_chrono(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted literal; '' is a single quote.
            let mut j = i + 1;
            if j < chars.len() && chars[j] == '\'' {
                out.push('\'');
                i += 2;
                continue;
            }
            while j < chars.len() && chars[j] != '\'' {
                push_literal(&mut out, chars[j]);
                j += 1;
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            push_literal(&mut out, c);
            i += 1;
            continue;
        }
        let mut run = 1;
        while i + run < chars.len() && chars[i + run] == c {
            run += 1;
        }
        let spec = match (c, run) {
            ('y' | 'u', 2) => "%y",
            ('y' | 'u', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('D', _) => "%j",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', 1) => "%1f",
            ('S', 2) => "%2f",
            ('S', 3) => "%3f",
            ('S', 6) => "%6f",
            ('S', _) => "%9f",
            ('a', _) => "%p",
            ('E', 4) => "%A",
            ('E', _) => "%a",
            ('X' | 'x', 1) => "%#z",
            ('X' | 'x', 2) | ('Z', 1..=3) => "%z",
            ('X' | 'x', _) | ('Z', _) => "%:z",
            ('z' | 'V', _) => "%Z",
            (other, _) => return Err(format!("Unknown pattern letter: {other}")),
        };
        out.push_str(spec);
        i += run;
    }
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

/// Parses `text` with a Java pattern into milliseconds since the epoch. Missing fields take
/// their lowest value (a date alone is its midnight); without a zone in the pattern the text
/// is read as UTC.
pub fn parse_timestamp(text: &str, pattern: &str) -> Result<i64, String> {
    parse_timestamp_in(text, pattern, Zone::UTC)
}

/// Parses `text` with a Java pattern as [`parse_timestamp`] does, reading a text without an
/// offset as a clock in `zone`.
pub fn parse_timestamp_in(text: &str, pattern: &str, zone: Zone) -> Result<i64, String> {
    let format = java_pattern_to_chrono(pattern)?;
    let items: Vec<Item<'_>> = StrftimeItems::new(&format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(format!("Invalid pattern: {pattern}"));
    }
    let mut parsed = Parsed::new();
    parse(&mut parsed, text, items.iter()).map_err(|e| {
        format!("Text '{text}' could not be parsed with the pattern '{pattern}': {e}")
    })?;
    let date = match parsed.to_naive_date() {
        Ok(date) => date,
        Err(_) => {
            let year = parsed.year.unwrap_or(1970);
            let month = parsed.month.unwrap_or(1);
            let day = parsed.day.unwrap_or(1);
            NaiveDate::from_ymd_opt(year, month, day)
                .ok_or_else(|| format!("Text '{text}' is not a valid date"))?
        }
    };
    let time = parsed.to_naive_time().unwrap_or_else(|_| {
        let hour = parsed.hour_div_12.unwrap_or(0) * 12 + parsed.hour_mod_12.unwrap_or(0);
        NaiveTime::from_hms_nano_opt(
            hour,
            parsed.minute.unwrap_or(0),
            parsed.second.unwrap_or(0),
            parsed.nanosecond.unwrap_or(0),
        )
        .unwrap_or(NaiveTime::MIN)
    });
    let local = NaiveDateTime::new(date, time);
    match parsed.offset {
        Some(offset_seconds) => {
            Ok(Utc.from_utc_datetime(&local).timestamp_millis() - i64::from(offset_seconds) * 1000)
        }
        None => zone
            .instant_of(local)
            .ok_or_else(|| format!("Text '{text}' is not a valid time in that zone")),
    }
}

/// Formats milliseconds since the epoch with a Java pattern, in UTC.
pub fn format_timestamp(millis: i64, pattern: &str) -> Result<String, String> {
    format_timestamp_in(millis, pattern, Zone::UTC)
}

/// Formats milliseconds since the epoch with a Java pattern, as a clock in `zone` shows them
/// (`zzz` writes the zone's abbreviation, `PDT`).
pub fn format_timestamp_in(millis: i64, pattern: &str, zone: Zone) -> Result<String, String> {
    let format = java_pattern_to_chrono(pattern)?;
    let items: Vec<Item<'_>> = StrftimeItems::new(&format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(format!("Invalid pattern: {pattern}"));
    }
    let out_of_range = || format!("{millis} is out of range for a timestamp");
    Ok(match zone {
        Zone::Region(tz) => tz
            .timestamp_millis_opt(millis)
            .single()
            .ok_or_else(out_of_range)?
            .format_with_items(items.iter())
            .to_string(),
        Zone::Fixed(offset) if offset.local_minus_utc() == 0 => Utc
            .timestamp_millis_opt(millis)
            .single()
            .ok_or_else(out_of_range)?
            .format_with_items(items.iter())
            .to_string(),
        Zone::Fixed(offset) => offset
            .timestamp_millis_opt(millis)
            .single()
            .ok_or_else(out_of_range)?
            .format_with_items(items.iter())
            .to_string(),
    })
}

/// A time zone as Java's `ZoneId.of` reads one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// A region of the IANA database, whose offset changes with daylight saving time.
    Region(chrono_tz::Tz),
    /// A fixed offset from UTC.
    Fixed(FixedOffset),
}

impl Zone {
    /// Coordinated Universal Time.
    pub const UTC: Zone = Zone::Fixed(FixedOffset::east_opt(0).expect("zero is a valid offset"));

    /// Reads a zone: a region (`America/Los_Angeles`), `Z`, `UTC`, `GMT` or `UT`, an offset
    /// (`+02:00`, `+0200`, `+2`, `-05:30`), or `UTC`, `GMT` or `UT` followed by an offset.
    pub fn parse(text: &str) -> Result<Zone, String> {
        let unknown = || format!("Unknown time zone: '{text}'");
        let trimmed = text.trim();
        if trimmed == "Z" {
            return Ok(Zone::UTC);
        }
        let offset = ["UTC", "GMT", "UT"]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
            .unwrap_or(trimmed);
        if offset.is_empty() {
            return Ok(Zone::UTC);
        }
        if let Some(sign) = offset.chars().next().filter(|c| *c == '+' || *c == '-') {
            let digits: String = offset[1..].chars().filter(|c| *c != ':').collect();
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return Err(unknown());
            }
            let (h, m, s) = match digits.len() {
                1 | 2 => (digits.as_str(), "0", "0"),
                4 => (&digits[..2], &digits[2..], "0"),
                6 => (&digits[..2], &digits[2..4], &digits[4..]),
                _ => return Err(unknown()),
            };
            let part = |p: &str| p.parse::<i32>().map_err(|_| unknown());
            let (h, m, s) = (part(h)?, part(m)?, part(s)?);
            if h > 18 || m > 59 || s > 59 {
                return Err(unknown());
            }
            let seconds = (h * 3600 + m * 60 + s) * if sign == '-' { -1 } else { 1 };
            return FixedOffset::east_opt(seconds)
                .map(Zone::Fixed)
                .ok_or_else(unknown);
        }
        trimmed
            .parse::<chrono_tz::Tz>()
            .map(Zone::Region)
            .map_err(|_| unknown())
    }

    /// The zone's offset from UTC, in milliseconds, at the instant `millis`.
    pub fn offset_ms_at(&self, millis: i64) -> i64 {
        match self {
            Zone::Fixed(offset) => i64::from(offset.local_minus_utc()) * 1000,
            Zone::Region(tz) => tz
                .timestamp_millis_opt(millis)
                .single()
                .map_or(0, |t| i64::from(t.offset().fix().local_minus_utc()) * 1000),
        }
    }

    /// The instant a clock in this zone shows as `local`; in a daylight-saving gap, the
    /// instant just after it, as Java resolves it.
    fn instant_of(&self, local: NaiveDateTime) -> Option<i64> {
        match self {
            Zone::Fixed(offset) => offset
                .from_local_datetime(&local)
                .single()
                .map(|t| t.timestamp_millis()),
            Zone::Region(tz) => match tz.from_local_datetime(&local) {
                LocalResult::Single(t) => Some(t.timestamp_millis()),
                LocalResult::Ambiguous(earliest, _) => Some(earliest.timestamp_millis()),
                LocalResult::None => {
                    let before = tz.offset_from_utc_datetime(&local).fix().local_minus_utc();
                    let at = local - chrono::Duration::seconds(i64::from(before));
                    Some(Utc.from_utc_datetime(&at).timestamp_millis())
                }
            },
        }
    }
}

/// Reads a possibly partial ISO-8601 timestamp as ksqlDB does when a string is compared with
/// `ROWTIME`, `WINDOWSTART` or `WINDOWEND`: `2018`, `2018-01-01T00:00`, `...:00.001`, with an
/// optional zone (`Z`, `+0445`, `+04:45`). Missing parts take their lowest value; no zone is UTC.
pub fn parse_partial_iso(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let invalid = || format!("Failed to parse timestamp '{text}'");
    // Split off a zone: a trailing Z, or a sign after the time part.
    let (body, zone) = if let Some(b) = text.strip_suffix('Z') {
        (b, Some(0))
    } else {
        match text.rfind(['+', '-']).filter(|&i| text[..i].contains('T')) {
            Some(i) => {
                let z = text[i + 1..].replace(':', "");
                let sign = if text.as_bytes()[i] == b'-' { -1 } else { 1 };
                let (h, m) = match z.len() {
                    2 => (z.parse::<i32>().map_err(|_| invalid())?, 0),
                    4 => (
                        z[..2].parse::<i32>().map_err(|_| invalid())?,
                        z[2..].parse::<i32>().map_err(|_| invalid())?,
                    ),
                    _ => return Err(invalid()),
                };
                (&text[..i], Some(sign * (h * 3600 + m * 60)))
            }
            None => (text, None),
        }
    };
    let (date, time) = body.split_once('T').unwrap_or((body, ""));
    let mut d = date.split('-');
    let year: i32 = d.next().unwrap_or("").parse().map_err(|_| invalid())?;
    let month: u32 = d.next().map_or(Ok(1), str::parse).map_err(|_| invalid())?;
    let day: u32 = d.next().map_or(Ok(1), str::parse).map_err(|_| invalid())?;
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').filter(|p| !p.is_empty());
    let hour: u32 = t.next().map_or(Ok(0), str::parse).map_err(|_| invalid())?;
    let minute: u32 = t.next().map_or(Ok(0), str::parse).map_err(|_| invalid())?;
    let second: u32 = t.next().map_or(Ok(0), str::parse).map_err(|_| invalid())?;
    let millis: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{:0<3}", &fraction[..fraction.len().min(3)])
            .parse()
            .map_err(|_| invalid())?
    };
    // As Java's resolver reads it, 24:00 is the midnight that ends the day.
    let end_of_day = hour == 24 && minute == 0 && second == 0 && millis == 0;
    let local = NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|date| {
            if end_of_day {
                date.succ_opt()?.and_hms_milli_opt(0, 0, 0, 0)
            } else {
                date.and_hms_milli_opt(hour, minute, second, millis)
            }
        })
        .ok_or_else(invalid)?;
    Ok(Utc.from_utc_datetime(&local).timestamp_millis() - i64::from(zone.unwrap_or(0)) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_read_as_javas_zone_ids() {
        let offset = |text: &str| Zone::parse(text).map(|z| z.offset_ms_at(0) / 60_000);
        assert_eq!(offset("+0200"), Ok(120));
        assert_eq!(offset("+02:00"), Ok(120));
        assert_eq!(offset("-5"), Ok(-300));
        assert_eq!(offset("UTC+05:30"), Ok(330));
        assert_eq!(offset("Z"), Ok(0));
        assert_eq!(offset("GMT"), Ok(0));
        assert_eq!(offset("Asia/Kolkata"), Ok(330));
        assert!(Zone::parse("+25").is_err());
        assert!(Zone::parse("Nowhere").is_err());
        // Daylight saving time: the offset depends on the instant.
        let la = Zone::parse("America/Los_Angeles").unwrap();
        assert_eq!(la.offset_ms_at(1_526_075_913_000) / 3_600_000, -7);
        assert_eq!(la.offset_ms_at(1_516_075_913_000) / 3_600_000, -8);
    }

    #[test]
    fn java_patterns_parse_and_format() {
        assert_eq!(
            parse_timestamp("2018-05-11 21:58:33", "yyyy-MM-dd HH:mm:ss"),
            Ok(1_526_075_913_000)
        );
        assert_eq!(
            parse_timestamp("2018-05-11T21:58:33.123+0100", "yyyy-MM-dd'T'HH:mm:ss.SSSZ"),
            Ok(1_526_072_313_123)
        );
        assert_eq!(parse_timestamp("1970-01-02", "yyyy-MM-dd"), Ok(86_400_000));
        assert_eq!(
            format_timestamp(1_526_075_913_000, "yyyy-MM-dd'T'HH:mm:ss").as_deref(),
            Ok("2018-05-11T21:58:33")
        );
        assert!(parse_timestamp("nope", "yyyy").is_err());
        assert_eq!(parse_partial_iso("2018"), Ok(1_514_764_800_000));
        assert_eq!(
            parse_partial_iso("2018-01-01T00:00:00.001"),
            Ok(1_514_764_800_001)
        );
        assert_eq!(
            parse_partial_iso("2019-01-01T00:00:00+0445"),
            Ok(1_546_300_800_000 - (4 * 3600 + 45 * 60) * 1000)
        );
        assert_eq!(
            parse_partial_iso("2020-02-10T08:31:44.001+0000"),
            Ok(1_581_323_504_001)
        );
        // Hour 24 is the end of the day (the next day's midnight); only with nothing after it.
        assert_eq!(
            parse_partial_iso("2020-02-24T24"),
            parse_partial_iso("2020-02-25")
        );
        assert!(parse_partial_iso("2020-02-24T24:01").is_err());
    }
}

//! Confluent's Protobuf wire format: a zero magic byte, the schema's 4-byte registry id, the
//! message indexes naming which message of the schema the payload is (a zig-zag varint count,
//! then each index; the first message, `[0]`, is the single byte 0), then the message.

/// The most message indexes a payload may name: nesting deeper than this is refused before
/// anything is reserved for it.
const MAX_INDEXES: usize = 64;

/// A framed payload's parts.
#[derive(Debug, PartialEq, Eq)]
pub struct Framed<'a> {
    /// The schema's id.
    pub id: u32,
    /// The path to the message: top-level index, then nested ones.
    pub indexes: Vec<usize>,
    /// The message's bytes.
    pub body: &'a [u8],
}

/// Reads the framing of `bytes`, or says why it is not Confluent's.
pub fn read(bytes: &[u8]) -> Result<Framed<'_>, String> {
    let [0, a, b, c, d, rest @ ..] = bytes else {
        return Err("Unknown magic byte!".into());
    };
    let id = u32::from_be_bytes([*a, *b, *c, *d]);
    let mut at = 0;
    let count = zigzag(rest, &mut at)?;
    let indexes = if count == 0 {
        vec![0]
    } else {
        let count = usize::try_from(count)
            .ok()
            .filter(|c| *c <= MAX_INDEXES)
            .ok_or_else(|| format!("The Protobuf record names {count} message indexes"))?;
        let mut indexes = Vec::with_capacity(count);
        for _ in 0..count {
            let index = zigzag(rest, &mut at)?;
            indexes.push(
                usize::try_from(index)
                    .map_err(|_| format!("The Protobuf record names message index {index}"))?,
            );
        }
        indexes
    };
    Ok(Framed {
        id,
        indexes,
        body: &rest[at..],
    })
}

/// Frames `body`, a message of schema `id` at `indexes`.
pub fn write(id: u32, indexes: &[usize], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    if indexes == [0] {
        out.push(0);
    } else {
        put_zigzag(&mut out, indexes.len() as i64);
        for index in indexes {
            put_zigzag(&mut out, *index as i64);
        }
    }
    out.extend_from_slice(body);
    out
}

fn zigzag(bytes: &[u8], at: &mut usize) -> Result<i64, String> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*at)
            .ok_or("The Protobuf record ends inside its message indexes")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err("The Protobuf record's message indexes hold an overlong varint".into())
}

fn put_zigzag(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_hostile_ones_are_refused() {
        for indexes in [vec![0], vec![2], vec![1, 0, 3]] {
            let framed = write(7, &indexes, b"body");
            let read = read(&framed).unwrap();
            assert_eq!(
                (read.id, read.indexes, read.body),
                (7, indexes, &b"body"[..])
            );
        }
        assert_eq!(write(1, &[0], b"")[5..], [0]);
        assert!(read(b"{}").unwrap_err().contains("magic"));
        // A count of 2^40 indexes is refused without reserving for it.
        let mut forged = vec![0, 0, 0, 0, 1];
        put_zigzag(&mut forged, 1 << 40);
        assert!(read(&forged).unwrap_err().contains("message indexes"));
        assert!(read(&[0, 0, 0, 0, 1, 0x80]).is_err());
    }
}

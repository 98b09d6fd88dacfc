//! Inflating the records of a compressed batch, with a bound: a batch may not decompress to
//! more than a limit, so a few kilobytes that claim gigabytes (a decompression bomb) are refused
//! instead of allocated. Kafka's four codecs: gzip, snappy (Kafka's xerial framing, or raw),
//! lz4 (frames) and zstd.

use std::io::Read;

use bytes::Bytes;
use kafka_protocol::records::Compression;

/// The most bytes one batch's records may decompress to: 64 times Kafka's default
/// `max.message.bytes`, far beyond what real data compresses by.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 << 20;

/// The header of snappy data framed as Kafka's Java clients write it (xerial).
const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// The records section `data`, decompressed with `compression`, refused beyond `limit` bytes.
pub(crate) fn decompress(
    compression: Compression,
    data: &[u8],
    limit: usize,
) -> Result<Bytes, String> {
    match compression {
        Compression::None => Ok(Bytes::copy_from_slice(data)),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(data), limit, "gzip"),
        Compression::Lz4 => {
            let decoder =
                lz4::Decoder::new(data).map_err(|e| format!("cannot decompress lz4: {e}"))?;
            read_bounded(decoder, limit, "lz4")
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(data)
                .map_err(|e| format!("cannot decompress zstd: {e}"))?;
            read_bounded(decoder, limit, "zstd")
        }
        Compression::Snappy => snappy(data, limit),
    }
}

/// Reads a decoder to its end, or to just past `limit` bytes, which is refused.
fn read_bounded(decoder: impl Read, limit: usize, codec: &str) -> Result<Bytes, String> {
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot decompress {codec}: {e}"))?;
    if out.len() > limit {
        return Err(too_large(codec, limit));
    }
    Ok(Bytes::from(out))
}

fn too_large(codec: &str, limit: usize) -> String {
    format!("the batch's records decompress ({codec}) to more than {limit} bytes")
}

/// Snappy, in Kafka's xerial blocks (each a 4-byte length and a raw snappy block) or raw, as
/// Kafka's Java clients read either. Each block's claimed length is checked before anything
/// is allocated for it.
fn snappy(data: &[u8], limit: usize) -> Result<Bytes, String> {
    let mut out = Vec::new();
    let block = |compressed: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let len = snap::raw::decompress_len(compressed)
            .map_err(|e| format!("cannot decompress snappy: {e}"))?;
        if out.len().saturating_add(len) > limit {
            return Err(too_large("snappy", limit));
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut out[start..])
            .map_err(|e| format!("cannot decompress snappy: {e}"))?;
        Ok(())
    };
    let Some(mut rest) = data.strip_prefix(XERIAL_MAGIC.as_slice()) else {
        block(data, &mut out)?;
        return Ok(Bytes::from(out));
    };
    while !rest.is_empty() {
        let (len, after) = rest
            .split_first_chunk::<4>()
            .ok_or("a snappy block's length is cut short")?;
        let len = u32::from_be_bytes(*len) as usize;
        let compressed = after
            .get(..len)
            .ok_or("a snappy block runs past the batch")?;
        block(compressed, &mut out)?;
        rest = &after[len..];
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn every_codec_inflates_what_it_deflated() {
        let text = b"the same words again and again and again".repeat(50);
        let gz = gzip(&text);
        assert_eq!(
            decompress(Compression::Gzip, &gz, 1 << 20).unwrap(),
            &text[..]
        );
        let zs = zstd::stream::encode_all(&text[..], 3).unwrap();
        assert_eq!(
            decompress(Compression::Zstd, &zs, 1 << 20).unwrap(),
            &text[..]
        );
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        lz.write_all(&text).unwrap();
        let (lz, done) = lz.finish();
        done.unwrap();
        assert_eq!(
            decompress(Compression::Lz4, &lz, 1 << 20).unwrap(),
            &text[..]
        );
        let raw = snap::raw::Encoder::new().compress_vec(&text).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, 1 << 20).unwrap(),
            &text[..]
        );
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        framed.extend_from_slice(&raw);
        assert_eq!(
            decompress(Compression::Snappy, &framed, 1 << 20).unwrap(),
            &text[..]
        );
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit_without_inflating_it() {
        let zeros = vec![0u8; 3 << 20];
        let limit = 1 << 20;
        for (compression, data) in [
            (Compression::Gzip, gzip(&zeros)),
            (
                Compression::Zstd,
                zstd::stream::encode_all(&zeros[..], 3).unwrap(),
            ),
            (
                Compression::Snappy,
                snap::raw::Encoder::new().compress_vec(&zeros).unwrap(),
            ),
        ] {
            let err = decompress(compression, &data, limit).unwrap_err();
            assert!(err.contains("more than"), "{compression:?}: {err}");
        }
        // Snappy states its length up front: a claim of 4 GiB is refused before any allocation.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert!(decompress(Compression::Snappy, &claim, limit).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(decompress(compression, b"not compressed at all", 1 << 20).is_err());
        }
        let mut cut = XERIAL_MAGIC.to_vec();
        cut.extend_from_slice(&[0, 0, 0, 9, 1]);
        assert!(decompress(Compression::Snappy, &cut, 1 << 20).is_err());
    }
}

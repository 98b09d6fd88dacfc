//! Batches a hostile or broken client produces: each carries a valid CRC, so only reading its
//! records tells it is wrong. The log refuses them before acknowledging anything, and keeps
//! serving what it holds; decoding one is an error, never an abort.

use bytes::{Bytes, BytesMut};
use eddy_storage::{
    BatchHeader, EncodedBatch, Record, StorageError, Store, StoreOptions, SyncPolicy, TopicConfig,
    decode_records,
};
use kafka_protocol::records::Compression;

fn open(dir: &std::path::Path) -> Store {
    let store = Store::open(
        dir,
        StoreOptions {
            sync: SyncPolicy::Os,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    store
        .create_topic("t", TopicConfig::with_partitions(1))
        .unwrap();
    store
}

fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::keyed(format!("k{i}"), format!("value {i}"), 1_000 + i as i64))
        .collect()
}

/// The bytes of a batch of `n` records, compressed or not.
fn batch_bytes(n: usize, compression: Compression) -> Vec<u8> {
    EncodedBatch::encode_with(&records(n), compression)
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// Sets the batch length to the bytes there are and recomputes the CRC, as a client that
/// means it would.
fn seal(bytes: &mut [u8]) {
    let length = (bytes.len() - 12) as i32;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Decoding `bytes` fails with an error rather than taking the process down.
fn unreadable(bytes: &[u8]) {
    assert!(decode_records(Bytes::copy_from_slice(bytes)).is_err());
}

/// Offers `bytes` to the log as a Kafka producer would, and checks it is refused as an invalid
/// record, leaving the partition as it was.
async fn refused(bytes: Vec<u8>, why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.produce("t", records(2)).await.unwrap();
    // A sealed batch passes the framing and CRC checks a client's batch gets on arrival.
    let batch = EncodedBatch::from_bytes(BytesMut::from(&bytes[..])).unwrap();
    let err = store.append_encoded("t", 0, batch).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::InvalidRecord { reason, .. } if reason.contains(why)),
        "{err}"
    );
    assert_eq!(store.end_offset("t", 0).unwrap(), 2);
    let read = store.read_records("t", 0, 0, usize::MAX).unwrap();
    assert_eq!(read.records.len(), 2);
}

#[tokio::test]
async fn a_compressed_batch_claiming_billions_of_records_is_refused() {
    for compression in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut bytes = batch_bytes(3, compression);
        bytes[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        seal(&mut bytes);
        unreadable(&bytes);
        refused(bytes, "").await;
    }
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_without_inflating_it() {
    // Snappy states the length it inflates to up front: this one says 4 GiB.
    let mut bytes = batch_bytes(1, Compression::None);
    bytes.truncate(61);
    bytes[21..23].copy_from_slice(&2i16.to_be_bytes());
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00]);
    seal(&mut bytes);
    unreadable(&bytes);
    refused(bytes, "more than").await;

    // Gzip of zeros, past the limit once inflated.
    let zeros = vec![0u8; eddy_storage::MAX_DECOMPRESSED_BATCH_BYTES + 1024];
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gzip, &zeros).unwrap();
    let mut bytes = batch_bytes(1, Compression::None);
    bytes.truncate(61);
    bytes[21..23].copy_from_slice(&1i16.to_be_bytes());
    bytes.extend_from_slice(&gzip.finish().unwrap());
    seal(&mut bytes);
    unreadable(&bytes);
    refused(bytes, "more than").await;
}

#[tokio::test]
async fn records_that_do_not_parse_are_refused() {
    // The first record's length says it runs past the batch.
    let mut bytes = batch_bytes(3, Compression::None);
    bytes[61] = 0x7e;
    seal(&mut bytes);
    unreadable(&bytes);
    refused(bytes, "runs past").await;
}

#[tokio::test]
async fn offset_deltas_must_run_from_zero_without_gaps() {
    let mut bytes = batch_bytes(3, Compression::None);
    // The second record: its length varint, the attributes byte, a one-byte timestamp delta,
    // then its offset delta (zigzag 1 = 2); make it 5 (zigzag 10).
    let first_len = (bytes[61] >> 1) as usize;
    let second = 61 + 1 + first_len;
    assert_eq!(bytes[second + 3], 2, "the layout this test expects");
    bytes[second + 3] = 10;
    seal(&mut bytes);
    refused(bytes, "offset delta").await;
}

#[tokio::test]
async fn a_count_that_disagrees_with_the_records_is_refused() {
    let mut bytes = batch_bytes(3, Compression::None);
    bytes[57..61].copy_from_slice(&2i32.to_be_bytes());
    seal(&mut bytes);
    unreadable(&bytes);
    refused(bytes, "after the last record").await;

    let mut bytes = batch_bytes(3, Compression::Gzip);
    bytes[57..61].copy_from_slice(&4i32.to_be_bytes());
    seal(&mut bytes);
    unreadable(&bytes);
    refused(bytes, "").await;
}

#[tokio::test]
async fn an_unknown_compression_type_is_refused() {
    let mut bytes = batch_bytes(2, Compression::None);
    bytes[21..23].copy_from_slice(&6i16.to_be_bytes());
    seal(&mut bytes);
    unreadable(&bytes);
    refused(bytes, "unknown compression type 6").await;
}

#[tokio::test]
async fn well_formed_batches_of_every_codec_are_stored_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut expected = Vec::new();
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let bytes = batch_bytes(3, compression);
        let header = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(header.record_count, 3);
        let batch = EncodedBatch::from_bytes(BytesMut::from(&bytes[..])).unwrap();
        store.append_encoded("t", 0, batch).await.unwrap();
        expected.extend(records(3));
    }
    let read = store.read_records("t", 0, 0, usize::MAX).unwrap();
    let got: Vec<Record> = read.records.into_iter().map(|r| r.record).collect();
    assert_eq!(got, expected);
}

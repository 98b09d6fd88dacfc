//! The batches a frame between nodes carries travel after its message, not inside it: the
//! message (MessagePack) gives each batch's length where its bytes would be, and the batches'
//! bytes follow the message in the same order. The sender writes each batch to the connection
//! straight from the Raft log's cache, rather than copying it into each follower's frame,
//! and the receiver keeps each batch as a slice of the frame it read, rather than copying it
//! out. Elsewhere (the Raft log's files) a batch is encoded inline, as MessagePack bytes.
//!
//! Serde gives a field's serializer no context, so the batches of the message being encoded
//! or decoded are kept in a thread-local for the length of that one synchronous call.

use std::cell::RefCell;

use bytes::Bytes;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

thread_local! {
    /// While a frame's message is encoded on this thread: the batches it carries, in order.
    static SENDING: RefCell<Option<Vec<Bytes>>> = const { RefCell::new(None) };
    /// While a frame's message is decoded on this thread: the bytes after the message, and
    /// how many of them the batches decoded so far took.
    static RECEIVING: RefCell<Option<(Bytes, usize)>> = const { RefCell::new(None) };
}

/// Serializes a batch's bytes: as its length, the bytes set apart, while a frame's message is
/// encoded ([`encode_apart`]); inline otherwise.
pub(super) fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    let apart = SENDING.with_borrow_mut(|sending| {
        sending
            .as_mut()
            .map(|batches| batches.push(bytes.clone()))
            .is_some()
    });
    if apart {
        serializer.serialize_u64(bytes.len() as u64)
    } else {
        bytes.serialize(serializer)
    }
}

/// Deserializes a batch's bytes: the next so many bytes after the message while a frame's
/// message is decoded ([`decode_apart`]); inline otherwise.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    if RECEIVING.with_borrow(Option::is_none) {
        return Bytes::deserialize(deserializer);
    }
    let len = u64::deserialize(deserializer)?;
    RECEIVING.with_borrow_mut(|receiving| {
        let Some((batches, taken)) = receiving.as_mut() else {
            return Err(D::Error::custom("a batch decoded outside its frame"));
        };
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| taken.checked_add(len))
            .filter(|end| *end <= batches.len())
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "a batch of {len} bytes runs past the end of its frame ({} bytes are left)",
                    batches.len() - *taken
                ))
            })?;
        let batch = batches.slice(*taken..end);
        *taken = end;
        Ok(batch)
    })
}

/// Clears a thread-local when dropped, so a failed (or panicking) encode or decode leaves
/// nothing behind for the next.
struct Clear(fn());

impl Drop for Clear {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Runs `encode` (a message's encoding) with the batches it holds set apart: what it returned,
/// and the batches, in the order the message names them.
pub(super) fn encode_apart<T>(encode: impl FnOnce() -> T) -> (T, Vec<Bytes>) {
    SENDING.set(Some(Vec::new()));
    let clear = Clear(|| SENDING.set(None));
    let encoded = encode();
    let batches = SENDING.take().unwrap_or_default();
    drop(clear);
    (encoded, batches)
}

/// Runs `decode` (a message's decoding) with `batches`, the bytes that followed the message,
/// as its batches' bytes. Every byte must belong to a batch the message names.
pub(super) fn decode_apart<T, E: std::fmt::Display>(
    batches: Bytes,
    decode: impl FnOnce() -> Result<T, E>,
) -> Result<T, String> {
    let len = batches.len();
    RECEIVING.set(Some((batches, 0)));
    let clear = Clear(|| RECEIVING.set(None));
    let decoded = decode().map_err(|e| e.to_string());
    let taken = RECEIVING.take().map_or(0, |(_, taken)| taken);
    drop(clear);
    let decoded = decoded?;
    if taken != len {
        return Err(format!(
            "{} bytes follow the frame's message that no batch it names holds",
            len - taken
        ));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::log_store::{decode, encode_into};
    use crate::replication::types::Batch;

    fn batch(term: u64, bytes: &'static [u8]) -> Batch {
        Batch {
            term,
            bytes: Bytes::from_static(bytes),
        }
    }

    /// Encodes `batches` as a frame would: the message, then the bytes set apart.
    fn framed(batches: &[Batch]) -> (Vec<u8>, Bytes) {
        let mut message = Vec::new();
        let (encoded, apart) = encode_apart(|| encode_into(&mut message, &batches));
        encoded.expect("encoded");
        (message, Bytes::from(apart.concat()))
    }

    #[test]
    fn batches_travel_after_the_message_and_come_back_as_slices_of_the_frame() {
        let sent = vec![batch(3, b"first batch"), batch(4, b""), batch(4, b"third")];
        let (message, after) = framed(&sent);
        assert!(
            !message
                .windows(b"first batch".len())
                .any(|w| w == b"first batch"),
            "a batch's bytes are not in the message"
        );
        assert_eq!(&after[..], b"first batchthird");
        let received: Vec<Batch> =
            decode_apart(after.clone(), || decode(&message)).expect("decoded");
        assert_eq!(received.len(), 3);
        for (received, sent) in received.iter().zip(&sent) {
            assert_eq!(received.term, sent.term);
            assert_eq!(received.bytes, sent.bytes);
        }
        // Not copied: the first batch is the frame's own memory.
        assert_eq!(received[0].bytes.as_ptr(), after.as_ptr());
    }

    #[test]
    fn outside_a_frame_a_batch_is_encoded_inline() {
        let sent = vec![batch(7, b"in the raft log")];
        let mut inline = Vec::new();
        encode_into(&mut inline, &sent).expect("encoded");
        assert!(inline.windows(15).any(|w| w == b"in the raft log"));
        let received: Vec<Batch> = decode(&inline).expect("decoded");
        assert_eq!(received[0].bytes, sent[0].bytes);
        // A frame's encoding, failed or not, leaves the next inline.
        let (message, _) = framed(&sent);
        assert!(decode_apart(Bytes::new(), || decode::<Vec<Batch>>(&message)).is_err());
        let received: Vec<Batch> = decode(&inline).expect("decoded inline again");
        assert_eq!(received[0].bytes, sent[0].bytes);
    }

    #[test]
    fn a_frame_whose_batches_do_not_add_up_is_refused() {
        let (message, after) = framed(&[batch(1, b"0123456789")]);
        // Cut short: the batch runs past the end.
        let short = decode_apart(after.slice(..4), || decode::<Vec<Batch>>(&message));
        assert!(
            short
                .as_ref()
                .is_err_and(|e| e.contains("runs past the end")),
            "{:?}",
            short.map(|b| b.len())
        );
        // Bytes left over that no batch names.
        let long = Bytes::from([&after[..], b"extra"].concat());
        let extra = decode_apart(long, || decode::<Vec<Batch>>(&message));
        assert!(
            extra
                .as_ref()
                .is_err_and(|e| e.contains("5 bytes follow the frame's message")),
            "{:?}",
            extra.map(|b| b.len())
        );
        // A length no memory holds.
        let mut huge = Vec::new();
        let (encoded, _) = encode_apart(|| {
            encode_into(
                &mut huge,
                &vec![Batch {
                    term: 1,
                    bytes: Bytes::new(),
                }],
            )
        });
        encoded.expect("encoded");
        let at = huge.len() - 1;
        huge.truncate(at);
        huge.extend_from_slice(&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let refused = decode_apart(after, || decode::<Vec<Batch>>(&huge));
        assert!(refused.is_err());
    }
}

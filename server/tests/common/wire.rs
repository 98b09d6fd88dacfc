//! A bare Kafka client over a blocking socket: one request, one response, in the form a test
//! builds them, so a test can send what no well-behaved client would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// One connection to the Kafka listener.
pub struct Wire {
    socket: TcpStream,
    correlation: i32,
}

impl Wire {
    /// Connects to `address`, waiting at most 30 s for any answer.
    pub fn connect(address: &str) -> Wire {
        let socket = TcpStream::connect(address).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Wire {
            socket,
            correlation: 0,
        }
    }

    /// Sends `request` as `key` at `version`; the response's body and its size on the wire.
    pub fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> (Resp, usize) {
        self.try_call(key, version, request).unwrap()
    }

    /// [`Wire::call`], with a connection the server dropped as an error rather than a panic.
    pub fn try_call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<(Resp, usize), String> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("hostile-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, Req::header_version(version))
            .map_err(|e| e.to_string())?;
        request
            .encode(&mut body, version)
            .map_err(|e| e.to_string())?;
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.socket.write_all(&frame).map_err(|e| e.to_string())?;
        let mut length = [0u8; 4];
        self.socket
            .read_exact(&mut length)
            .map_err(|e| e.to_string())?;
        let size = i32::from_be_bytes(length) as usize;
        let mut response = vec![0u8; size];
        self.socket
            .read_exact(&mut response)
            .map_err(|e| e.to_string())?;
        let mut response = Bytes::from(response);
        let header = ResponseHeader::decode(&mut response, Resp::header_version(version))
            .map_err(|e| e.to_string())?;
        assert_eq!(header.correlation_id, self.correlation);
        let body = Resp::decode(&mut response, version).map_err(|e| e.to_string())?;
        Ok((body, size))
    }

    /// Connects to `address`, or says why it cannot.
    pub fn try_connect(address: &str) -> Result<Wire, String> {
        let socket = TcpStream::connect(address).map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        Ok(Wire {
            socket,
            correlation: 0,
        })
    }

    /// Every record of partition `partition` of `topic`, fetched from offset 0 to the end. A
    /// batch that does not decode fails the test: nothing stored may be unreadable.
    pub fn read_all(&mut self, topic: &str, partition: i32) -> Vec<eddy_storage::LogRecord> {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
        let mut found = Vec::new();
        let mut next = 0i64;
        loop {
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_bytes(8 << 20)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(partition)
                                .with_fetch_offset(next)
                                .with_partition_max_bytes(8 << 20),
                        ]),
                ]);
            let (response, _): (FetchResponse, _) = self.call(ApiKey::Fetch, 4, &request);
            let records = response.responses[0].partitions[0]
                .records
                .clone()
                .unwrap_or_default();
            if records.is_empty() {
                return found;
            }
            for batch in eddy_storage::split_batches(&records) {
                let (header, bytes) = batch.expect("a stored batch splits");
                let decoded = eddy_storage::decode_records(Bytes::copy_from_slice(bytes))
                    .unwrap_or_else(|e| panic!("a stored batch does not decode: {e}"));
                found.extend(decoded);
                next = header.base_offset + i64::from(header.last_offset_delta) + 1;
            }
        }
    }

    /// Reads one length-prefixed frame as it is.
    pub fn read_raw_frame(&mut self) -> std::io::Result<Vec<u8>> {
        let mut length = [0u8; 4];
        self.socket.read_exact(&mut length)?;
        let mut frame = vec![0u8; i32::from_be_bytes(length).max(0) as usize];
        self.socket.read_exact(&mut frame)?;
        Ok(frame)
    }

    /// Writes `bytes` as they are, framing and all.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.socket.write_all(bytes)
    }

    /// Whether the server closed the connection within `wait`, whatever it sent first (a TLS
    /// alert, say).
    pub fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        let mut buffer = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.read(&mut buffer) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
    }

    /// Whether the server closed the connection within `wait`: a read sees the end of the
    /// stream (or a reset) rather than timing out.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        match self.socket.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

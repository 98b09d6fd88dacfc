//! Where Eddy listens and how each listener is secured, from the command line: Kafka listeners
//! as Kafka writes them (`SASL_SSL://0.0.0.0:9093`, repeatable, each with its advertised
//! address), HTTP listeners as URLs (`https://0.0.0.0:8088`), and the rule that keeps a
//! listener off the network until it authenticates its clients.

use std::net::{IpAddr, SocketAddr};

use eddy_security::SecurityProtocol;

/// One Kafka listener: its protocol, where it binds and what clients are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaListener {
    /// The security protocol.
    pub protocol: SecurityProtocol,
    /// The address to bind.
    pub bind: SocketAddr,
    /// The host and port clients are told to connect to; the bound address when `None`.
    pub advertised: Option<(String, u16)>,
}

/// Parses `--kafka-listen` values (`[PROTOCOL://]host:port`, PLAINTEXT when no protocol is
/// given) and pairs `--kafka-advertised` values with them by protocol; an advertised address
/// without a protocol belongs to the first listener.
pub fn kafka_listeners(
    listen: &[String],
    advertised: &[String],
) -> Result<Vec<KafkaListener>, String> {
    let mut listeners = Vec::new();
    for spec in listen.iter().filter(|s| !s.trim().is_empty()) {
        let (protocol, address) = split_protocol(spec)?;
        let bind: SocketAddr = address.parse().map_err(|_| {
            format!("--kafka-listen takes [PROTOCOL://]ip:port, such as SASL_SSL://0.0.0.0:9093; not {spec:?}")
        })?;
        if listeners
            .iter()
            .any(|l: &KafkaListener| l.protocol == protocol)
        {
            return Err(format!(
                "--kafka-listen names {protocol} twice; each protocol may have one listener"
            ));
        }
        listeners.push(KafkaListener {
            protocol,
            bind,
            advertised: None,
        });
    }
    if listeners.is_empty() {
        return Err("--kafka-listen needs at least one address".into());
    }
    for spec in advertised.iter().filter(|s| !s.trim().is_empty()) {
        let has_protocol = spec.contains("://");
        let (protocol, address) = split_protocol(spec)?;
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| {
                format!("--kafka-advertised takes [PROTOCOL://]host:port; not {spec:?}")
            })?;
        let listener = if has_protocol {
            listeners.iter_mut().find(|l| l.protocol == protocol)
        } else {
            listeners.first_mut()
        }
        .ok_or_else(|| {
            format!("--kafka-advertised names {protocol}, which no --kafka-listen has")
        })?;
        listener.advertised = Some((host, port));
    }
    Ok(listeners)
}

fn split_protocol(spec: &str) -> Result<(SecurityProtocol, &str), String> {
    match spec.trim().split_once("://") {
        Some((protocol, address)) => Ok((protocol.parse()?, address)),
        None => Ok((SecurityProtocol::Plaintext, spec.trim())),
    }
}

/// An HTTP listener: where it binds and whether it runs TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpListener {
    /// The address to bind.
    pub bind: SocketAddr,
    /// `https://`.
    pub tls: bool,
}

/// Parses an HTTP listener: `http://ip:port`, `https://ip:port` or a bare `ip:port` (HTTP).
pub fn http_listener(flag: &str, spec: &str) -> Result<HttpListener, String> {
    let (tls, address) = match spec.trim().split_once("://") {
        Some((scheme, address)) if scheme.eq_ignore_ascii_case("https") => (true, address),
        Some((scheme, address)) if scheme.eq_ignore_ascii_case("http") => (false, address),
        _ if !spec.contains("://") => (false, spec.trim()),
        _ => {
            return Err(format!(
                "{flag} takes http:// or https:// addresses; not {spec:?}"
            ));
        }
    };
    let bind = address.trim_end_matches('/').parse().map_err(|_| {
        format!(
            "{flag} takes an address such as 127.0.0.1:8088 or https://0.0.0.0:8088; not {spec:?}"
        )
    })?;
    Ok(HttpListener { bind, tls })
}

/// Whether `ip` is reachable only from this machine.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// Why a listener must not start: bound beyond loopback while it lets anyone in, unless the
/// operator said `--allow-anonymous`.
pub fn refuse_anonymous(what: &str, bind: SocketAddr, how_to_secure: &str) -> String {
    format!(
        "refusing to serve {what} on {bind} without authentication: anyone who can reach it could \
         read and change everything. {how_to_secure} Or listen on loopback (127.0.0.1), or pass \
         --allow-anonymous to serve it open anyway."
    )
}

/// Binds `bind` as soon as it is free, retrying every 200 ms: a node of the replicated log
/// that changes role reopens its ports while the listeners of its last role may still be
/// closing. `what` names the listener in the one warning.
pub async fn bind_when_free(bind: SocketAddr, what: &str) -> tokio::net::TcpListener {
    let mut warned = false;
    loop {
        match tokio::net::TcpListener::bind(bind).await {
            Ok(listener) => return listener,
            Err(e) => {
                if !warned {
                    tracing::warn!(address = %bind, error = %e, "cannot listen for {what} yet; retrying");
                    warned = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_listeners_read_as_kafka_writes_them() {
        let listeners = kafka_listeners(
            &["127.0.0.1:9092".into(), "sasl_ssl://0.0.0.0:9093".into()],
            &["SASL_SSL://broker.example.com:19093".into()],
        )
        .unwrap();
        assert_eq!(listeners[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(listeners[0].advertised, None);
        assert_eq!(listeners[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            listeners[1].advertised,
            Some(("broker.example.com".into(), 19093))
        );
        for (listen, advertised, says) in [
            (vec!["TLS://1.2.3.4:1"], vec![], "not a security protocol"),
            (vec!["localhost:9092"], vec![], "ip:port"),
            (vec!["1.2.3.4:1", "PLAINTEXT://1.2.3.4:2"], vec![], "twice"),
            (vec!["1.2.3.4:1"], vec!["SSL://h:1"], "no --kafka-listen"),
            (vec!["1.2.3.4:1"], vec!["h"], "host:port"),
            (vec![], vec![], "at least one"),
        ] {
            let listen: Vec<String> = listen.into_iter().map(String::from).collect();
            let advertised: Vec<String> = advertised.into_iter().map(String::from).collect();
            let err = kafka_listeners(&listen, &advertised).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn http_listeners_are_urls_or_addresses() {
        assert_eq!(
            http_listener("--listen", "https://0.0.0.0:8088").unwrap(),
            HttpListener {
                bind: "0.0.0.0:8088".parse().unwrap(),
                tls: true
            }
        );
        assert!(!http_listener("--listen", "127.0.0.1:8088").unwrap().tls);
        assert!(
            !http_listener("--listen", "http://127.0.0.1:8088/")
                .unwrap()
                .tls
        );
        assert!(http_listener("--listen", "ftp://127.0.0.1:8088").is_err());
        assert!(http_listener("--listen", "localhost:8088").is_err());
    }
}

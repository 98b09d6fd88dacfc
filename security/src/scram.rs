//! SCRAM (RFC 5802, with RFC 7677's SHA-256 and Kafka's SHA-512): the credentials a server keeps
//! (salt, iterations, stored key, server key; never the password) and the server's side of the
//! exchange, as Kafka's `ScramSaslServer` runs it: no channel binding, the `tokenauth` extension
//! refused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use serde::{Deserialize, Serialize};

use crate::SecurityError;

/// The fewest PBKDF2 iterations a credential may have, as Kafka requires (RFC 7677's minimum).
pub const MIN_ITERATIONS: u32 = 4096;
/// The most PBKDF2 iterations a credential may have, as Kafka allows.
pub const MAX_ITERATIONS: u32 = 16384;
/// The iterations of credentials Eddy makes from a password.
pub const DEFAULT_ITERATIONS: u32 = 8192;

/// A SCRAM mechanism, named as SASL names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mechanism {
    /// `SCRAM-SHA-256`.
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    /// `SCRAM-SHA-512`.
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    /// Both mechanisms, strongest first.
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha512, Mechanism::Sha256];

    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism SASL calls `name` (case-insensitively).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Kafka's number for the mechanism (`ScramMechanism` in AlterUserScramCredentials).
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    /// The mechanism Kafka numbers `kind`.
    pub fn from_kafka_type(kind: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.kafka_type() == kind)
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn output_len(self) -> usize {
        self.digest().output_len()
    }

    /// `Hi(password, salt, iterations)`: the salted password.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        let iterations = std::num::NonZeroU32::new(iterations.max(1)).unwrap_or(NON_ZERO_ONE);
        pbkdf2::derive(self.pbkdf2(), iterations, salt, password, &mut out);
        out
    }

    fn hmac_of(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }
}

const NON_ZERO_ONE: std::num::NonZeroU32 = std::num::NonZeroU32::MIN;

/// What the server keeps of one user's password for one mechanism.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The salt, base64 in storage.
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    // The keys let whoever holds them pose as the server, so they stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A credential for `password` with a fresh random salt.
    pub fn from_password(
        mechanism: Mechanism,
        password: &str,
        iterations: u32,
    ) -> Result<Credential, SecurityError> {
        let salt = random_bytes(24)?;
        Credential::from_salted_password(
            mechanism,
            &mechanism.salted_password(password.as_bytes(), &salt, iterations),
            salt,
            iterations,
        )
    }

    /// A credential from a salted password a client computed (as AlterUserScramCredentials
    /// sends it), so the password itself never reaches the server.
    pub fn from_salted_password(
        mechanism: Mechanism,
        salted_password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Result<Credential, SecurityError> {
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(SecurityError::InvalidCredential(format!(
                "{} iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, not {iterations}",
                mechanism.name()
            )));
        }
        if salt.is_empty() || salted_password.len() != mechanism.output_len() {
            return Err(SecurityError::InvalidCredential(format!(
                "a {} salted password is {} bytes with a non-empty salt",
                mechanism.name(),
                mechanism.output_len()
            )));
        }
        let client_key = mechanism.hmac_of(salted_password, b"Client Key");
        Ok(Credential {
            salt,
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac_of(salted_password, b"Server Key"),
        })
    }

    /// Whether `password` is the one this credential was made from (for SASL PLAIN and HTTP
    /// Basic, which send the password itself).
    pub fn verifies(&self, mechanism: Mechanism, password: &str) -> bool {
        if self.stored_key.len() != mechanism.output_len() {
            return false;
        }
        let salted = mechanism.salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = mechanism.hmac_of(&salted, b"Client Key");
        constant_time_eq(&mechanism.hash(&client_key), &self.stored_key)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Random bytes from the system's generator.
pub(crate) fn random_bytes(len: usize) -> Result<Vec<u8>, SecurityError> {
    let mut out = vec![0u8; len];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| SecurityError::Internal("the system's random generator failed".into()))?;
    Ok(out)
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Where a server-side exchange stands.
#[derive(Debug)]
enum Stage {
    /// Waiting for the client's first message.
    Start,
    /// Sent the server's first message; waiting for the client's final one.
    Challenged {
        user: String,
        /// `None` for an unknown user: the exchange goes on with a made-up salt and fails at
        /// the proof, so a client cannot tell unknown users from wrong passwords.
        credential: Option<Credential>,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

/// The server's side of one SCRAM exchange.
#[derive(Debug)]
pub struct ScramServer {
    mechanism: Mechanism,
    stage: Stage,
    claimed: Option<String>,
}

/// What the server answers a client's message with.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this and wait for the client's next message.
    Continue(Vec<u8>),
    /// The client proved it holds `user`'s password; send this last message.
    Authenticated {
        /// The authenticated user.
        user: String,
        /// The server's final message.
        message: Vec<u8>,
    },
}

impl ScramServer {
    /// An exchange for `mechanism`.
    pub fn new(mechanism: Mechanism) -> Self {
        ScramServer {
            mechanism,
            stage: Stage::Start,
            claimed: None,
        }
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The user the client claims to be, once its first message has named one.
    pub fn claimed_user(&self) -> Option<&str> {
        self.claimed.as_deref()
    }

    /// Takes the client's next message; `lookup` finds a user's credential for this mechanism.
    /// Any error ends the exchange as a failed authentication.
    pub fn step(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
    ) -> Result<Step, SecurityError> {
        let text = std::str::from_utf8(message)
            .map_err(|_| SecurityError::Malformed("a SCRAM message is UTF-8".into()))?;
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Start => self.client_first(text, lookup),
            Stage::Challenged {
                user,
                credential,
                client_first_bare,
                server_first,
                nonce,
            } => {
                let auth = (client_first_bare.as_str(), server_first.as_str());
                self.client_final(text, &user, credential.as_ref(), auth, &nonce)
            }
            Stage::Done => Err(SecurityError::Malformed(
                "the SCRAM exchange is over".into(),
            )),
        }
    }

    fn client_first(
        &mut self,
        text: &str,
        lookup: impl FnOnce(&str) -> Option<Credential>,
    ) -> Result<Step, SecurityError> {
        // gs2-header: "n,," (no channel binding) or "y,," (the client could bind but thinks
        // the server cannot); "p=" asks for binding, which Kafka does not offer.
        let bare = text
            .strip_prefix("n,")
            .or_else(|| text.strip_prefix("y,"))
            .ok_or_else(|| {
                SecurityError::Malformed("SCRAM channel binding is not supported".into())
            })?;
        let (authzid, bare) = bare
            .split_once(',')
            .ok_or_else(|| SecurityError::Malformed("a SCRAM gs2 header ends with ','".into()))?;
        let mut user = None;
        let mut client_nonce = None;
        for (i, attribute) in bare.split(',').enumerate() {
            match attribute.split_once('=') {
                Some(("m", _)) if i == 0 => {
                    return Err(SecurityError::Malformed(
                        "SCRAM mandatory extensions are not supported".into(),
                    ));
                }
                Some(("n", name)) if i == 0 => user = Some(unescape_name(name)?),
                Some(("r", nonce)) if i == 1 && !nonce.is_empty() => client_nonce = Some(nonce),
                Some(("tokenauth", _)) => {
                    return Err(SecurityError::Malformed(
                        "delegation tokens are not supported".into(),
                    ));
                }
                // Other extensions are ignored, as Kafka ignores unknown ones.
                Some(_) if i >= 2 => {}
                _ => {
                    return Err(SecurityError::Malformed(format!(
                        "unexpected SCRAM attribute {attribute:?}"
                    )));
                }
            }
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return Err(SecurityError::Malformed(
                "a SCRAM client-first message has n= and r=".into(),
            ));
        };
        if let Some(authzid) = authzid.strip_prefix("a=")
            && unescape_name(authzid)? != user
        {
            return Err(SecurityError::Malformed(
                "a SCRAM authorization id other than the user is not supported".into(),
            ));
        }
        self.claimed = Some(user.clone());
        let credential = lookup(&user);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (random_bytes(24)?, DEFAULT_ITERATIONS),
        };
        let nonce = format!(
            "{client_nonce}{}",
            BASE64
                .encode(random_bytes(18)?)
                .replace(['+', '/', '='], "x")
        );
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
        let reply = server_first.clone().into_bytes();
        self.stage = Stage::Challenged {
            user,
            credential,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        };
        Ok(Step::Continue(reply))
    }

    fn client_final(
        &mut self,
        text: &str,
        user: &str,
        credential: Option<&Credential>,
        (client_first_bare, server_first): (&str, &str),
        nonce: &str,
    ) -> Result<Step, SecurityError> {
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(|| {
            SecurityError::Malformed("a SCRAM client-final message has p=".into())
        })?;
        let mut attributes = without_proof.split(',');
        let binding = attributes.next().and_then(|a| a.strip_prefix("c="));
        // The base64 of "n,," or "y,,": no channel binding.
        if !matches!(binding, Some("biws") | Some("eSws")) {
            return Err(SecurityError::Malformed(
                "SCRAM channel binding is not supported".into(),
            ));
        }
        // As Kafka checks it: the echoed nonce ends with the server's. librdkafka sends its
        // client nonce in front of the server's whole nonce, which already begins with it.
        if !attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .is_some_and(|echoed| echoed.ends_with(nonce))
        {
            return Err(SecurityError::Malformed(
                "the SCRAM nonce does not match the server's".into(),
            ));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| SecurityError::Malformed("a SCRAM proof is base64".into()))?;
        let failed = || SecurityError::AuthenticationFailed {
            mechanism: self.mechanism.name(),
        };
        let credential = credential.ok_or_else(failed)?;
        let mechanism = self.mechanism;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = mechanism.hmac_of(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(failed());
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if !constant_time_eq(&mechanism.hash(&client_key), &credential.stored_key) {
            return Err(failed());
        }
        let server_signature = mechanism.hmac_of(&credential.server_key, auth_message.as_bytes());
        Ok(Step::Authenticated {
            user: user.to_string(),
            message: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
        })
    }
}

/// A SCRAM `saslname`: `=2C` is a comma and `=3D` an equals sign; any other `=` is an error.
fn unescape_name(name: &str) -> Result<String, SecurityError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => {
                return Err(SecurityError::Malformed(
                    "a SCRAM user name escapes only ',' and '='".into(),
                ));
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(SecurityError::Malformed(
            "a SCRAM user name is not empty".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's side of the exchange, written from RFC 5802 for the tests.
    fn client_final(
        mechanism: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let mut salt = None;
        let mut iterations = 0;
        let mut nonce = "";
        for attribute in server_first.split(',') {
            match attribute.split_at(2) {
                ("r=", n) => nonce = n,
                ("s=", s) => salt = BASE64.decode(s).ok(),
                ("i=", i) => iterations = i.parse().unwrap_or(0),
                _ => {}
            }
        }
        let salted =
            mechanism.salted_password(password.as_bytes(), &salt.unwrap_or_default(), iterations);
        let client_key = mechanism.hmac_of(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mechanism.hmac_of(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = mechanism.hmac_of(&salted, b"Server Key");
        (
            format!("{without_proof},p={}", BASE64.encode(proof)),
            mechanism.hmac_of(&server_key, auth.as_bytes()),
        )
    }

    #[test]
    fn rfc_7677s_example_credential_verifies_its_password() {
        // RFC 7677 section 3: user "user", password "pencil", salt and 4096 iterations.
        let salt = BASE64
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap_or_default();
        let salted = Mechanism::Sha256.salted_password(b"pencil", &salt, 4096);
        let credential =
            Credential::from_salted_password(Mechanism::Sha256, &salted, salt, 4096).unwrap();
        assert!(credential.verifies(Mechanism::Sha256, "pencil"));
        assert!(!credential.verifies(Mechanism::Sha256, "pencil!"));
        // The RFC's client proof for its nonces, checked by the server's own arithmetic.
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let signature = Mechanism::Sha256.hmac_of(&credential.server_key, auth.as_bytes());
        assert_eq!(
            BASE64.encode(signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn an_exchange_authenticates_the_right_password_only() {
        for mechanism in Mechanism::ALL {
            let credential = Credential::from_password(mechanism, "s3cret", 4096).unwrap();
            for (password, ok) in [("s3cret", true), ("wrong", false)] {
                let mut server = ScramServer::new(mechanism);
                let bare = "n=alice,r=abcdef";
                let Ok(Step::Continue(first)) = server.step(format!("n,,{bare}").as_bytes(), |u| {
                    (u == "alice").then(|| credential.clone())
                }) else {
                    panic!("no challenge")
                };
                let first = String::from_utf8(first).unwrap();
                assert!(first.starts_with("r=abcdef"), "{first}");
                let (last, signature) = client_final(mechanism, password, bare, &first);
                match server.step(last.as_bytes(), |_| None) {
                    Ok(Step::Authenticated { user, message }) => {
                        assert!(ok);
                        assert_eq!(user, "alice");
                        assert_eq!(
                            message,
                            format!("v={}", BASE64.encode(signature)).into_bytes()
                        );
                    }
                    Err(SecurityError::AuthenticationFailed { .. }) => assert!(!ok),
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn unknown_users_and_malformed_messages_fail_without_telling_why() {
        let mut server = ScramServer::new(Mechanism::Sha512);
        let Ok(Step::Continue(first)) = server.step(b"n,,n=nobody,r=xyz", |_| None) else {
            panic!("an unknown user is challenged like a known one")
        };
        let first = String::from_utf8(first).unwrap();
        let (last, _) = client_final(Mechanism::Sha512, "any", "n=nobody,r=xyz", &first);
        assert!(matches!(
            server.step(last.as_bytes(), |_| None),
            Err(SecurityError::AuthenticationFailed { .. })
        ));
        for garbage in [
            &b"\xff\xfe"[..],
            b"",
            b"p=tls-unique,,n=a,r=b",
            b"n,,r=b",
            b"n,,n=a",
            b"n,,n=a=,r=b",
            b"n,,m=x,n=a,r=b",
            b"n,,n=a,r=b,tokenauth=true",
            b"n,a=other,n=a,r=b",
        ] {
            let mut server = ScramServer::new(Mechanism::Sha256);
            assert!(
                server.step(garbage, |_| None).is_err(),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
        assert_eq!(unescape_name("a=2Cb=3Dc").unwrap(), "a,b=c");
    }

    proptest::proptest! {
        /// Whatever a client sends, in either step, the exchange answers or fails; it never
        /// panics, and nothing but the right proof authenticates.
        #[test]
        fn random_messages_never_panic_or_authenticate(
            first in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            last in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            prefix in proptest::prelude::any::<bool>(),
        ) {
            let credential = Credential::from_password(Mechanism::Sha256, "pw", 4096).unwrap();
            let mut server = ScramServer::new(Mechanism::Sha256);
            let first = if prefix {
                [b"n,,n=u,r=".as_slice(), &first].concat()
            } else {
                first
            };
            if server.step(&first, |_| Some(credential.clone())).is_ok() {
                let last = [b"c=biws,r=".as_slice(), &last].concat();
                let outcome = server.step(&last, |_| Some(credential.clone()));
                let authenticated = matches!(outcome, Ok(Step::Authenticated { .. }));
                proptest::prop_assert!(!authenticated);
            }
        }
    }

    #[test]
    fn credentials_keep_kafkas_iteration_bounds() {
        assert!(Credential::from_password(Mechanism::Sha256, "p", 4095).is_err());
        assert!(Credential::from_password(Mechanism::Sha256, "p", 16385).is_err());
        let credential = Credential::from_password(Mechanism::Sha256, "p", 4096).unwrap();
        assert!(!format!("{credential:?}").contains("stored_key"));
    }
}

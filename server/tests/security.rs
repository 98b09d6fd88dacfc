//! Security end to end against the `eddy` binary, with real clients and certificates the test
//! makes: kcat and confluent-kafka over SASL_SSL with SCRAM, kafka-python over SASL_PLAINTEXT
//! with PLAIN, a Kafka admin client creating a user with AlterUserScramCredentials, curl over
//! HTTPS with HTTP Basic; and hostile input at the secured doors (requests before
//! authentication, garbage and oversized SASL tokens, plaintext to a TLS port, a TLS handshake
//! that never finishes), after which the server still serves.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

mod common;

use common::wire::Wire;

/// A server with TLS, SASL listeners beside a loopback plaintext one, HTTP Basic on HTTPS, and
/// the users `admin` (a super user) and `alice`, made with `eddy users add` as an operator would.
struct Secured {
    server: common::Server,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

fn add_user(data: &Path, name: &str, password: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["users", "add", name, "--data-dir"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "eddy users add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A secured server checking authentication only (`--authorizer none`), for the tests of
/// signing in.
fn start() -> Secured {
    start_with(&["--authorizer", "none"])
}

/// A secured server with `extra` flags.
fn start_with(extra: &[&str]) -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params.is_ca = rcgen::IsCa::NoCa;
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    add_user(&data, "admin", "admin-secret");
    add_user(&data, "alice", "alice-secret");
    let server = common::start_in(
        &data,
        &[
            "--kafka-listen",
            "127.0.0.1:0,SASL_SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
            "--listen",
            "https://127.0.0.1:0",
            "--schema-registry-listen",
            "https://127.0.0.1:0",
            "--http-auth",
            "basic",
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
            "--super-users",
            "User:admin",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    );
    Secured {
        server,
        ca: cert_path,
        _dir: dir,
    }
}

/// kcat over SASL_SSL with SCRAM-SHA-512 as `user`; its exit status, stdout and stderr.
fn kcat(
    s: &Secured,
    user: &str,
    password: &str,
    args: &[&str],
    input: &str,
) -> (bool, String, String) {
    let mut child = Command::new(common::tools::kcat())
        .args(["-b", &s.server.kafka_listener("SASL_SSL")])
        .args([
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            "sasl.mechanisms=SCRAM-SHA-512",
        ])
        .args(["-X", &format!("sasl.username={user}")])
        .args(["-X", &format!("sasl.password={password}")])
        .args(["-X", &format!("ssl.ca.location={}", s.ca.display())])
        // A refused -L waits out the metadata timeout.
        .args(["-m", if args.contains(&"-L") { "5" } else { "15" }])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(common::tools::python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kcat_authenticates_with_scram_over_tls_and_a_wrong_password_is_refused() {
    let s = start();
    let (ok, _, err) = kcat(
        &s,
        "alice",
        "alice-secret",
        &["-P", "-t", "secure"],
        "one\ntwo\n",
    );
    assert!(ok, "{err}");
    let (ok, out, err) = kcat(
        &s,
        "alice",
        "alice-secret",
        &["-C", "-t", "secure", "-e", "-f", "%s\n"],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "one\ntwo\n");
    let (ok, _, err) = kcat(&s, "alice", "wrong", &["-L"], "");
    assert!(!ok);
    assert!(
        err.contains("Authentication failed during authentication due to invalid credentials"),
        "{err}"
    );
    let (ok, _, err) = kcat(&s, "mallory", "alice-secret", &["-L"], "");
    assert!(!ok);
    assert!(err.contains("Authentication failed"), "{err}");
    let log = s.server.log_tail();
    assert!(log.contains("principal=User:mallory"), "{log}");
    assert!(!log.contains("alice-secret"), "a password reached the log");
}

const CONFLUENT: &str = r#"
import sys
from confluent_kafka import Producer, Consumer
from confluent_kafka.admin import (AdminClient, UserScramCredentialUpsertion,
    ScramCredentialInfo, ScramMechanism)
bootstrap, ca = sys.argv[1], sys.argv[2]
def conf(user, password):
    return {'bootstrap.servers': bootstrap, 'security.protocol': 'SASL_SSL',
            'sasl.mechanisms': 'SCRAM-SHA-512', 'sasl.username': user,
            'sasl.password': password, 'ssl.ca.location': ca}
admin = AdminClient(conf('admin', 'admin-secret'))
upsert = UserScramCredentialUpsertion('carol',
    ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b'carol-secret')
for user, future in admin.alter_user_scram_credentials([upsert]).items():
    future.result()
    print('created', user)
described = admin.describe_user_scram_credentials(['carol'])
for user, future in described.items():
    info = future.result()
    print('described', user, [(str(i.mechanism), i.iterations) for i in info.scram_credential_infos])
# A user who is not a super user may not create users.
alice = AdminClient(conf('alice', 'alice-secret'))
upsert = UserScramCredentialUpsertion('eve',
    ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b'x')
for user, future in alice.alter_user_scram_credentials([upsert]).items():
    try:
        future.result()
        print('alice created', user)
    except Exception as e:
        print('alice refused', e.args[0].name())
from confluent_kafka.admin import (AclBinding, ResourceType, ResourcePatternType,
    AclOperation, AclPermissionType)
grants = [AclBinding(ResourceType.TOPIC, 'confluent-', ResourcePatternType.PREFIXED, 'User:carol',
                     '*', AclOperation.ALL, AclPermissionType.ALLOW),
          AclBinding(ResourceType.GROUP, 'g', ResourcePatternType.LITERAL, 'User:carol',
                     '*', AclOperation.READ, AclPermissionType.ALLOW)]
for binding, future in admin.create_acls(grants).items():
    future.result()
producer = Producer(conf('carol', 'carol-secret'))
for i in range(3):
    producer.produce('confluent-secure', key=b'k%d' % i, value=b'v%d' % i)
producer.flush(15)
consumer = Consumer(dict(conf('carol', 'carol-secret'), **{'group.id': 'g',
    'auto.offset.reset': 'earliest'}))
consumer.subscribe(['confluent-secure'])
seen = []
while len(seen) < 3:
    m = consumer.poll(15)
    if m is None:
        break
    if m.error():
        raise Exception(m.error())
    seen.append(m.value().decode())
consumer.close()
print('consumed', ' '.join(seen))
"#;

#[test]
fn confluent_kafka_creates_a_user_with_alter_user_scram_credentials_and_uses_it() {
    let s = start_with(&[]);
    let out = python(
        CONFLUENT,
        &[&s.server.kafka_listener("SASL_SSL"), s.ca.to_str().unwrap()],
    );
    assert_eq!(
        out,
        "created carol\n\
         described carol [('ScramMechanism.SCRAM_SHA_512', 8192)]\n\
         alice refused CLUSTER_AUTHORIZATION_FAILED\n\
         consumed v0 v1 v2\n"
    );
}

const KAFKA_PYTHON: &str = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer
from kafka.errors import KafkaError
bootstrap = sys.argv[1]
def conf(password):
    return dict(bootstrap_servers=bootstrap, security_protocol='SASL_PLAINTEXT',
                sasl_mechanism='PLAIN', sasl_plain_username='alice',
                sasl_plain_password=password)
producer = KafkaProducer(**conf('alice-secret'))
for i in range(3):
    producer.send('plain-secure', value=b'p%d' % i)
producer.flush()
producer.close()
consumer = KafkaConsumer('plain-secure', auto_offset_reset='earliest',
                         consumer_timeout_ms=5000, **conf('alice-secret'))
print('consumed', ' '.join(m.value.decode() for m in consumer))
consumer.close()
try:
    # A fixed api_version skips kafka-python's version probe, which retries for ~30 s.
    refused = KafkaProducer(max_block_ms=5000, api_version=(2, 5), **conf('wrong'))
    refused.send('plain-secure', value=b'never').get(timeout=10)
    print('wrong password accepted')
except KafkaError as e:
    # kafka-python retries the bootstrap broker until it gives up.
    print('wrong password refused')
"#;

#[test]
fn kafka_python_authenticates_with_plain() {
    let s = start();
    let out = python(KAFKA_PYTHON, &[&s.server.kafka_listener("SASL_PLAINTEXT")]);
    assert_eq!(out, "consumed p0 p1 p2\nwrong password refused\n");
    let log = s.server.log_tail();
    assert!(
        log.contains("principal=User:alice mechanism=\"PLAIN\"")
            && log.contains("failed to authenticate"),
        "{log}"
    );
}

/// curl over HTTPS; the status code and body.
fn curl(s: &Secured, address: &str, path: &str, user: Option<&str>) -> (u16, String) {
    let mut command = Command::new(common::tools::curl());
    command
        .args([
            "-s",
            "--cacert",
            s.ca.to_str().unwrap(),
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!(
            "https://localhost:{}{path}",
            address.rsplit(':').next().unwrap()
        ));
    if let Some(user) = user {
        command.args(["-u", user]);
    }
    let out = command.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn https_listeners_ask_for_basic_credentials() {
    let s = start();
    let (http, registry) = (s.server.http.clone(), s.server.registry.clone());
    let (status, body) = curl(&s, &http, "/info", None);
    assert_eq!(status, 401, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error_code"], 40100);
    assert_eq!(curl(&s, &http, "/info", Some("alice:wrong")).0, 401);
    let (status, body) = curl(&s, &http, "/info", Some("alice:alice-secret"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("KsqlServerInfo"));
    // Load balancers probe /healthcheck without credentials, as with ksqlDB.
    assert_eq!(curl(&s, &http, "/healthcheck", None).0, 200);
    assert_eq!(curl(&s, &http, "/metrics", None).0, 401);
    let (status, body) = curl(&s, &registry, "/subjects", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"error_code\":401"), "{body}");
    assert_eq!(
        curl(&s, &registry, "/subjects", Some("admin:admin-secret")),
        (200, "[]".to_string())
    );
}

#[test]
fn hostile_clients_at_the_secured_doors_are_closed_and_the_server_serves_on() {
    let s = start();
    let sasl = s.server.kafka_listener("SASL_PLAINTEXT");
    // A request other than ApiVersions or SaslHandshake before authentication closes the
    // connection, as Kafka closes it.
    let mut wire = Wire::connect(&sasl);
    let refused =
        wire.try_call::<_, MetadataResponse>(ApiKey::Metadata, 1, &MetadataRequest::default());
    assert!(refused.is_err());
    // SaslHandshake v0, as old clients use it: raw tokens follow, then requests.
    let mut wire = Wire::connect(&sasl);
    let (response, _): (SaslHandshakeResponse, _) = wire.call(
        ApiKey::SaslHandshake,
        0,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    );
    assert_eq!(response.error_code, 0);
    let token = b"\0alice\0alice-secret";
    let mut frame = (token.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(token);
    wire.send_raw(&frame).unwrap();
    assert_eq!(wire.read_raw_frame().unwrap(), b"");
    let (metadata, _): (MetadataResponse, _) =
        wire.call(ApiKey::Metadata, 1, &MetadataRequest::default());
    assert_eq!(metadata.brokers.len(), 1);
    // A mechanism not offered: UNSUPPORTED_SASL_MECHANISM with the list, then closed.
    let mut wire = Wire::connect(&sasl);
    let (response, _): (SaslHandshakeResponse, _) = wire.call(
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("GSSAPI")),
    );
    assert_eq!(response.error_code, 33);
    assert_eq!(response.mechanisms.len(), 3);
    assert!(wire.closed_within(Duration::from_secs(5)));
    // Garbage SCRAM: SASL_AUTHENTICATION_FAILED, then closed.
    for garbage in [
        &b"\xff\x00garbage"[..],
        b"n,,n=,r=",
        b"",
        b"p=tls-server-end-point,,n=a,r=b",
    ] {
        let mut wire = Wire::connect(&sasl);
        let (response, _): (SaslHandshakeResponse, _) = wire.call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256")),
        );
        assert_eq!(response.error_code, 0);
        let (response, _): (SaslAuthenticateResponse, _) = wire.call(
            ApiKey::SaslAuthenticate,
            1,
            &SaslAuthenticateRequest::default()
                .with_auth_bytes(bytes::Bytes::copy_from_slice(garbage)),
        );
        assert_eq!(response.error_code, 58, "{garbage:?}");
        assert!(wire.closed_within(Duration::from_secs(5)));
    }
    // An oversized token before authentication: closed without reading it.
    let mut wire = Wire::connect(&sasl);
    let _ = wire.send_raw(&(64i32 << 20).to_be_bytes());
    assert!(wire.closed_within(Duration::from_secs(5)));
    // Plaintext Kafka to the TLS port: closed.
    let tls = s.server.kafka_listener("SASL_SSL");
    let mut wire = Wire::connect(&tls);
    let refused =
        wire.try_call::<_, MetadataResponse>(ApiKey::Metadata, 1, &MetadataRequest::default());
    assert!(refused.is_err());
    // Plaintext HTTP to the HTTPS port: closed.
    let mut wire = Wire::connect(&s.server.http);
    let _ = wire.send_raw(b"GET /info HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(wire.ends_within(Duration::from_secs(5)));
    // A TLS handshake that never finishes: closed after the handshake timeout (10 s).
    let mut stalled = Wire::connect(&tls);
    let _ = stalled.send_raw(&[0x16, 0x03, 0x01, 0x00]);
    assert!(stalled.ends_within(Duration::from_secs(20)));
    // The server serves on.
    let (ok, _, err) = kcat(&s, "alice", "alice-secret", &["-L"], "");
    assert!(ok, "{err}");
}

#[test]
fn the_repl_signs_in_over_https() {
    let s = start();
    let repl = |credentials: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args([
                "repl",
                "--url",
                &format!(
                    "https://localhost:{}",
                    s.server.http.rsplit(':').next().unwrap()
                ),
            ])
            .args(["--ca-file", s.ca.to_str().unwrap()])
            .args(credentials)
            .args(["-e", "SHOW TOPICS;"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = repl(&["-u", "alice", "-p", "alice-secret"]);
    assert!(ok, "{out}");
    assert!(out.contains("Kafka Topic"), "{out}");
    let (ok, out) = repl(&["-u", "alice", "-p", "wrong"]);
    assert!(!ok);
    assert!(out.contains("refused this user and password"), "{out}");
    let (ok, out) = repl(&[]);
    assert!(!ok);
    assert!(out.contains("asks for a user and password"), "{out}");
}

const ACLS: &str = r#"
import sys
from confluent_kafka import Producer, Consumer, KafkaException
from confluent_kafka.admin import (AdminClient, AclBinding, AclBindingFilter, ResourceType,
    ResourcePatternType, AclOperation, AclPermissionType)
bootstrap, ca = sys.argv[1], sys.argv[2]
def conf(user, password):
    return {'bootstrap.servers': bootstrap, 'security.protocol': 'SASL_SSL',
            'sasl.mechanisms': 'SCRAM-SHA-512', 'sasl.username': user,
            'sasl.password': password, 'ssl.ca.location': ca}
admin = AdminClient(conf('admin', 'admin-secret'))
def allow(kind, name, pattern, operation):
    return AclBinding(kind, name, pattern, 'User:alice', '*', operation, AclPermissionType.ALLOW)
grants = [allow(ResourceType.TOPIC, 'public', ResourcePatternType.LITERAL, AclOperation.READ),
          allow(ResourceType.GROUP, 'readers', ResourcePatternType.LITERAL, AclOperation.READ),
          allow(ResourceType.TOPIC, 'alice-', ResourcePatternType.PREFIXED, AclOperation.ALL)]
for binding, future in admin.create_acls(grants).items():
    future.result()
everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                              AclOperation.ANY, AclPermissionType.ANY)
print('acls', len(admin.describe_acls(everything).result()))
# The super user writes to the topic alice may only read.
producer = Producer(conf('admin', 'admin-secret'))
producer.produce('public', value=b'news')
producer.flush(15)
def produce_as_alice(topic):
    delivered = []
    producer = Producer(dict(conf('alice', 'alice-secret'), **{'message.timeout.ms': 5000}))
    producer.produce(topic, value=b'x',
        on_delivery=lambda err, msg: delivered.append(err.name() if err else 'ok'))
    producer.flush(15)
    return delivered[0] if delivered else 'nothing'
print('alice writes public:', produce_as_alice('public'))
print('alice writes alice-notes:', produce_as_alice('alice-notes'))
def consume_as_alice(group):
    consumer = Consumer(dict(conf('alice', 'alice-secret'), **{'group.id': group,
        'auto.offset.reset': 'earliest'}))
    consumer.subscribe(['public'])
    for _ in range(20):
        m = consumer.poll(1)
        if m is None:
            continue
        consumer.close()
        return m.error().name() if m.error() else m.value().decode()
    consumer.close()
    return 'nothing'
print('alice reads public in readers:', consume_as_alice('readers'))
print('alice reads public in others:', consume_as_alice('others'))
removed = admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, 'public',
    ResourcePatternType.LITERAL, None, None, AclOperation.ANY, AclPermissionType.ANY)])
for f, future in removed.items():
    print('removed', len(future.result()))
print('alice reads public after:', consume_as_alice('readers'))
alice = AdminClient(conf('alice', 'alice-secret'))
# librdkafka drops DescribeAcls' error code and shows no ACLs; the server's log says why.
print('alice sees acls:', len(alice.describe_acls(everything).result()))
"#;

#[test]
fn acls_allow_a_consume_and_deny_a_produce_from_kafka_clients() {
    let s = start_with(&[]);
    let out = python(
        ACLS,
        &[&s.server.kafka_listener("SASL_SSL"), s.ca.to_str().unwrap()],
    );
    assert_eq!(
        out,
        "acls 3\n\
         alice writes public: TOPIC_AUTHORIZATION_FAILED\n\
         alice writes alice-notes: ok\n\
         alice reads public in readers: news\n\
         alice reads public in others: GROUP_AUTHORIZATION_FAILED\n\
         removed 1\n\
         alice reads public after: TOPIC_AUTHORIZATION_FAILED\n\
         alice sees acls: 0\n"
    );
    let log = s.server.log_tail();
    assert!(
        log.contains("principal=User:alice")
            && log.contains("operation=DESCRIBE resource=CLUSTER:kafka-cluster"),
        "{log}"
    );
}

const GRANT: &str = r#"
import sys
from confluent_kafka.admin import (AdminClient, AclBinding, ResourceType, ResourcePatternType,
    AclOperation, AclPermissionType)
admin = AdminClient({'bootstrap.servers': sys.argv[1], 'security.protocol': 'SASL_SSL',
    'sasl.mechanisms': 'SCRAM-SHA-512', 'sasl.username': 'admin',
    'sasl.password': 'admin-secret', 'ssl.ca.location': sys.argv[2]})
principal = sys.argv[5] if len(sys.argv) > 5 else 'User:alice'
grants = [AclBinding(ResourceType.TOPIC, sys.argv[3], ResourcePatternType.LITERAL,
                     principal, '*', getattr(AclOperation, op), AclPermissionType.ALLOW)
          for op in sys.argv[4].split(',')]
for binding, future in admin.create_acls(grants).items():
    future.result()
"#;

/// `POST /ksql` (or another endpoint) over HTTPS as `user`; the status and the body as JSON.
fn post(s: &Secured, path: &str, user: &str, body: &str) -> (u16, serde_json::Value) {
    let out = Command::new(common::tools::curl())
        .args([
            "-s",
            "--cacert",
            s.ca.to_str().unwrap(),
            "-w",
            "\n%{http_code}",
            "-u",
            user,
        ])
        .args([
            "-H",
            "Content-Type: application/vnd.ksql.v1+json",
            "-d",
            body,
        ])
        .arg(format!(
            "https://localhost:{}{path}",
            s.server.http.rsplit(':').next().unwrap()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_string())),
    )
}

#[test]
fn statements_need_the_acls_their_topics_would_need() {
    let s = start_with(&[]);
    let ksql = |user: &str, sql: &str| {
        post(
            &s,
            "/ksql",
            user,
            &serde_json::json!({ "ksql": sql }).to_string(),
        )
    };
    for sql in [
        "CREATE STREAM PUBLIC (ID INT KEY, V STRING) WITH (KAFKA_TOPIC='public', PARTITIONS=1, VALUE_FORMAT='JSON');",
        "CREATE STREAM SECRETS (ID INT KEY, V STRING) WITH (KAFKA_TOPIC='secrets', PARTITIONS=1, VALUE_FORMAT='JSON');",
        "INSERT INTO PUBLIC (ID, V) VALUES (1, 'hello');",
    ] {
        let (status, body) = ksql("admin:admin-secret", sql);
        assert_eq!(status, 200, "{sql}: {body}");
    }
    python(
        GRANT,
        &[
            &s.server.kafka_listener("SASL_SSL"),
            s.ca.to_str().unwrap(),
            "public",
            "READ",
        ],
    );
    let alice = "alice:alice-secret";
    // Listings show what alice may describe (Read implies Describe).
    let (status, body) = ksql(alice, "SHOW STREAMS;");
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body[0]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["PUBLIC"], "{body}");
    // Reading a topic without Read, writing one without Write, terminating without Alter.
    for (sql, says) in [
        (
            "DESCRIBE SECRETS;",
            "Authorization denied to Describe on topic(s): [secrets]",
        ),
        (
            "INSERT INTO PUBLIC (ID, V) VALUES (2, 'x');",
            "Authorization denied to Write on topic(s): [public]",
        ),
        (
            "CREATE STREAM COPY AS SELECT * FROM SECRETS;",
            "Authorization denied to Read on topic(s): [secrets]",
        ),
        (
            "TERMINATE ALL;",
            "Authorization denied to Alter on the cluster",
        ),
    ] {
        let (status, body) = ksql(alice, sql);
        assert_eq!(status, 403, "{sql}: {body}");
        assert_eq!(body["error_code"], 40301, "{sql}: {body}");
        assert_eq!(body["message"], says, "{sql}: {body}");
    }
    let query = |sql: &str| {
        post(
            &s,
            "/query",
            alice,
            &serde_json::json!({ "ksql": sql, "streamsProperties": {"auto.offset.reset": "earliest"} })
                .to_string(),
        )
    };
    let (status, body) = query("SELECT * FROM SECRETS EMIT CHANGES LIMIT 1;");
    assert_eq!(status, 403, "{body}");
    let (status, body) = query("SELECT * FROM PUBLIC EMIT CHANGES LIMIT 1;");
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("hello"), "{body}");
    // /inserts-stream needs Write too.
    let (status, body) = post(
        &s,
        "/inserts-stream",
        alice,
        "{\"target\": \"PUBLIC\"}\n{\"ID\": 3, \"V\": \"y\"}",
    );
    assert_eq!(status, 403, "{body}");
}

#[test]
fn a_client_certificate_names_the_principal_on_an_ssl_listener() {
    // A CA for clients, and alice's certificate from it.
    let files = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::OrganizationName, "Acme");
    name.push(rcgen::DnType::CommonName, "alice");
    params.distinguished_name = name;
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let path = |name: &str| files.path().join(name).to_str().unwrap().to_string();
    std::fs::write(path("client-ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("alice.pem"), cert.pem()).unwrap();
    std::fs::write(path("alice-key.pem"), key.serialize_pem()).unwrap();
    let client_ca = path("client-ca.pem");
    let s = start_with(&[
        "--kafka-listen",
        "SSL://127.0.0.1:0",
        "--tls-client-ca",
        &client_ca,
        "--tls-client-auth",
        "requested",
    ]);
    let (ok, _, err) = kcat(
        &s,
        "admin",
        "admin-secret",
        &["-P", "-t", "certified"],
        "signed\n",
    );
    assert!(ok, "{err}");
    python(
        GRANT,
        &[
            &s.server.kafka_listener("SASL_SSL"),
            s.ca.to_str().unwrap(),
            "certified",
            "READ",
            "User:CN=alice,O=Acme",
        ],
    );
    let consume = |certificate: &[&str]| {
        let out = Command::new(common::tools::kcat())
            .args(["-b", &s.server.kafka_listener("SSL")])
            .args(["-X", "security.protocol=SSL"])
            .args(["-X", &format!("ssl.ca.location={}", s.ca.display())])
            .args(certificate)
            .args([
                "-C",
                "-t",
                "certified",
                "-p",
                "0",
                "-o",
                "beginning",
                "-e",
                "-m",
                "10",
            ])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let certificate = [
        "-X".to_string(),
        format!("ssl.certificate.location={}", path("alice.pem")),
        "-X".to_string(),
        format!("ssl.key.location={}", path("alice-key.pem")),
    ];
    let certificate: Vec<&str> = certificate.iter().map(String::as_str).collect();
    let out = consume(&certificate);
    assert!(out.contains("signed"), "{out}");
    // Without a certificate the client is User:ANONYMOUS, whom no ACL lets read.
    let out = consume(&[]);
    assert!(out.to_lowercase().contains("authorization failed"), "{out}");
}

/// The flags that point a node at the secured server as its Kafka cluster, over SASL_SSL with
/// SCRAM-SHA-512 as `user`.
fn cluster_flags(s: &Secured, user: &str, password: &str) -> Vec<String> {
    [
        "--bootstrap-servers".to_string(),
        s.server.kafka_listener("SASL_SSL"),
    ]
    .into_iter()
    .chain(
        [
            "security.protocol=SASL_SSL".to_string(),
            "sasl.mechanisms=SCRAM-SHA-512".to_string(),
            format!("sasl.username={user}"),
            format!("sasl.password={password}"),
            format!("ssl.ca.location={}", s.ca.display()),
        ]
        .into_iter()
        .flat_map(|property| ["--cluster-property".to_string(), property]),
    )
    .collect()
}

#[test]
fn a_node_reaches_its_kafka_cluster_over_sasl_ssl_and_a_wrong_password_stops_it() {
    let s = start();
    let flags = cluster_flags(&s, "admin", "admin-secret");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let node = common::start_with(&flags);
    let (status, body) = common::ksql(
        &node,
        "CREATE STREAM pays (id STRING KEY, amount INT)
           WITH (kafka_topic='pays', value_format='JSON', partitions=2);
         CREATE STREAM big_pays WITH (kafka_topic='big_pays') AS
           SELECT id, amount FROM pays WHERE amount > 10;
         INSERT INTO pays (id, amount) VALUES ('a', 5);
         INSERT INTO pays (id, amount) VALUES ('b', 50);",
    );
    assert_eq!(status, 200, "{body}\n{}", node.log_tail());
    // The query's output is on the secured cluster, where an authenticated client reads it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, err) = kcat(
            &s,
            "admin",
            "admin-secret",
            &["-C", "-t", "big_pays", "-e", "-q", "-f", "%k=%s\n"],
            "",
        );
        if ok && out == "b={\"AMOUNT\":50}\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{out} {err}\n{}",
            node.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A wrong password: the node does not start, and says why.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["server", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--schema-registry-listen", "off"])
        .args(cluster_flags(&s, "admin", "wrong"))
        .args(["--cluster-timeout-ms", "5000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Kafka cluster"), "{stderr}");
}

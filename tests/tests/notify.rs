//! Notifications, end to end: a real daemon on loopback sends its events to a webhook receiver
//! started by the test (and to a real SMTP server, aiosmtpd), once each, again only when they
//! change or end, and nothing twice across restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use puce_tests::http::Receiver;
use puce_tests::make_tree;
use puce_tests::node::{CHECK_ALL, TestNode, flip_random_bits, pack_files, wait_for};

/// The notifications received for `key`, as (status, title).
fn about(r: &Receiver, key: &str) -> Vec<(String, String)> {
    r.received()
        .iter()
        .filter(|v| v["key"] == key)
        .map(|v| {
            (
                v["status"].as_str().unwrap().to_string(),
                v["title"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn keys(r: &Receiver) -> Vec<String> {
    r.received()
        .iter()
        .map(|v| format!("{} {}", v["status"], v["key"]))
        .collect()
}

/// [`wait_for`], showing `b`'s log and what `hook` received when it times out.
fn wait_logged(b: &TestNode, hook: &Receiver, what: &str, f: impl FnMut() -> bool) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wait_for(what, f)));
    if r.is_err() {
        panic!(
            "timed out waiting for {what}; received:\n{:#?}\nlog:\n{}",
            keys(hook),
            b.log()
        );
    }
}

/// `b`'s `[notify]` (and `[check]` when `check`), evaluated every second.
fn notify_config(b: &mut TestNode, webhook: &Receiver, check: bool) {
    b.extra = format!(
        "[schedule]\ninterval = \"2s\"\n[notify]\nwebhook = \"http://{}/hook\"\ntopic = \"asso-alerts\"\n\
         every = \"1s\"\ngrace = \"1s\"\n{}",
        webhook.addr,
        if check {
            "[check]\ninterval = \"1h\"\nsample = \"100%\"\n"
        } else {
            ""
        }
    );
    b.write_config();
}

/// Start `b` and wait for its notifier's first evaluation after this start.
fn start_and_evaluate(b: &mut TestNode) {
    let before = b.log().matches("notify: first evaluation done").count();
    b.start();
    wait_for("b's notifier to evaluate once", || {
        b.log().matches("notify: first evaluation done").count() > before
    });
}

#[test]
fn each_event_is_sent_once_again_when_it_changes_and_never_twice_across_restarts() {
    let hook = Receiver::start();
    let mut a = TestNode::new("lyon");
    let mut b = TestNode::new("grenoble");
    let mut c = TestNode::new("paris");
    a.add_peer(&b, r#"{ docs = ["pull"] }"#);
    b.add_peer(&a, r#"{ docs = ["push"] }"#);
    b.add_peer(&c, r#"{ docs = ["pull"] }"#);
    c.add_peer(&b, r#"{ docs = ["push"] }"#);
    // lyon and paris check their data, so that their copies can count.
    for n in [&mut a, &mut c] {
        n.extra = CHECK_ALL.into();
        n.write_config();
    }
    let src = a.repo.dir.path().join("src");
    make_tree(&src, 90);
    a.snapshot(&src, "docs");
    a.start();
    a.wait_checked();
    b.sync("lyon", &["--pull"]);
    b.ok(&["space", "set", "docs", "--copies", "3"]);
    notify_config(&mut b, &hook, false);

    // paris is down: no sync of docs with it within the interval plus grace, and the rule is
    // broken (grenoble's data is not checked: no [check]).
    start_and_evaluate(&mut b);
    wait_logged(
        &b,
        &hook,
        "the overdue sync with paris and the broken rule",
        || !about(&hook, "sync/paris/docs").is_empty() && !about(&hook, "replicas/docs").is_empty(),
    );
    let first = hook
        .received()
        .into_iter()
        .find(|v| v["key"] == "sync/paris/docs")
        .unwrap();
    assert_eq!(first["status"], "firing");
    assert_eq!(first["event"], "sync_stale");
    assert_eq!(first["node"], "grenoble");
    assert_eq!(first["topic"], "asso-alerts");
    assert_eq!(first["priority"], 4);
    assert_eq!(
        first["title"],
        "[grenoble] Space 'docs' never synced with paris"
    );
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("expected at least every 2 seconds (plus 1 second of grace)"),
        "{first}"
    );
    let r = &about(&hook, "replicas/docs")[0];
    assert!(r.1.contains("has 1 of the 3 copies"), "{r:?}");

    // (A notification is recorded as sent once delivered: a daemon killed in between sends it
    // again, at least once being the guarantee. Wait for the record before killing.)
    wait_for("notify.json to record what was sent", || {
        let st = fs::read_to_string(b.node_dir().join("notify.json")).unwrap_or_default();
        st.contains("sync/paris/docs") && st.contains("replicas/docs")
    });

    // Killed, damaged, restarted with a check: the crash and the damage (healed from lyon)
    // are sent; the rule changes (grenoble's copy now counts), so it is sent again.
    b.kill9();
    let mut packs = pack_files(&b.repo.path());
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    flip_random_bits(packs.last().unwrap(), 6, 91);
    notify_config(&mut b, &hook, true);
    start_and_evaluate(&mut b);
    wait_logged(
        &b,
        &hook,
        "the crash, the damage and the rule's change",
        || {
            !about(&hook, "damage").is_empty()
                && about(&hook, "replicas/docs").len() == 2
                && hook.received().iter().any(|v| v["event"] == "crash")
        },
    );
    let damage = hook
        .received()
        .into_iter()
        .find(|v| v["key"] == "damage")
        .unwrap();
    assert!(
        damage["title"]
            .as_str()
            .unwrap()
            .contains("Damaged data found and healed"),
        "{damage}"
    );
    assert!(
        damage["message"]
            .as_str()
            .unwrap()
            .contains("Damaged files: docs:"),
        "{damage}"
    );
    assert!(
        about(&hook, "replicas/docs")[1]
            .1
            .contains("has 2 of the 3")
    );

    // Two clean restarts, each evaluated: nothing is sent again (what was sent is in
    // notify.json), and no crash.
    let before = hook.received().len();
    for _ in 0..2 {
        b.stop();
        start_and_evaluate(&mut b);
    }
    assert_eq!(hook.received().len(), before, "{:#?}", keys(&hook));

    // paris comes up: grenoble's next sync with it (after paris's first check) ends both
    // events, each with one message.
    c.start();
    c.wait_checked();
    b.sync("paris", &["--push"]);
    wait_logged(&b, &hook, "the sync and the rule to be resolved", || {
        about(&hook, "sync/paris/docs").len() >= 2 && about(&hook, "replicas/docs").len() >= 3
    });
    let sync = about(&hook, "sync/paris/docs");
    assert_eq!(sync.len(), 2, "{sync:#?}");
    assert_eq!(sync[1].0, "resolved", "{sync:#?}");
    assert_eq!(
        sync[1].1,
        "[grenoble] Resolved: Space 'docs' never synced with paris"
    );
    let rule = about(&hook, "replicas/docs");
    assert_eq!(rule.len(), 3, "{rule:#?}");
    assert_eq!(rule[2].0, "resolved", "{rule:#?}");
    assert_eq!(
        hook.received()
            .iter()
            .filter(|v| v["event"] == "crash")
            .count(),
        1,
        "{:#?}",
        keys(&hook)
    );
    assert_eq!(about(&hook, "sync/paris/docs")[0].0, "firing");
    b.stop();
    c.stop();
    a.stop();
}

/// A real SMTP server on loopback (`python3 -m aiosmtpd`, printing each message it receives).
struct Smtp {
    child: std::process::Child,
    out: std::path::PathBuf,
    port: u16,
}

impl Smtp {
    fn start(dir: &std::path::Path) -> Option<Smtp> {
        let python = puce_tests::require(puce_tests::Need::Aiosmtpd)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = dir.join("smtp.out");
        let child = std::process::Command::new(python)
            .args([
                "-u",
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(dir.join("smtp.err")).unwrap())
            .spawn()
            .unwrap();
        wait_for("the SMTP server to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(Smtp { child, out, port })
    }

    fn received(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_broken_replica_rule_and_the_weekly_digest_are_emailed_once_through_a_real_smtp_server() {
    let mut b = TestNode::new("grenoble");
    let Some(smtp) = Smtp::start(b.repo.dir.path()) else {
        return;
    };
    let src = b.repo.dir.path().join("src");
    make_tree(&src, 95);
    b.snapshot(&src, "docs");
    b.ok(&["space", "set", "docs", "--copies", "2"]);
    b.extra = format!(
        "[notify]\nevery = \"1s\"\ndigest = \"7d\"\n[notify.email]\nserver = \"127.0.0.1\"\nport = {}\n\
         tls = \"none\"\nfrom = \"puce@grenoble.example.org\"\n\
         to = [\"admins@example.org\", \"treasurer@example.org\"]\n",
        smtp.port
    );
    b.write_config();
    start_and_evaluate(&mut b);
    wait_for("the email", || {
        smtp.received().contains("copies its rule wants")
    });
    for _ in 0..2 {
        b.stop();
        start_and_evaluate(&mut b);
    }
    // (Headers longer than a line are folded: unfold them; body lines are wrapped: join them.)
    let mail = smtp
        .received()
        .replace("\r\n", "\n")
        .replace("\n ", " ")
        .replace('\n', " ");
    eprintln!("{mail}");
    assert!(
        mail.contains("Subject: [puce grenoble] Space 'docs' has 0 of the 2 copies its rule wants"),
        "{mail}"
    );
    assert!(mail.contains("From: puce@grenoble.example.org"), "{mail}");
    assert!(mail.contains("admins@example.org") && mail.contains("treasurer@example.org"));
    assert!(mail.contains("See `puce report replicas`."), "{mail}");
    assert!(
        mail.contains("grenoble (the daemon does not check the data"),
        "{mail}"
    );
    // The digest, once a week: the first one with the first evaluation.
    assert!(
        mail.contains("Subject: [puce grenoble] Weekly summary: 1 thing(s) need a person"),
        "{mail}"
    );
    assert!(
        mail.contains(
            "What is safe: - Nothing can be confirmed yet.  What needs a person: - Space 'docs' \
             has 0 of the 2 copies its rule wants"
        ),
        "{mail}"
    );
    assert_eq!(
        mail.matches("Subject:").count(),
        2,
        "each sent once: {mail}"
    );
    b.stop();
}

/// Issue 18's flags reach the admins: a snapshot from lyon dated years ahead that deletes most
/// files is notified as `dated_ahead` and `mass_deletion`, once each.
#[test]
fn a_forged_date_and_a_mass_deletion_are_notified() {
    let hook = Receiver::start();
    let mut a = TestNode::new("lyon");
    let mut b = TestNode::new("grenoble");
    a.add_peer(&b, r#"{ docs = ["pull", "push"] }"#);
    b.add_peer(&a, r#"{ docs = ["pull", "push"] }"#);
    let src = a.repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..10 {
        fs::write(src.join(format!("f{i}")), format!("{i}")).unwrap();
    }
    a.snapshot(&src, "docs");
    for i in 0..9 {
        fs::remove_file(src.join(format!("f{i}"))).unwrap();
    }
    let v = a.json(&[
        "snapshot",
        src.to_str().unwrap(),
        "--space",
        "docs",
        "--time",
        "2031-01-01T00:00:00Z",
    ]);
    let forged = v["id"].as_str().unwrap().to_string();
    notify_config(&mut b, &hook, false);
    start_and_evaluate(&mut b);
    a.sync("grenoble", &["--push"]);
    let (ahead, deleted) = (
        format!("dated_ahead/{forged}"),
        format!("mass_deletion/{forged}"),
    );
    wait_logged(&b, &hook, "the two flags", || {
        !about(&hook, &ahead).is_empty() && !about(&hook, &deleted).is_empty()
    });
    let got = hook.received();
    let msg = |key: &str| got.iter().find(|v| v["key"] == key).unwrap().clone();
    assert_eq!(msg(&deleted)["event"], "mass_deletion");
    assert!(
        msg(&deleted)["message"]
            .as_str()
            .unwrap()
            .contains("holds 1 files; the one before it held 10"),
        "{}",
        msg(&deleted)
    );
    assert!(
        msg(&ahead)["message"]
            .as_str()
            .unwrap()
            .contains("2031-01-01"),
        "{}",
        msg(&ahead)
    );
    // Evaluated again, after a restart too: each sent once.
    b.stop();
    start_and_evaluate(&mut b);
    assert_eq!(about(&hook, &ahead).len(), 1, "{:#?}", keys(&hook));
    assert_eq!(about(&hook, &deleted).len(), 1, "{:#?}", keys(&hook));
    b.stop();
}

/// An SMTP server on loopback (aiosmtpd's `Controller`) that asks for a login, and with `tls`
/// offers STARTTLS with `cert`/`key` and requires it before any command but EHLO. It writes
/// each login attempt and each message (whether it came over TLS) to `log`.
const SMTP_AUTH_SERVER: &str = r#"
import ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
port, log, tls = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "tls"
def write(line):
    with open(log, "a") as f:
        f.write(line + "\n")
def login(server, session, envelope, mechanism, data):
    user, password = data.login.decode(), data.password.decode()
    write(f"AUTH {mechanism} {user} {password} tls={session.ssl is not None}")
    return AuthResult(success=(user, password) == ("puce", "s3cret pass"))
class Handler:
    async def handle_DATA(self, server, session, envelope):
        write(f"MAIL tls={session.ssl is not None} auth={session.authenticated}")
        write(envelope.content.decode("utf-8", "replace"))
        return "250 OK"
kw = dict(hostname="127.0.0.1", port=port, authenticator=login)
if tls:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    kw.update(tls_context=ctx, require_starttls=True, auth_require_tls=True)
else:
    kw.update(auth_require_tls=False)
Controller(Handler(), **kw).start()
write("READY")
while True:
    time.sleep(60)
"#;

/// The server above, killed when dropped.
struct AuthSmtp {
    child: std::process::Child,
    log: std::path::PathBuf,
    port: u16,
}

impl AuthSmtp {
    /// With `tls`: (certificate, key) PEM files.
    fn start(dir: &std::path::Path, name: &str, tls: Option<(&str, &str)>) -> Option<AuthSmtp> {
        let python = puce_tests::require(puce_tests::Need::Aiosmtpd)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join(format!("{name}.log"));
        let mut args = vec![
            "-c".to_string(),
            SMTP_AUTH_SERVER.to_string(),
            port.to_string(),
            log.to_str().unwrap().to_string(),
        ];
        match tls {
            Some((cert, key)) => args.extend(["tls".into(), cert.into(), key.into()]),
            None => args.push("plain".into()),
        }
        let child = std::process::Command::new(python)
            .args(&args)
            .stderr(fs::File::create(dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .unwrap();
        let s = AuthSmtp { child, log, port };
        wait_for("the SMTP server to start", || s.log().contains("READY"));
        Some(s)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AuthSmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[notify.email]` of `b` to a server on loopback `port` with STARTTLS (the default), the
/// login `puce` and its password in a file, and `ca_file` trusted.
fn email_with_login(b: &mut TestNode, port: u16, ca_file: &std::path::Path) {
    let password = b.repo.dir.path().join("smtp-password");
    fs::write(&password, "s3cret pass\nignored second line\n").unwrap();
    b.extra = format!(
        "[notify]\nevery = \"1s\"\n[notify.email]\nserver = \"127.0.0.1\"\nport = {port}\n\
         from = \"puce@grenoble.example.org\"\nto = [\"admins@example.org\"]\n\
         username = \"puce\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
        password.display(),
        ca_file.display()
    );
    b.write_config();
}

#[test]
fn email_goes_over_starttls_with_the_login_from_the_file_and_never_in_clear() {
    let mut b = TestNode::new("grenoble");
    let dir = b.repo.dir.path().to_path_buf();
    // A certificate of its own for the server (127.0.0.1), trusted through ca_file.
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("smtp-cert.pem"), dir.join("smtp-key.pem"));
    fs::write(&cert, ck.cert.pem()).unwrap();
    fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tls = Some((cert.to_str().unwrap(), key.to_str().unwrap()));
    let Some(smtp) = AuthSmtp::start(&dir, "smtp-tls", tls) else {
        return;
    };
    let src = dir.join("src");
    make_tree(&src, 96);
    b.snapshot(&src, "docs");
    b.ok(&["space", "set", "docs", "--copies", "2"]);
    email_with_login(&mut b, smtp.port, &cert);
    start_and_evaluate(&mut b);
    wait_for("the email over STARTTLS", || smtp.log().contains("MAIL "));
    let log = smtp.log();
    eprintln!("{log}");
    // The login from the file (its first line), after STARTTLS, and the message with it.
    assert!(
        log.contains("AUTH LOGIN puce s3cret pass tls=True")
            || log.contains("AUTH PLAIN puce s3cret pass tls=True"),
        "{log}"
    );
    assert!(!log.contains("tls=False"), "{log}");
    assert!(log.contains("MAIL tls=True auth=True"), "{log}");
    assert!(log.contains("copies its rule wants"), "{log}");
    b.stop();

    // A server that offers no STARTTLS: nothing is sent, the password least of all.
    let Some(plain) = AuthSmtp::start(&dir, "smtp-plain", None) else {
        return;
    };
    // (The event was sent: a new state of it is needed to send again.)
    b.ok(&["space", "set", "docs", "--copies", "3"]);
    email_with_login(&mut b, plain.port, &cert);
    start_and_evaluate(&mut b);
    wait_for("the refusal in the daemon's log", || {
        b.log().contains("cannot send") && b.log().contains("by email")
    });
    let refused = b.log();
    let line = refused
        .lines()
        .find(|l| l.contains("cannot send"))
        .unwrap()
        .to_string();
    eprintln!("{line}");
    assert!(
        line.contains(&format!("email via 127.0.0.1:{}", plain.port)),
        "{line}"
    );
    let log = plain.log();
    assert!(!log.contains("AUTH") && !log.contains("MAIL"), "{log}");
    b.stop();
}

/// A peer's quota 90 % used and a push it refused are both notified by the holder's daemon
/// (events `quota` and `quota_refused`, docs/guide.md, "Notifications").
#[test]
fn a_quota_nearly_used_and_a_refused_push_are_notified() {
    let hook = Receiver::start();
    // Small chunks on both nodes (they must chunk alike), so the refusal comes within 64 KiB
    // of the quota: over 90 % used.
    let small = || {
        puce_tests::TestRepo::with_init(&[
            "--chunk-min",
            "16384",
            "--chunk-avg",
            "32768",
            "--chunk-max",
            "65536",
        ])
    };
    let mut a = TestNode::with("lyon", small(), "127.0.0.1", None);
    let mut b = TestNode::with("grenoble", small(), "127.0.0.1", None);
    a.add_peer(&b, r#"{ docs = ["pull"] }"#);
    b.add_peer(&a, "{ docs = [\"push\"] }\nquota = \"6 MiB\"");
    let src = a.repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        fs::write(
            src.join(format!("f{i}.bin")),
            puce_tests::random_bytes(1 << 20, i + 1),
        )
        .unwrap();
    }
    a.snapshot(&src, "docs");
    notify_config(&mut b, &hook, false);
    // Quota use is part of the repository figures, recomputed every `[metrics] refresh`.
    b.extra.push_str(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{}\"\nrefresh = \"1s\"\n",
        puce_tests::node::free_port()
    ));
    b.write_config();
    start_and_evaluate(&mut b);
    let err = a.sync_fails("grenoble", &[]);
    assert!(err.contains("quota exceeded"), "{err}");
    wait_logged(&b, &hook, "the two quota events", || {
        !about(&hook, "quota/peer/lyon").is_empty()
            && !about(&hook, "quota_refused/lyon").is_empty()
    });
    let got = hook.received();
    let msg = |key: &str| got.iter().find(|v| v["key"] == key).unwrap().clone();
    let used = msg("quota/peer/lyon");
    assert_eq!(used["event"], "quota", "{used}");
    assert!(
        used["message"]
            .as_str()
            .unwrap()
            .contains("of its quota of 6.0 MiB"),
        "{used}"
    );
    let refused = msg("quota_refused/lyon");
    assert_eq!(refused["event"], "quota_refused", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("quota exceeded"),
        "{refused}"
    );
    b.stop();
}

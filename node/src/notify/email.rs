//! Email notifications: SMTP submission with STARTTLS required (lettre over rustls), the
//! password read from a file at each sending, the server's certificate checked against the
//! usual roots and `ca_file` if given.

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::EmailConfig;
use crate::error::{Error, ErrorKind, Result};

fn err(e: &EmailConfig, what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Network,
        format!("email via {}:{}: {what}", e.server, e.port),
    )
}

/// Send one message to every recipient of `e`.
pub async fn send(e: &EmailConfig, subject: &str, body: &str) -> Result<()> {
    let mut m = Message::builder()
        .from(e.from.parse().map_err(|x| {
            Error::new(
                ErrorKind::Config,
                format!("[notify.email] from = {:?}: {x}", e.from),
            )
        })?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &e.to {
        m = m.to(to.parse().map_err(|x| {
            Error::new(ErrorKind::Config, format!("[notify.email] to: {to:?}: {x}"))
        })?);
    }
    let m = m.body(body.to_string()).map_err(|x| err(e, x))?;
    let mut t = if e.starttls {
        let mut tls = TlsParameters::builder(e.server.clone());
        if let Some(file) = &e.ca_file {
            let pem = std::fs::read(file).map_err(|x| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "cannot read the CA file {} ([notify.email] ca_file): {x}",
                        file.display()
                    ),
                )
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|x| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "{} ([notify.email] ca_file) holds no PEM certificate: {x}",
                        file.display()
                    ),
                )
            })?;
            tls = tls.add_root_certificate(cert);
        }
        // STARTTLS required: nothing, credentials least of all, is sent before TLS is up.
        let tls = tls.build().map_err(|x| err(e, x))?;
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&e.server).tls(Tls::Required(tls))
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&e.server)
    }
    .port(e.port)
    .timeout(Some(super::SEND_TIMEOUT));
    if let (Some(user), Some(file)) = (&e.username, &e.password_file) {
        let text = std::fs::read_to_string(file).map_err(|x| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "cannot read the SMTP password file {} ([notify.email] password_file): {x}",
                    file.display()
                ),
            )
        })?;
        let password = text.lines().next().unwrap_or_default().to_string();
        t = t.credentials(Credentials::new(user.clone(), password));
    }
    t.build().send(m).await.map_err(|x| err(e, x))?;
    Ok(())
}

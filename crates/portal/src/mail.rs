//! Email for the portal's account flows (sign-up confirmation, password reset), through an SMTP
//! server given as a URL: `smtp://[user:password@]host[:port]` (plain, e.g. a local relay),
//! `smtp://…?tls=starttls` (STARTTLS), or `smtps://…` (TLS from the start).
//!
//! Invariant: the URL's password is never logged or shown; a failure to send is logged without
//! the message's links (they are credentials) and reported to the visitor as "try again".

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mailer(from {})", self.from)
    }
}

impl Mailer {
    /// A mailer for `url`, sending as `from`. The error names what is wrong, never the password.
    pub fn new(url: &str, from: &str) -> Result<Mailer, String> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| format!("the SMTP URL is not a URL: {e}"))?;
        let host = parsed
            .host_str()
            .ok_or("the SMTP URL has no host")?
            .to_string();
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let mut builder = match (parsed.scheme(), tls.as_deref()) {
            ("smtps", _) => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&host).map_err(|e| e.to_string())?
            }
            ("smtp", Some("starttls")) => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
                    .map_err(|e| e.to_string())?
            }
            ("smtp", None) => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
            (scheme, _) => {
                return Err(format!(
                    "the SMTP URL must start with smtp:// or smtps://, not {scheme}://"
                ));
            }
        };
        if let Some(port) = parsed.port() {
            builder = builder.port(port);
        }
        if !parsed.username().is_empty() {
            let user = percent_encoding::percent_decode_str(parsed.username())
                .decode_utf8_lossy()
                .into_owned();
            let pass = percent_encoding::percent_decode_str(parsed.password().unwrap_or_default())
                .decode_utf8_lossy()
                .into_owned();
            builder = builder.credentials(Credentials::new(user, pass));
        }
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("the sender address '{from}' is not valid: {e}"))?;
        Ok(Mailer {
            transport: builder
                .timeout(Some(std::time::Duration::from_secs(15)))
                .build(),
            from,
        })
    }

    /// Sends a plain-text message.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), String> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("the address is not valid: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .body(body)
            .map_err(|e| e.to_string())?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| {
            tracing::warn!(target: "gatehouse::portal", error = %e, "an email could not be sent");
            "the email could not be sent".to_string()
        })
    }
}

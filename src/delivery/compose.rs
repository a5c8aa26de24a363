//! Building messages with lettre: multipart/alternative (text first, then
//! HTML), Date, a Message-ID on the sender's domain, From and Reply-To from
//! the settings, and extra headers (List-Unsubscribe, Feedback-ID, …).
//! Addresses arrive as parsed values and header text is encoded by lettre,
//! so nothing a person typed can break a header.
//!
//! [`Composer`] is the one path every outgoing message takes at send time,
//! digests and transactional mail alike: the same headers, the same DKIM
//! signature, and an envelope chosen per message.

use std::sync::Arc;

use lettre::address::Envelope;
use lettre::message::dkim::DkimConfig;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MessageBuilder, MultiPart};
use lettre::{Address, Message};

use crate::config::Settings;
use crate::subscribers::links::LinkKey;

/// Per-recipient placeholders in shared digest bodies, replaced at send time.
pub const PLACEHOLDER_UNSUBSCRIBE_URL: &str = "%%CASEWIRE_UNSUBSCRIBE_URL%%";
pub const PLACEHOLDER_PREFERENCES_URL: &str = "%%CASEWIRE_PREFERENCES_URL%%";

/// `s` with the placeholders replaced by a recipient's links (headers,
/// previews; bodies are filled already encoded, see `prepared`).
pub fn fill_links(s: &str, unsubscribe: &str, preferences: &str) -> String {
    s.replace(PLACEHOLDER_UNSUBSCRIBE_URL, unsubscribe)
        .replace(PLACEHOLDER_PREFERENCES_URL, preferences)
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error(transparent)]
    Dkim(#[from] super::dkim::DkimKeyError),
    #[error(transparent)]
    LinkKey(#[from] crate::subscribers::links::LinkKeyError),
    #[error("envelope: {0}")]
    Envelope(String),
}

/// A message ready for the transport: who the SMTP transaction is from and
/// to, and the signed bytes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub envelope: Envelope,
    pub bytes: Vec<u8>,
}

/// Composes and signs every message at send time. Built once per worker.
pub struct Composer {
    from: Mailbox,
    reply_to: Option<Mailbox>,
    dkim: Option<DkimConfig>,
    links: Arc<LinkKey>,
}

impl Composer {
    /// Reads the DKIM key (when `[mail] dkim` is set) and the link key
    /// (created on first use).
    pub fn new(settings: &Settings) -> Result<Self, ComposeError> {
        let mail = &settings.mail;
        let from: Mailbox = mail
            .from
            .parse()
            .map_err(|_| ComposeError::Address(mail.from.clone()))?;
        let reply_to = mail.reply_to.as_deref().and_then(|r| r.parse().ok());
        let dkim = match &mail.dkim {
            Some(d) => Some(super::dkim::DkimKey::load(d)?.config),
            None => None,
        };
        let links = LinkKey::load_or_create(&settings.database.key_file)?;
        Ok(Self {
            from,
            reply_to,
            dkim,
            links,
        })
    }

    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// The key that signs the links in messages.
    pub fn links(&self) -> &LinkKey {
        &self.links
    }

    /// The envelope sender of a message to `to`. Every message gets its own
    /// envelope, so a per-recipient (VERP) bounce address fits in here.
    pub fn envelope(&self, to: &Address) -> Result<Envelope, ComposeError> {
        Envelope::new(Some(self.from.email.clone()), vec![to.clone()])
            .map_err(|e| ComposeError::Envelope(e.to_string()))
    }

    /// From, To, Subject, Date, Message-ID (on the sender's domain) and Reply-To.
    /// The envelope is given to lettre here, which spares it deriving one
    /// by parsing the From and To headers back out of their text.
    pub fn headers(&self, to: Mailbox, subject: String) -> Result<MessageBuilder, ComposeError> {
        let mut builder = Message::builder()
            .envelope(self.envelope(&to.email)?)
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .date_now()
            .message_id(Some(message_id(self.from.email.domain())));
        if let Some(r) = &self.reply_to {
            builder = builder.reply_to(r.clone());
        }
        Ok(builder)
    }

    /// Signs `message` (when DKIM is configured) and pairs it with its
    /// envelope (the one [`Composer::headers`] gave it).
    pub fn finish(&self, mut message: Message) -> Outgoing {
        if let Some(config) = &self.dkim {
            message.sign(config);
        }
        Outgoing {
            envelope: message.envelope().clone(),
            bytes: message.formatted(),
        }
    }

    /// A transactional message (confirmation, "already subscribed",
    /// welcome, manage link).
    pub fn transactional(
        &self,
        to: Address,
        name: &str,
        mail: &crate::subscribers::RenderedMail,
    ) -> Result<Outgoing, ComposeError> {
        let mailbox = Mailbox::new(Some(name.to_owned()).filter(|n| !n.is_empty()), to);
        self.compose(
            mailbox,
            &mail.subject,
            &mail.text,
            &mail.html,
            // RFC 3834: keeps vacation responders from answering.
            &[ExtraHeader {
                name: "Auto-Submitted",
                value: "auto-generated".into(),
            }],
        )
    }

    /// A whole message from its parts: the common headers, `extra` headers,
    /// a text and an HTML alternative; signed.
    pub fn compose(
        &self,
        to: Mailbox,
        subject: &str,
        text: &str,
        html: &str,
        extra: &[ExtraHeader],
    ) -> Result<Outgoing, ComposeError> {
        let mut builder = self.headers(to, subject.to_owned())?;
        for h in extra {
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(h.name),
                h.value.clone(),
            ));
        }
        let message = builder.multipart(MultiPart::alternative_plain_html(
            text.to_owned(),
            html.to_owned(),
        ))?;
        Ok(self.finish(message))
    }
}

/// An extra header; `name` must be a static ASCII header name.
#[derive(Debug, Clone)]
pub struct ExtraHeader {
    pub name: &'static str,
    pub value: String,
}

/// The domain of the From address, for Message-IDs.
pub fn sender_domain(settings: &Settings) -> String {
    settings
        .mail
        .from
        .parse::<Mailbox>()
        .map(|m| m.email.domain().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// One recipient's links and list headers in a digest.
#[derive(Debug, Clone)]
pub struct DigestVars {
    pub unsubscribe_url: String,
    pub preferences_url: String,
    /// List-Unsubscribe (HTTPS one-click and mailto), List-Unsubscribe-Post,
    /// List-Id, Feedback-ID and List-Archive (RFC 2369: the edition's public archive).
    pub headers: [ExtraHeader; 5],
}

/// The list headers of a digest that are the same for every recipient of
/// an edition (List-Unsubscribe-Post, List-Id, Feedback-ID, List-Archive):
/// made once per edition by a sending worker, not once per message.
#[derive(Debug, Clone)]
pub struct EditionHeaders {
    shared: [ExtraHeader; 4],
}

impl EditionHeaders {
    pub fn new(settings: &Settings, from: &Mailbox, edition: &str) -> Self {
        let domain = from.email.domain();
        let name = settings
            .editions
            .iter()
            .find(|e| e.slug.as_str() == edition)
            .map_or(edition, |e| e.name.as_str());
        Self {
            shared: [
                ExtraHeader {
                    name: "List-Unsubscribe-Post",
                    value: "List-Unsubscribe=One-Click".into(),
                },
                ExtraHeader {
                    name: "List-Id",
                    value: format!(
                        "\"{}\" <{edition}.{domain}>",
                        name.replace(['"', '\\', '\r', '\n'], "")
                    ),
                },
                ExtraHeader {
                    name: "Feedback-ID",
                    value: format!("{edition}:digest:casewire:{domain}"),
                },
                ExtraHeader {
                    name: "List-Archive",
                    value: format!(
                        "<{}>",
                        crate::editions::archive::index_url(settings, edition)
                    ),
                },
            ],
        }
    }

    /// A recipient's links and list headers, from their manage `token`.
    pub fn vars(&self, settings: &Settings, from: &Mailbox, token: &str) -> DigestVars {
        let base = &settings.site.base_url;
        let link = |path: &str| {
            base.join(&format!("{path}/{token}"))
                .map(String::from)
                .unwrap_or_default()
        };
        let unsubscribe_url = link("unsubscribe");
        let preferences_url = link("preferences");
        let list_unsubscribe = ExtraHeader {
            name: "List-Unsubscribe",
            value: format!(
                "<{unsubscribe_url}>, <mailto:{}?subject=unsubscribe%20{token}>",
                from.email
            ),
        };
        let [post, id, feedback, archive] = self.shared.clone();
        DigestVars {
            unsubscribe_url,
            preferences_url,
            headers: [list_unsubscribe, post, id, feedback, archive],
        }
    }
}

/// The links and list headers of a digest of `edition` for the recipient
/// whose manage token is `token`. Outbox rows keep only the token; this runs
/// at send time, so a row stays small through its three writes.
pub fn digest_vars(settings: &Settings, from: &Mailbox, edition: &str, token: &str) -> DigestVars {
    EditionHeaders::new(settings, from, edition).vars(settings, from, token)
}

/// A fresh Message-ID on `domain` (the sender's, see [`sender_domain`]).
pub fn message_id(domain: &str) -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("<{}@{domain}>", hex::encode(bytes))
}

//! Per-message composition: turns a claimed outbox row into the signed bytes
//! and envelope of one SMTP transaction. Digests are a shared prepared body
//! plus the recipient's links, signed now; transactional mail is rendered
//! from its row's vars. Everything goes through the one [`Composer`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::Mailbox;

use super::compose::{fill_links, Composer, EditionHeaders, Outgoing};
use super::prepared::{Links, PreparedBody};
use crate::config::Settings;
use crate::store::outbox::{self, ClaimedRow, Kind};
use crate::store::Db;

/// Why a row could not be built.
pub(super) enum BuildError {
    /// The store failed (retry later).
    Store(String),
    /// The row can never become a message (dead).
    Invalid(String),
}

/// Builds every message of one worker; caches digest bodies by id.
pub(super) struct MessageBuilder {
    db: Db,
    settings: Arc<Settings>,
    composer: Composer,
    /// A std Mutex: held only to look up or insert, never across an await.
    bodies: std::sync::Mutex<HashMap<i64, Arc<PreparedBody>>>,
    /// The list headers shared by every digest of an edition, by edition.
    editions: std::sync::Mutex<HashMap<String, Arc<EditionHeaders>>>,
    /// VERP envelope senders, when a return path is configured.
    verp: Option<crate::bounces::verp::Senders>,
}

impl MessageBuilder {
    pub(super) fn new(db: Db, settings: Arc<Settings>) -> anyhow::Result<Self> {
        Ok(Self {
            composer: Composer::new(&settings)?,
            verp: crate::bounces::verp::Senders::from_settings(&settings)?,
            db,
            settings,
            bodies: Default::default(),
            editions: Default::default(),
        })
    }

    /// The message for `row`, with its envelope (VERP when configured).
    pub(super) async fn build(&self, row: &ClaimedRow) -> Result<Outgoing, BuildError> {
        let to = row.recipient.to_lettre();
        let built = match (&row.message, row.body_id) {
            // A finished message queued by an earlier version, sent as it is.
            (Some(m), _) => self
                .composer
                .envelope(&to)
                .map(|envelope| Outgoing {
                    envelope,
                    bytes: m.clone().into_bytes(),
                })
                .map_err(|e| BuildError::Invalid(e.to_string())),
            (None, Some(body_id)) => self.digest(row, body_id, to).await,
            (None, None) => self.transactional(row, to),
        }?;
        let Some(verp) = &self.verp else {
            return Ok(built);
        };
        // The envelope sender names the row, so a bounce finds it.
        let envelope = verp
            .for_row(row.id)
            .map_err(|e| e.to_string())
            .and_then(|from| {
                Envelope::new(Some(from), built.envelope.to().to_vec()).map_err(|e| e.to_string())
            })
            .map_err(|e| BuildError::Invalid(format!("envelope: {e}")))?;
        Ok(Outgoing { envelope, ..built })
    }

    /// The list headers shared by every digest of `edition` (made on first use).
    fn edition_headers(&self, edition: &str) -> Arc<EditionHeaders> {
        let mut editions = self.editions.lock().expect("not poisoned");
        if let Some(h) = editions.get(edition) {
            return h.clone();
        }
        let h = Arc::new(EditionHeaders::new(
            &self.settings,
            self.composer.from(),
            edition,
        ));
        editions.insert(edition.to_owned(), h.clone());
        h
    }

    async fn body(&self, body_id: i64) -> Result<Arc<PreparedBody>, BuildError> {
        let cached = self
            .bodies
            .lock()
            .expect("not poisoned")
            .get(&body_id)
            .cloned();
        if let Some(b) = cached {
            return Ok(b);
        }
        let b = outbox::body(&self.db, body_id)
            .await
            .map_err(|e| BuildError::Store(format!("loading body {body_id}: {e}")))?
            .ok_or_else(|| BuildError::Invalid(format!("body {body_id} does not exist")))?;
        let b = Arc::new(PreparedBody::new(b.subject, &b.text, &b.html));
        self.bodies
            .lock()
            .expect("not poisoned")
            .insert(body_id, b.clone());
        Ok(b)
    }

    async fn digest(
        &self,
        row: &ClaimedRow,
        body_id: i64,
        to: lettre::Address,
    ) -> Result<Outgoing, BuildError> {
        let body = self.body(body_id).await?;
        let vars: DigestRowVars = serde_json::from_str(&row.vars)
            .map_err(|e| BuildError::Invalid(format!("vars are not valid: {e}")))?;
        let signed = match (&vars.token, row.subscriber_id) {
            (None, Some(sid)) => Some(self.composer.links().manage(sid, vars.v.unwrap_or(0))),
            _ => None,
        };
        let token = vars
            .token
            .as_deref()
            .or(signed.as_ref().map(|t| t.as_str()));
        let edition = row.edition.as_deref().unwrap_or("");
        let derived = token.map(|t| {
            self.edition_headers(edition)
                .vars(&self.settings, self.composer.from(), t)
        });
        let unsubscribe = vars
            .unsubscribe_url
            .as_deref()
            .or(derived.as_ref().map(|d| d.unsubscribe_url.as_str()))
            .unwrap_or("");
        let preferences = vars
            .preferences_url
            .as_deref()
            .or(derived.as_ref().map(|d| d.preferences_url.as_str()))
            .unwrap_or("");
        let mut builder = self
            .composer
            .headers(
                Mailbox::new(vars.name.clone().filter(|n| !n.is_empty()), to.clone()),
                body.subject.clone(),
            )
            .map_err(|e| BuildError::Invalid(e.to_string()))?;
        // Headers given in the row (rows of an earlier version) may hold the
        // link placeholders; derived ones are made with the links in them.
        for (name, value) in &vars.headers {
            one_line(name, value)?;
            let header = HeaderName::new_from_ascii(name.clone())
                .map_err(|_| BuildError::Invalid(format!("{name:?} is not a header name")))?;
            builder = builder.raw_header(HeaderValue::new(
                header,
                fill_links(value, unsubscribe, preferences),
            ));
        }
        for h in derived.iter().flat_map(|d| d.headers.iter()) {
            if vars.headers.contains_key(h.name) {
                continue;
            }
            one_line(h.name, &h.value)?;
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(h.name),
                h.value.clone(),
            ));
        }
        let message = builder
            .multipart(body.multipart(&Links::new(unsubscribe, preferences)))
            .map_err(|e| BuildError::Invalid(format!("cannot build the message: {e}")))?;
        Ok(self.composer.finish(message))
    }

    /// A confirmation, "already subscribed", welcome or manage-link row:
    /// rendered from its vars, with its links signed now.
    fn transactional(&self, row: &ClaimedRow, to: lettre::Address) -> Result<Outgoing, BuildError> {
        if row.kind == Kind::Digest {
            return Err(BuildError::Invalid("digest row without a body".into()));
        }
        let subscriber_id = row
            .subscriber_id
            .ok_or_else(|| BuildError::Invalid("transactional row without a subscriber".into()))?;
        let vars: crate::subscribers::MailVars = serde_json::from_str(&row.vars)
            .map_err(|e| BuildError::Invalid(format!("vars are not valid: {e}")))?;
        let mail = crate::subscribers::render_mail(
            &self.settings,
            self.composer.links(),
            subscriber_id,
            &row.recipient,
            &vars,
        )
        .map_err(|e| BuildError::Invalid(format!("rendering the {} mail: {e}", vars.template)))?;
        self.composer
            .transactional(to, &vars.name, &mail)
            .map_err(|e| BuildError::Invalid(e.to_string()))
    }
}

/// A header value must stay on its line: a line break would end the header
/// and let the rest pass as headers or body.
fn one_line(name: &str, value: &str) -> Result<(), BuildError> {
    if value.contains(['\r', '\n']) {
        return Err(BuildError::Invalid(format!(
            "header {name} contains a line break"
        )));
    }
    Ok(())
}

/// Per-recipient values of a digest row (`outbox.vars`).
#[derive(Debug, Default, serde::Deserialize)]
struct DigestRowVars {
    name: Option<String>,
    /// The subscriber's link version: their manage link is signed from it
    /// and the row's subscriber id at send time.
    #[serde(default)]
    v: Option<u32>,
    /// A raw manage token, in rows queued by an earlier version; links and
    /// list headers not given below are derived from it ([`EditionHeaders::vars`]).
    token: Option<String>,
    unsubscribe_url: Option<String>,
    preferences_url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

//! Whose fault a failed delivery is. One pure function from where an SMTP
//! transaction stopped (the stage) and what the server said (reply code and
//! RFC 3463 enhanced status code, or no reply at all) to a [`Fault`]; the
//! worker only acts on the fault. A new reply shape is a new row in the
//! table test below, not a new branch in the worker.

use std::fmt;

/// Where in the SMTP conversation a failure happened. The first five are the
/// session (shared by every message on the connection), the rest are one
/// message's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// TCP connect.
    Connect,
    /// STARTTLS or the implicit TLS handshake.
    Tls,
    /// The server's greeting or its reply to EHLO.
    Greeting,
    /// AUTH.
    Auth,
    /// MAIL FROM: the envelope sender.
    MailFrom,
    /// RCPT TO: one recipient.
    RcptTo,
    /// The DATA command itself (before the content).
    Data,
    /// The reply after the content's final `.`: the server judged the message.
    Content,
}

impl Stage {
    /// The session stages: a failure there is never about one message.
    pub fn is_session(self) -> bool {
        matches!(
            self,
            Stage::Connect | Stage::Tls | Stage::Greeting | Stage::Auth
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Tls => "TLS",
            Stage::Greeting => "greeting/EHLO",
            Stage::Auth => "AUTH",
            Stage::MailFrom => "MAIL FROM",
            Stage::RcptTo => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Content => "end of DATA",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RFC 3463 enhanced status code, `class.subject.detail` (e.g. 5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl Enhanced {
    /// Reads the code at the start of a reply's text (`"5.7.1 Sender
    /// address rejected"`); None when the server gave none.
    pub fn parse(text: &str) -> Option<Enhanced> {
        let word = text.split_whitespace().next()?;
        let mut parts = word.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return None;
        }
        Some(Enhanced {
            class,
            subject,
            detail,
        })
    }
}

/// A server's reply: the three-digit code and its text (which may start
/// with an enhanced code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
        }
    }

    pub fn enhanced(&self) -> Option<Enhanced> {
        Enhanced::parse(&self.text)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Whose fault a failure is, and so what happens to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The relay is unhealthy (unreachable, refusing us or the sender,
    /// closing, silent): delivery pauses, the message goes back to the
    /// queue untouched, nobody is suppressed.
    Relay,
    /// The recipient's address is bad for good: suppress it with the reply.
    Recipient,
    /// The recipient cannot take mail now (4xx to RCPT): retry with backoff.
    RecipientRetry,
    /// The server refused this message's content for good (5xx after
    /// DATA): the row is dead, the address is not suppressed.
    Message,
    /// A temporary failure of this message elsewhere (4xx): retry with backoff.
    Retry,
}

impl Fault {
    /// The label of this class in metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Relay => "relay",
            Fault::Recipient => "recipient",
            Fault::RecipientRetry => "recipient_retry",
            Fault::Message => "message",
            Fault::Retry => "retry",
        }
    }
}

/// The failure policy. `reply` is None when the server gave no reply: the
/// connection failed, dropped, timed out or spoke something that is not SMTP.
pub fn classify(stage: Stage, reply: Option<&Reply>) -> Fault {
    let Some(reply) = reply else {
        // No answer at all, at any stage: nothing is known about the
        // message, only that the relay is not doing its job.
        return Fault::Relay;
    };
    // 421: the service is closing the channel, whatever command it answers.
    if reply.code == 421 || stage.is_session() {
        return Fault::Relay;
    }
    let permanent = (500..600).contains(&reply.code);
    let enhanced = reply.enhanced();
    match stage {
        Stage::Connect | Stage::Tls | Stage::Greeting | Stage::Auth => Fault::Relay,
        Stage::MailFrom => match enhanced {
            // The one refusal at MAIL FROM that is about this message (a
            // SIZE the server will not take), not about the sender.
            Some(Enhanced {
                class: 5,
                subject: 3,
                detail: 4,
            }) => Fault::Message,
            _ if permanent => Fault::Relay,
            _ => Fault::Retry,
        },
        Stage::RcptTo if permanent => match enhanced {
            // Bad mailbox or domain (5.1.x), or a plain 5xx with no detail.
            None => Fault::Recipient,
            Some(e) if e.subject == 1 => Fault::Recipient,
            // Policy (5.7.x "relaying denied"), size, protocol: the server
            // refused the message here, the address itself is not known bad.
            Some(_) => Fault::Message,
        },
        Stage::RcptTo => Fault::RecipientRetry,
        Stage::Data | Stage::Content if permanent => Fault::Message,
        Stage::Data | Stage::Content => Fault::Retry,
    }
}

/// What an operator reads about a relay fault, in two parts: what the relay
/// does (`"refuses the sender"`) and the evidence with what to check
/// (`"\"550 5.7.1 …\" — check mail.from's domain is allowed on the relay"`).
/// The caller puts the relay's name and the time between them.
pub fn relay_advice(stage: Stage, reply: Option<&Reply>, detail: &str) -> (String, String) {
    let (what, rest) = match (stage, reply) {
        (_, Some(r)) if r.code == 421 => (
            "closes its connections",
            format!("\"{r}\" at {stage} — it is overloaded or shutting down; delivery resumes by itself"),
        ),
        (Stage::Connect, _) => (
            "cannot be reached",
            format!("{detail} — check mail.smtp_url and that the relay is running"),
        ),
        (Stage::Tls, _) => (
            "fails the TLS handshake",
            format!("{detail} — check the relay's certificate and mail.smtp_url's scheme (smtp:// with STARTTLS, smtps:// for implicit TLS)"),
        ),
        (Stage::Greeting, Some(r)) => (
            "refuses the connection",
            format!("\"{r}\" — the relay does not accept mail from this host; check its client access rules"),
        ),
        (Stage::Auth, None) if detail == super::transport::PLAINTEXT_AUTH_REFUSED => (
            "offers no TLS for the login",
            format!("{detail} — use smtps://, a relay that offers STARTTLS, or set mail.allow_plaintext_auth = true (usual only for a relay on the same host, over loopback)"),
        ),
        (Stage::Auth, Some(r)) => (
            "refuses the login",
            format!("\"{r}\" — check the user name and password in mail.smtp_url"),
        ),
        (Stage::MailFrom, Some(r)) => (
            "refuses the sender",
            format!("\"{r}\" — check mail.from's domain is allowed on the relay"),
        ),
        (_, None) => (
            "stopped answering",
            format!("{detail} at {stage} — check the relay is up and reachable"),
        ),
        (_, Some(r)) => ("fails", format!("\"{r}\" at {stage}")),
    };
    (what.to_owned(), rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Fault::*;
    use Stage::*;

    #[test]
    fn enhanced_codes_are_read_from_the_reply_text() {
        assert_eq!(
            Enhanced::parse("5.7.1 Sender address rejected"),
            Some(Enhanced {
                class: 5,
                subject: 7,
                detail: 1
            })
        );
        assert_eq!(Enhanced::parse("Sender address rejected"), None);
        assert_eq!(Enhanced::parse("5.7 rejected"), None);
        assert_eq!(Enhanced::parse("3.1.1 nonsense class"), None);
        assert_eq!(Enhanced::parse(""), None);
    }

    /// Real replies, where they came, and whose fault they are.
    #[test]
    fn replies_by_stage_are_classified_by_whose_fault_they_are() {
        let table: &[(Stage, Option<(u16, &str)>, Fault)] = &[
            // The session: always the relay.
            (Connect, None, Relay),
            (Tls, None, Relay),
            (
                Greeting,
                Some((554, "5.7.1 Client host rejected: access denied")),
                Relay,
            ),
            (
                Greeting,
                Some((554, "mail.example.com ESMTP not accepting connections")),
                Relay,
            ),
            (Greeting, Some((421, "4.3.2 Service shutting down")), Relay),
            (Greeting, Some((501, "5.5.4 Invalid EHLO argument")), Relay),
            (
                Auth,
                Some((535, "5.7.8 Authentication credentials invalid")),
                Relay,
            ),
            (
                Auth,
                Some((454, "4.7.0 Temporary authentication failure")),
                Relay,
            ),
            (
                Auth,
                Some((530, "5.7.0 Must issue a STARTTLS command first")),
                Relay,
            ),
            // The sender: refusing it refuses every message.
            (
                MailFrom,
                Some((550, "5.7.1 Sender address rejected: not owned by user")),
                Relay,
            ),
            (
                MailFrom,
                Some((553, "5.7.1 Sender address rejected")),
                Relay,
            ),
            (MailFrom, Some((550, "Sender domain not verified")), Relay),
            (
                MailFrom,
                Some((421, "4.7.0 Too many connections, closing")),
                Relay,
            ),
            (
                MailFrom,
                Some((451, "4.3.0 Temporary local problem")),
                Retry,
            ),
            (
                MailFrom,
                Some((552, "5.3.4 Message size exceeds fixed limit")),
                Message,
            ),
            // A recipient.
            (
                RcptTo,
                Some((550, "5.1.1 <ada@example.org>: User unknown")),
                Recipient,
            ),
            (
                RcptTo,
                Some((550, "5.1.2 Host or domain name not found")),
                Recipient,
            ),
            (
                RcptTo,
                Some((553, "5.1.3 Bad destination mailbox address syntax")),
                Recipient,
            ),
            (RcptTo, Some((550, "No such user here")), Recipient),
            (RcptTo, Some((554, "Recipient rejected")), Recipient),
            (RcptTo, Some((550, "5.7.1 Relaying denied")), Message),
            (RcptTo, Some((552, "5.2.2 Mailbox full")), Message),
            (
                RcptTo,
                Some((451, "4.7.1 Greylisted, try again later")),
                RecipientRetry,
            ),
            (RcptTo, Some((452, "4.2.2 Mailbox full")), RecipientRetry),
            (
                RcptTo,
                Some((450, "4.2.0 Mailbox temporarily unavailable")),
                RecipientRetry,
            ),
            (RcptTo, Some((421, "4.7.0 Too many errors, closing")), Relay),
            // The message: the server judged the content.
            (
                Content,
                Some((550, "5.7.1 Message rejected as spam")),
                Message,
            ),
            (
                Content,
                Some((554, "5.7.1 Message content rejected")),
                Message,
            ),
            (
                Content,
                Some((552, "5.3.4 Message size exceeds fixed limit")),
                Message,
            ),
            (Content, Some((554, "5.6.0 Malformed message")), Message),
            (
                Content,
                Some((550, "5.6.3 Conversion required but not supported")),
                Message,
            ),
            (Content, Some((554, "Transaction failed")), Message),
            (
                Content,
                Some((451, "4.3.0 Error: queue file write error")),
                Retry,
            ),
            (
                Content,
                Some((452, "4.3.1 Insufficient system storage")),
                Retry,
            ),
            (Content, Some((421, "4.4.2 Timeout exceeded")), Relay),
            (Data, Some((554, "5.5.1 No valid recipients")), Message),
            (Data, Some((451, "4.3.0 Try again later")), Retry),
            // No reply: a timeout or a dropped connection, mid-transaction too.
            (MailFrom, None, Relay),
            (RcptTo, None, Relay),
            (Data, None, Relay),
            (Content, None, Relay),
        ];
        for (stage, reply, want) in table {
            let reply = reply.map(|(c, t)| Reply::new(c, t));
            let got = classify(*stage, reply.as_ref());
            assert_eq!(got, *want, "{stage} {reply:?}");
        }
    }

    #[test]
    fn relay_advice_says_what_to_check() {
        let r = Reply::new(550, "5.7.1 Sender address rejected");
        assert_eq!(
            relay_advice(MailFrom, Some(&r), ""),
            (
                "refuses the sender".to_owned(),
                "\"550 5.7.1 Sender address rejected\" — check mail.from's domain is allowed on the relay".to_owned()
            )
        );
        let r = Reply::new(535, "5.7.8 Authentication credentials invalid");
        assert!(relay_advice(Auth, Some(&r), "")
            .1
            .contains("password in mail.smtp_url"));
        assert_eq!(
            relay_advice(Connect, None, "connection refused").0,
            "cannot be reached"
        );
        assert_eq!(
            relay_advice(Content, None, "no answer within 2 s").0,
            "stopped answering"
        );
    }
}

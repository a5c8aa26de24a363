//! A real IMAP server for the bounce mailbox tests: Dovecot (Debian's
//! dovecot-imapd) started on a free 127.0.0.1 port with its own config,
//! maildirs and runtime folder in a temp dir; any user logs in with the
//! password `secret`. A missing Dovecot fails the test with the fix.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "secret";

pub struct ImapServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl ImapServer {
    pub fn start() -> ImapServer {
        let dovecot = ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("the bounce mailbox tests need Dovecot: apt-get install dovecot-imapd");
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        for d in ["run", "state", "mail", "home"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        // Mail is owned by an unprivileged uid (Dovecot refuses uid 0).
        let mode = |p: &std::path::Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
        };
        mode(root);
        mode(&root.join("mail"));
        mode(&root.join("home"));
        let port = super::free_port();
        let conf = root.join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                r#"protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mailbox_idle_check_interval = 1 secs
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
"#,
                root = root.display()
            ),
        )
        .unwrap();
        let child = Command::new(&dovecot)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting dovecot");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dovecot did not listen on {port}; see {}",
                root.join("dovecot.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ImapServer { port, dir, child }
    }

    pub fn url(&self, user: &str, mailbox: &str) -> String {
        format!("imap://{user}:{PASSWORD}@127.0.0.1:{}/{mailbox}", self.port)
    }

    /// A logged-in session of `user`, for putting mail in and looking.
    pub async fn session(&self, user: &str) -> async_imap::Session<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.unwrap().unwrap();
        client
            .login(user, PASSWORD)
            .await
            .map_err(|(e, _)| e)
            .unwrap()
    }
}

impl Drop for ImapServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

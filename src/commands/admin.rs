//! `casewire admin add-user|remove-user|reset-password|list-users`: the
//! operator accounts of the web console. A new password is generated and
//! printed once (or read from standard input); only its argon2id hash is
//! stored. Each change is written to the audit log with the actor `cli`.

use std::io::BufRead;

use anyhow::{Context, Result};
use chrono::Utc;

use super::Exit;
use crate::admin::{self, OperatorName};
use crate::cli::AdminCommand;
use crate::config::Settings;
use crate::store::admin::{self as store, NewAudit};
use crate::store::Db;

pub fn run(settings: &Settings, cmd: AdminCommand) -> Result<Exit> {
    let name_of = |text: &str| match OperatorName::parse(text) {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    };
    super::runtime()?.block_on(async {
        let db = Db::open(&settings.database.url).await?;
        let now = Utc::now();
        let log = |action: &'static str, target: String| {
            let db = db.clone();
            async move {
                store::audit(
                    &db,
                    NewAudit {
                        actor: "cli",
                        action,
                        target: &target,
                        detail: "",
                        ip: "",
                    },
                    now,
                )
                .await
            }
        };
        match cmd {
            AdminCommand::AddUser {
                name,
                password_stdin,
            } => {
                let Some(name) = name_of(&name) else {
                    return Ok(Exit::Usage);
                };
                let Some((password, generated)) = password(password_stdin)? else {
                    return Ok(Exit::Usage);
                };
                let hash = hash(password.clone()).await?;
                if !store::add_user(&db, name.as_str(), &hash, generated, now).await? {
                    eprintln!("error: an operator named {name:?} exists already (use `casewire admin reset-password {name}`)");
                    return Ok(Exit::Failed);
                }
                log("account.add", name.to_string()).await?;
                report(&name, &password, generated, "created");
                Ok(Exit::Ok)
            }
            AdminCommand::ResetPassword {
                name,
                password_stdin,
            } => {
                let Some(name) = name_of(&name) else {
                    return Ok(Exit::Usage);
                };
                let Some((password, generated)) = password(password_stdin)? else {
                    return Ok(Exit::Usage);
                };
                let hash = hash(password.clone()).await?;
                if !store::set_password(&db, name.as_str(), &hash, generated, None, now).await? {
                    eprintln!("error: no operator named {name:?} (see `casewire admin list-users`)");
                    return Ok(Exit::Failed);
                }
                log("account.reset-password", name.to_string()).await?;
                report(&name, &password, generated, "has a new password; their sessions ended");
                Ok(Exit::Ok)
            }
            AdminCommand::RemoveUser { name } => {
                let Some(name) = name_of(&name) else {
                    return Ok(Exit::Usage);
                };
                if !store::remove_user(&db, name.as_str()).await? {
                    eprintln!("error: no operator named {name:?} (see `casewire admin list-users`)");
                    return Ok(Exit::Failed);
                }
                log("account.remove", name.to_string()).await?;
                eprintln!("operator {name} removed; their sessions ended");
                Ok(Exit::Ok)
            }
            AdminCommand::ListUsers => {
                let users = store::list_users(&db).await?;
                if users.is_empty() {
                    eprintln!("no operators yet; create one with `casewire admin add-user NAME`");
                }
                for u in users {
                    outln!(
                        "{}\tcreated {}\tpassword set {}",
                        u.name,
                        u.created_at.format("%Y-%m-%d %H:%M UTC"),
                        u.password_set_at.format("%Y-%m-%d %H:%M UTC")
                    );
                }
                Ok(Exit::Ok)
            }
        }
    })
}

/// The password to set: read from stdin, or generated (then `true`).
/// None after telling the user what is wrong with the one given.
fn password(from_stdin: bool) -> Result<Option<(String, bool)>> {
    if !from_stdin {
        return Ok(Some((admin::generate_password(), true)));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if let Err(e) = admin::check_password(&password) {
        eprintln!("error: {e}");
        return Ok(None);
    }
    Ok(Some((password, false)))
}

async fn hash(password: String) -> Result<String> {
    Ok(tokio::task::spawn_blocking(move || admin::hash_password(&password)).await??)
}

fn report(name: &OperatorName, password: &str, generated: bool, what: &str) {
    if generated {
        eprintln!("operator {name} {what}; their one-time password (shown only now; the console asks for a new one at the first login):");
        outln!("{password}");
    } else {
        eprintln!("operator {name} {what}");
    }
}

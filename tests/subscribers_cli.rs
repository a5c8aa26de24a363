//! `casewire subscribers …` as an operator runs it: the real binary, a config
//! file, SQLite and PostgreSQL.

mod support;

use std::process::{Command, Output};

use support::{prepare, AppOptions, Engine};

fn casewire(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CASEWIRE_CONFIG")
        .output()
        .expect("run casewire")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn cli_manages_subscribers(engine: Engine) {
    let site = prepare(AppOptions::new(engine).no_admin_token());
    let config = site.config_path.clone();
    let file = site.root.join("people.csv");
    std::fs::write(
        &file,
        "email,name,categories,editions,status\n\
         ada@example.com,Ada,databases,daily,\n\
         broken-address,Bob,,,\n\
         grace@example.com,Grace,,,\n\
         linus@example.com,Linus,,hourly,\n\
         edsger@example.com,\"Edsger\nDijkstra\",,,\n\
         barbara@example.com,Barbara,security;performance,weekly;daily,pending\n",
    )
    .unwrap();
    let out = casewire(&config, &["subscribers", "import", file.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let shown = file.display().to_string();
    assert!(
        err.contains(&format!("{shown}:3: email: \"broken-address\"")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{shown}:5: edition: \"hourly\" is not an edition")),
        "{err}"
    );
    assert!(err.contains(&format!("{shown}:6: name:")), "{err}");
    assert!(err.contains("imported 3, unchanged 0"), "{err}");

    let export = |db_note: &str| {
        let out = casewire(&config, &["subscribers", "export"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{db_note}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let first = export("first export");
    assert_eq!(
        first,
        "email,name,categories,editions,status\n\
         ada@example.com,Ada,databases,daily,confirmed\n\
         grace@example.com,Grace,,weekly,confirmed\n\
         barbara@example.com,Barbara,performance;security,daily;weekly,pending\n"
    );
    // Importing the same file again changes nothing.
    let out = casewire(&config, &["subscribers", "import", file.to_str().unwrap()]);
    assert!(
        text(&out.stderr).contains("imported 0, unchanged 3"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(export("second export"), first);

    let out = casewire(
        &config,
        &[
            "subscribers",
            "add",
            "New@Example.com",
            "--name",
            "Newt",
            "--categories",
            "databases,security",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = casewire(&config, &["subscribers", "add", "New@example.COM"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a second add of the same address fails"
    );
    let out = casewire(&config, &["subscribers", "add", "new\r\n@example.com"]);
    assert_eq!(out.status.code(), Some(2));
    let out = casewire(&config, &["subscribers", "list", "--search", "new"]);
    assert_eq!(
        text(&out.stdout),
        "new@example.com\tconfirmed\tNewt\tdatabases,security\tweekly\n"
    );
    let out = casewire(&config, &["subscribers", "remove", "New@example.com"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = casewire(&config, &["subscribers", "remove", "New@example.com"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(export("after remove"), first);
}
on_both_engines!(
    cli_import_reports_bad_lines_and_is_idempotent,
    cli_manages_subscribers
);

/// Names and addresses that a spreadsheet would evaluate (`=`, `+`, `-`, `@`)
/// were exported as they are; they leave with a leading `'` and come back
/// without it.
async fn cli_export_escapes_formulas(engine: Engine) {
    let site = prepare(AppOptions::new(engine).no_admin_token());
    let config = site.config_path.clone();
    let file = site.root.join("people.csv");
    std::fs::write(
        &file,
        "email,name,categories,editions,status\n\
         =cmd@example.com,@SUM(1+1)*cmd|' /C calc'!A0,,,\n\
         +1@example.com,=2+5,,,\n\
         -x@example.com,-3+3,,,\n\
         plain@example.com,O'Brien,,,\n",
    )
    .unwrap();
    let out = casewire(&config, &["subscribers", "import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = casewire(&config, &["subscribers", "export"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let exported = text(&out.stdout);
    assert_eq!(
        exported,
        "email,name,categories,editions,status\n\
         '=cmd@example.com,'@SUM(1+1)*cmd|' /C calc'!A0,,weekly,confirmed\n\
         '+1@example.com,'=2+5,,weekly,confirmed\n\
         '-x@example.com,'-3+3,,weekly,confirmed\n\
         plain@example.com,O'Brien,,weekly,confirmed\n"
    );

    // The exported file imports into another database as the same people.
    let other = prepare(AppOptions::new(engine).no_admin_token());
    let other_config = other.config_path.clone();
    let copy = other.root.join("export.csv");
    std::fs::write(&copy, &exported).unwrap();
    let out = casewire(
        &other_config,
        &["subscribers", "import", copy.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("imported 4, unchanged 0"),
        "{}",
        text(&out.stderr)
    );
    let out = casewire(
        &other_config,
        &["subscribers", "list", "--search", "example"],
    );
    let listed = text(&out.stdout);
    assert!(
        listed.contains("=cmd@example.com\tconfirmed\t@SUM(1+1)*cmd|' /C calc'!A0\t"),
        "{listed}"
    );
    assert!(
        listed.contains("+1@example.com\tconfirmed\t=2+5\t"),
        "{listed}"
    );
    assert!(
        listed.contains("-x@example.com\tconfirmed\t-3+3\t"),
        "{listed}"
    );
    let out = casewire(&other_config, &["subscribers", "export"]);
    assert_eq!(text(&out.stdout), exported);
}
on_both_engines!(
    cli_csv_export_let_spreadsheet_formulas_through,
    cli_export_escapes_formulas
);

//! The demo tenant: users of different roles and documents of different visibility, so
//! a newcomer sees the access rules at work in the first minute.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use super::AnyError;
use crate::access::Operator;
use crate::auth::NewAccount;
use crate::config::Config;
use crate::http::AppState;
use crate::model::ClientInfo;
use crate::secret::SecretString;

pub const DEMO_TENANT: &str = "acme";

/// Seeds tenant `acme` with an employee, an HR user and an admin, each with a random
/// password printed once and kept in `<data_dir>/demo-credentials.txt` (0600). There is
/// no default password, ever.
pub async fn seed(cfg: &Config, state: &AppState) -> Result<(), AnyError> {
    let op = Operator::local_cli();
    let creds_path = cfg.data_dir.join("demo-credentials.txt");
    let users = [
        ("alice", vec!["employee"], vec!["engineering"]),
        ("hannah", vec!["employee", "hr"], vec!["hr"]),
        ("adam", vec!["employee", "admin"], vec!["executives"]),
    ];
    let existing: Vec<String> = state
        .auth
        .all_users(&op)
        .await?
        .into_iter()
        .map(|u| u.username)
        .collect();
    let mut lines = Vec::new();
    for (name, roles, groups) in users {
        if existing.iter().any(|u| u == name) {
            continue;
        }
        let password = crate::secret::random_b64(12);
        state
            .auth
            .create_user(
                &op,
                NewAccount {
                    username: name,
                    password: SecretString::from(password.clone()),
                    tenant: DEMO_TENANT,
                    roles: roles.into_iter().map(String::from).collect(),
                    groups: groups.into_iter().map(String::from).collect(),
                },
            )
            .await?;
        lines.push(format!("{name}\t{password}"));
    }
    if !lines.is_empty() {
        let admin = op.document_admin(DEMO_TENANT);
        for (title, text, acl) in demo_documents() {
            state
                .rag
                .ingest_as(
                    &admin,
                    title,
                    text,
                    acl,
                    &ClientInfo::default(),
                    &mut |_, _| {},
                )
                .await
                .map_err(|e| format!("seeding {title}: {e}"))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&creds_path)?;
        writeln!(f, "{}", lines.join("\n"))?;
    }
    println!("demo tenant '{DEMO_TENANT}': users alice (employee), hannah (hr), adam (admin)");
    println!(
        "documents: a public handbook, HR-only salary bands, an executives-only board memo, alice's own note"
    );
    println!("passwords: {}", creds_path.display());
    println!(
        "try: curl -si -X POST http://{}/auth/login -H 'content-type: application/json' \\\n       -d '{{\"username\":\"alice\",\"password\":\"<from the file>\"}}'",
        cfg.listen
    );
    Ok(())
}

/// Documents of different visibility, so the access rules show in the first minute.
/// Each restricted one carries a unique canary string that must never reach anyone
/// outside its ACL.
pub fn demo_documents() -> Vec<(&'static str, &'static str, crate::access::Acl)> {
    use crate::access::Acl;
    vec![
        (
            "Employee handbook",
            "Welcome to Acme. Office hours are 9 to 5. Travel must be booked through the \
             travel desk; economy class for flights under six hours. Expenses are reimbursed \
             within 30 days when submitted with receipts. Remote work is allowed two days a \
             week with your manager's agreement. The IT helpdesk is on extension 4000.",
            Acl {
                public: true,
                ..Acl::default()
            },
        ),
        (
            "Salary bands 2026 (HR only)",
            "Confidential salary bands for 2026. Engineer I: 70,000 to 85,000. Engineer II: \
             85,000 to 105,000. Senior engineer: 105,000 to 135,000. Director: 160,000 to \
             210,000. Executive compensation is set by the board. Reference code \
             CANARY-HR-7731.",
            Acl {
                roles: vec!["hr".into()],
                ..Acl::default()
            },
        ),
        (
            "Board memo: acquisition of Globex (executives only)",
            "Strictly confidential. The board approved the acquisition of Globex for 1.2 \
             billion. Announcement planned for the next quarter; layoffs of 120 positions in \
             the merged sales team are expected. Reference code CANARY-EXEC-4410.",
            Acl {
                groups: vec!["executives".into()],
                ..Acl::default()
            },
        ),
        (
            "Alice's performance review notes",
            "Private notes for alice: performance review scheduled in March; goals are to \
             lead the billing migration and mentor two juniors. Reference code \
             CANARY-ALICE-2291.",
            Acl {
                users: vec!["alice".into()],
                ..Acl::default()
            },
        ),
    ]
}

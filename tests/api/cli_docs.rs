//! `palisade doc add` for Markdown and PDF files, against a running server's store.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A minimal one-page PDF with `text` in Helvetica, with a correct xref table.
pub fn tiny_pdf(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 18 Tf 72 700 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).into_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).into_bytes());
    for off in offsets {
        out.extend(format!("{off:010} 00000 n \n").into_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .into_bytes(),
    );
    out
}

#[tokio::test]
async fn doc_add_ingests_markdown_and_pdf_with_their_acl() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("policy.md");
    std::fs::write(
        &md,
        "# Parking\n\nThe parking garage opens at seven. Bicycles go in the basement.\n",
    )
    .unwrap();
    let pdf = dir.path().join("bonus.pdf");
    std::fs::write(
        &pdf,
        tiny_pdf("Bonus pool zeppelin allocation is restricted to HR"),
    )
    .unwrap();

    for args in [
        vec![
            "doc",
            "add",
            md.to_str().unwrap(),
            "--title",
            "Parking",
            "--public",
            "--tenant",
            "acme",
        ],
        vec![
            "doc",
            "add",
            pdf.to_str().unwrap(),
            "--title",
            "Bonus pool",
            "--roles",
            "hr",
            "--tenant",
            "acme",
        ],
    ] {
        let out = s.cli(&args, None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("added document"));
        // Progress on stderr: a line per tenth when it is not a terminal.
        let progress = String::from_utf8_lossy(&out.stderr);
        assert!(
            progress.contains("embedding [") && progress.contains("100%"),
            "{progress}"
        );
    }
    // An ACL naming nobody is refused by the CLI as well.
    let out = s.cli(
        &[
            "doc",
            "add",
            md.to_str().unwrap(),
            "--title",
            "x",
            "--tenant",
            "acme",
        ],
        None,
    );
    assert!(!out.status.success());

    let search = |user: &'static str, pw: String, q: &'static str| {
        let s = &s;
        async move {
            let sess = s.login(user, &pw).await;
            let v: Value = s
                .post_auth("/v1/search", &sess.access, &json!({"query": q}))
                .await
                .json()
                .await
                .unwrap();
            v["results"].to_string()
        }
    };
    assert!(
        search("alice", acme.alice.clone(), "parking garage bicycles")
            .await
            .contains("basement")
    );
    assert!(
        search("hannah", acme.hannah.clone(), "zeppelin bonus")
            .await
            .contains("zeppelin")
    );
    assert!(
        !search("alice", acme.alice.clone(), "zeppelin bonus")
            .await
            .contains("zeppelin")
    );
}

/// The page's PDF upload: a writer gets a PDF's text back (nothing is stored); a
/// reader is refused, as are another media type and a file that is not a PDF.
#[tokio::test]
async fn a_writer_reads_the_text_of_a_pdf_and_no_one_else_does() {
    let s = Server::start();
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await;
    let alice = s.login("alice", &acme.alice).await;
    let send = |token: String, body: Vec<u8>, kind: &'static str| {
        let s = &s;
        async move {
            s.http
                .post(s.url("/v1/documents/text"))
                .bearer_auth(token)
                .header("content-type", kind)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let pdf = tiny_pdf("Bonus pool zeppelin allocation");
    let r = send(adam.access.clone(), pdf.clone(), "application/pdf").await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert!(v["text"].as_str().unwrap().contains("zeppelin"), "{v}");
    let listed: Value = s
        .get("/v1/documents", &adam.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["documents"].as_array().unwrap().len(),
        0,
        "nothing stored"
    );
    assert_eq!(
        error_code(send(alice.access.clone(), pdf.clone(), "application/pdf").await).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    assert_eq!(
        send(adam.access.clone(), pdf, "text/plain").await.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let (status, code) = error_code(
        send(
            adam.access.clone(),
            b"%PDF-1.4 not really".to_vec(),
            "application/pdf",
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_entity")
    );
    // The parser's failure (it may panic) is contained: the server serves on.
    assert_eq!(
        s.http.get(s.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
}

//! Baseline for the load benchmarks (the physical limit): a bare Rust pass-through proxy
//! (axum + reqwest, the same stack as palisade) that parses the request, checks a bearer
//! string (with `PASSTHROUGH_BEARER` set), forwards it and streams the answer back — no
//! sessions, no policy, no logging.
//! `cargo run --release --example passthrough_proxy -- 127.0.0.1:9200 http://127.0.0.1:9100`

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::post;

#[derive(Clone)]
struct Upstream {
    http: reqwest::Client,
    url: String,
    /// `Bearer <this>` is required when set.
    bearer: Option<String>,
}

async fn forward(
    State(u): State<Upstream>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(expected) = &u.bearer {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(expected.as_str()) {
            let mut r = Response::new(Body::from("unauthorized"));
            *r.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
            return r;
        }
    }
    let resp = match u
        .http
        .post(&u.url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(_) => {
            let mut r = Response::new(Body::from("upstream error"));
            *r.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
            return r;
        }
    };
    let status = resp.status();
    let ct = resp.headers().get(header::CONTENT_TYPE).cloned();
    let mut out = Response::new(Body::from_stream(resp.bytes_stream()));
    *out.status_mut() = status;
    if let Some(ct) = ct {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    } else {
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    out
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9200".into());
    let upstream = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:9100".into());
    let state = Upstream {
        http: reqwest::Client::new(),
        url: format!("{upstream}/v1/chat/completions"),
        bearer: std::env::var("PASSTHROUGH_BEARER").ok(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(forward))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!("passthrough listening on http://{listen}");
    axum::serve(listener, app).await.expect("serve");
}
